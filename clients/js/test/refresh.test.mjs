// The refresh machinery against a real gateway: one refresh for many failures, each request
// retried once, the proactive refresh, no loops, bodies that can and cannot be replayed.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { AuthgateError, createClient, memoryStorage } from '../index.js';
import { haveBinary, PASSWORD, recordFetch, startGateway, startUpstream, USER } from './support.mjs';

/** A device whose clock is an hour behind: it believes an expired token is still good, so
 * the gateway's `token_expired` is what tells it (the reactive path). */
const AN_HOUR_BEHIND = () => Date.now() - 3_600_000;

/** Waits until the gateway, whose clock counts whole seconds, finds `token` expired. */
async function untilExpired(storage) {
  const exp = JSON.parse(atob(storage.get().accessToken.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).exp;
  const wait = (exp + 1) * 1000 - Date.now() + 50;
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}

describe('refresh', { concurrency: false }, () => {
  let upstream;
  let gw;
  let skip = false;
  before(async (t) => {
    if (!haveBinary(t)) {
      skip = true;
      return;
    }
    upstream = await startUpstream();
    // Two-second tokens; no leeway, so they are refused as soon as they expire.
    gw = await startGateway({
      upstream: upstream.url,
      token: 'access_ttl = "2s"\nsilent_refresh_window = "1s"\nleeway = "0s"',
      // Several sessions on web at once: the replay cases wait for their tokens together.
      extra: '[platforms]\nmax_sessions = { web = 20, h5 = 1, app = 1 }',
    });
  });
  after(async () => {
    await gw?.stop();
    await upstream?.stop();
  });

  test('ten concurrent calls that all get token_expired make exactly one refresh, and each is retried once', async (t) => {
    if (skip) return t.skip();
    const storage = memoryStorage();
    const ended = [];
    const client = createClient({ baseUrl: gw.base, storage, now: AN_HOUR_BEHIND, onLogout: (c) => ended.push(c) });
    await client.login(USER, PASSWORD);
    const before = storage.get();
    await untilExpired(storage);
    const rec = recordFetch();
    let answers;
    try {
      answers = await Promise.all(
        Array.from({ length: 10 }, (_, i) => client.fetch(`/orders/${i}`).then(async (r) => ({ status: r.status, body: await r.json() }))),
      );
    } finally {
      rec.restore();
    }
    assert.deepEqual(answers.map((a) => a.status), Array(10).fill(200), 'every call succeeds in the end');
    assert.deepEqual(answers.map((a) => a.body.path).sort(), Array.from({ length: 10 }, (_, i) => `/orders/${i}`).sort());
    assert.equal(rec.to('/auth/refresh').length, 1, 'exactly one refresh went out');
    for (let i = 0; i < 10; i++) {
      const sent = rec.to(`/orders/${i}`);
      assert.deepEqual(sent.map((c) => c.status), [401, 200], `call ${i}: refused once (token_expired), retried once`);
    }
    const after = storage.get();
    assert.notEqual(after.accessToken, before.accessToken, 'a new access token is stored');
    assert.notEqual(after.refreshToken, before.refreshToken, 'and the rotated refresh token');
    assert.equal(after.sessionId, before.sessionId, 'for the same session');
    await gw.settled();
    assert.equal(gw.audits('refresh').length, 1, 'the gateway saw one refresh');
    assert.equal(gw.audits('token_theft_detected').length, 0, 'and no theft');
    assert.deepEqual(ended, [], 'nobody was logged out');
  });

  test('a token with less than three seconds left is refreshed before the calls go out, once for all of them', async (t) => {
    if (skip) return t.skip();
    const storage = memoryStorage();
    const client = createClient({ baseUrl: gw.base, storage });
    await client.login(USER, PASSWORD); // a two-second token: inside the margin at once
    const refreshesBefore = gw.audits('refresh').length;
    const rec = recordFetch();
    let statuses;
    try {
      statuses = await Promise.all(Array.from({ length: 10 }, () => client.fetch('/proactive').then((r) => r.status)));
    } finally {
      rec.restore();
    }
    assert.deepEqual(statuses, Array(10).fill(200));
    assert.equal(rec.to('/auth/refresh').length, 1, 'one refresh');
    assert.equal(rec.calls.filter((c) => c.status === 401).length, 0, 'no request was refused first');
    assert.ok(rec.calls.indexOf(rec.to('/auth/refresh')[0]) === 0, 'the refresh went out before the calls');
    await gw.settled();
    assert.equal(gw.audits('refresh').length - refreshesBefore, 1);
  });

  test('a retry that is refused again is handed back as it is: one refresh, one retry, no loop', async (t) => {
    if (skip) return t.skip();
    const storage = memoryStorage();
    const client = createClient({ baseUrl: gw.base, storage, now: AN_HOUR_BEHIND });
    await client.login(USER, PASSWORD);
    const rec = recordFetch();
    let resp;
    try {
      // The upstream itself answers 401 token_expired to every request.
      resp = await client.fetch('/expired-forever');
    } finally {
      rec.restore();
    }
    assert.equal(resp.status, 401);
    assert.equal((await resp.json()).error, 'token_expired', 'the caller can still read the body');
    assert.deepEqual(rec.calls.map((c) => `${c.method} ${c.path} ${c.status}`), [
      'GET /expired-forever 401',
      'POST /auth/refresh 200',
      'GET /expired-forever 401',
    ]);
  });

  test('a stream body that cannot be replayed makes the retry fail with a clear error, never an empty body', async (t) => {
    if (skip) return t.skip();
    const storage = memoryStorage();
    const client = createClient({ baseUrl: gw.base, storage, now: AN_HOUR_BEHIND });
    await client.login(USER, PASSWORD);
    await untilExpired(storage);
    const rec = recordFetch();
    const stream = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode('{"amount": 42}'));
        c.close();
      },
    });
    let err;
    try {
      await client.fetch('/upload', { method: 'POST', body: stream, duplex: 'half', headers: { 'Content-Type': 'application/json' } });
    } catch (e) {
      err = e;
    } finally {
      rec.restore();
    }
    assert.ok(err instanceof AuthgateError, `an AuthgateError, not ${err}`);
    assert.equal(err.code, 'body_not_replayable');
    assert.match(err.message, /stream/);
    assert.deepEqual(rec.calls.map((c) => `${c.method} ${c.path} ${c.status}`), ['POST /upload 401', 'POST /auth/refresh 200'],
      'refused once, refreshed, and not sent again');
    // The token is fresh now: the caller sends the body anew, without another refresh.
    const again = await client.fetch('/upload', { method: 'POST', body: '{"amount": 42}' });
    assert.equal(again.status, 200);
    assert.equal((await again.json()).body, '{"amount": 42}');
  });

  test('bodies that can be replayed (string, bytes, Blob, URLSearchParams, FormData, a Request) arrive whole on the retry', async (t) => {
    if (skip) return t.skip();
    const text = 'x'.repeat(5000);
    const cases = [
      ['string', () => [{ method: 'POST', body: text }], text],
      ['Uint8Array', () => [{ method: 'PUT', body: new TextEncoder().encode(text) }], text],
      ['Blob', () => [{ method: 'POST', body: new Blob([text]) }], text],
      ['URLSearchParams', () => [{ method: 'POST', body: new URLSearchParams({ a: '1', b: 'two' }) }], 'a=1&b=two'],
      ['Request', (url) => [new Request(url, { method: 'POST', body: text })], text],
    ];
    // One client per case (and one for FormData), logged in together, expired together.
    const clients = [];
    for (let i = 0; i <= cases.length; i++) {
      const storage = memoryStorage();
      const client = createClient({ baseUrl: gw.base, storage, now: AN_HOUR_BEHIND });
      await client.login(USER, PASSWORD);
      clients.push({ client, storage });
    }
    await untilExpired(clients[clients.length - 1].storage);
    for (const [i, [name, make, want]] of cases.entries()) {
      const { client } = clients[i];
      const rec = recordFetch();
      let resp;
      try {
        const [first] = make(`${gw.base}/replay/${name}`);
        resp = first instanceof Request ? await client.fetch(first) : await client.fetch(`/replay/${name}`, first);
      } finally {
        rec.restore();
      }
      assert.equal(resp.status, 200, name);
      const echo = await resp.json();
      assert.equal(echo.body, want, `${name}: the retry carried the whole body`);
      assert.deepEqual(rec.to(`/replay/${name}`).map((c) => c.status), [401, 200], name);
    }
    // FormData: multipart, so the boundary differs per send; the fields must be there.
    const { client } = clients[cases.length];
    const form = new FormData();
    form.set('field', 'value-9');
    const rec = recordFetch();
    let resp;
    try {
      resp = await client.fetch('/replay/form', { method: 'POST', body: form });
    } finally {
      rec.restore();
    }
    assert.equal(resp.status, 200);
    assert.deepEqual(rec.to('/replay/form').map((c) => c.status), [401, 200]);
    assert.match((await resp.json()).body, /name="field"\r\n\r\nvalue-9/);
  });

  test('refresh() rotates on demand; concurrent calls share one', async (t) => {
    if (skip) return t.skip();
    const storage = memoryStorage();
    const client = createClient({ baseUrl: gw.base, storage, now: AN_HOUR_BEHIND });
    const info = await client.login(USER, PASSWORD);
    const first = storage.get().refreshToken;
    const rec = recordFetch();
    let results;
    try {
      results = await Promise.all([client.refresh(), client.refresh(), client.refresh()]);
    } finally {
      rec.restore();
    }
    assert.equal(rec.to('/auth/refresh').length, 1);
    for (const r of results) assert.equal(r.sessionId, info.sessionId);
    assert.equal(JSON.stringify(results[0]).includes(storage.get().accessToken), false, 'no token handed to the app');
    assert.notEqual(storage.get().refreshToken, first);
  });
});
