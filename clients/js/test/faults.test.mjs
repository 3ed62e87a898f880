// Faults, each against real servers: a refresh answering 503 (the gateway's store down, and a
// proxy in front answering for it), a refresh that detects theft, the gateway down, a second
// login elsewhere on the same platform.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { AuthgateError, createClient, memoryStorage } from '../index.js';
import {
  haveBinary,
  haveRedis,
  PASSWORD,
  rawLogin,
  rawRefresh,
  recordFetch,
  startGateway,
  startProxy,
  startRedis,
  startUpstream,
  USER,
} from './support.mjs';

const AN_HOUR_BEHIND = () => Date.now() - 3_600_000;
const AN_HOUR_AHEAD = () => Date.now() + 3_600_000;
const SHORT = 'access_ttl = "2s"\nsilent_refresh_window = "1s"\nleeway = "0s"';

async function untilExpired(storage) {
  const exp = JSON.parse(Buffer.from(storage.get().accessToken.split('.')[1], 'base64url')).exp;
  const wait = (exp + 1) * 1000 - Date.now() + 50;
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}

/** Ten concurrent calls; each one's outcome as `status` or the rejection. */
function tenCalls(client, path = '/orders') {
  return Promise.allSettled(Array.from({ length: 10 }, (_, i) => client.fetch(`${path}/${i}`)));
}

test('a refresh that fails with 503 (the session store is down): a clear error, tokens kept, no logout', async (t) => {
  if (!haveBinary(t) || !haveRedis(t)) return;
  const redis = await startRedis();
  const upstream = await startUpstream();
  // allow_stateless: with Redis gone, valid tokens still pass, so the expired one is told
  // token_expired; the refresh needs the store and gets 503 store_unavailable.
  const gw = await startGateway({
    upstream: upstream.url,
    token: SHORT,
    session: `store = "redis"\nredis_url = "${redis.url}"\non_store_error = "allow_stateless"`,
  });
  try {
    const storage = memoryStorage();
    const ended = [];
    const client = createClient({ baseUrl: gw.base, storage, now: AN_HOUR_BEHIND, onLogout: (c) => ended.push(c) });
    await client.login(USER, PASSWORD);
    assert.equal((await client.fetch('/ok')).status, 200);
    const kept = structuredClone(storage.get());
    await redis.stop();
    await untilExpired(storage);
    const rec = recordFetch();
    let outcomes;
    try {
      outcomes = await tenCalls(client);
    } finally {
      rec.restore();
    }
    for (const o of outcomes) {
      assert.equal(o.status, 'rejected');
      assert.ok(o.reason instanceof AuthgateError, String(o.reason));
      assert.equal(o.reason.code, 'store_unavailable');
      assert.equal(o.reason.status, 503);
      assert.equal(o.reason.retryAfter, 1);
      assert.match(o.reason.message, /refresh failed.*tokens kept/);
    }
    assert.equal(rec.to('/auth/refresh').length, 1, 'one refresh for the ten');
    assert.equal(rec.calls.length, 11, 'ten calls, one refresh, no retries');
    assert.deepEqual(storage.get(), kept, 'the stored pair is untouched');
    assert.deepEqual(ended, [], 'no logout');
  } finally {
    await gw.stop();
    await upstream.stop();
    await redis.stop();
  }
});

test('a refresh answered 503 by a proxy in front (no JSON): the same, with the status as the code', async (t) => {
  if (!haveBinary(t)) return;
  const upstream = await startUpstream();
  const gw = await startGateway({ upstream: upstream.url, token: SHORT });
  let down = false;
  const proxy = await startProxy(gw.base, {
    rule: (req) => (down && req.url.startsWith('/auth/refresh')
      ? { status: 503, headers: { 'Content-Type': 'text/html', 'Retry-After': '30' }, body: '<h1>Service Unavailable</h1>' }
      : null),
  });
  try {
    const storage = memoryStorage();
    const ended = [];
    const client = createClient({ baseUrl: proxy.url, storage, now: AN_HOUR_BEHIND, onLogout: (c) => ended.push(c) });
    await client.login(USER, PASSWORD);
    const kept = structuredClone(storage.get());
    down = true;
    await untilExpired(storage);
    const outcomes = await tenCalls(client);
    for (const o of outcomes) {
      assert.equal(o.status, 'rejected');
      assert.equal(o.reason.code, 'http_503');
      assert.equal(o.reason.retryAfter, 30);
    }
    assert.equal(proxy.seen.filter((s) => s.startsWith('POST /auth/refresh')).length, 1);
    assert.deepEqual(storage.get(), kept);
    assert.deepEqual(ended, []);
    // The proxy recovers: the next call refreshes and succeeds with the kept pair.
    down = false;
    const resp = await client.fetch('/after');
    assert.equal(resp.status, 200);
  } finally {
    await proxy.stop();
    await gw.stop();
    await upstream.stop();
  }
});

test('a refresh answering token_theft_detected: onLogout once (not per request), storage cleared', async (t) => {
  if (!haveBinary(t)) return;
  const upstream = await startUpstream();
  const gw = await startGateway({ upstream: upstream.url, token: SHORT });
  try {
    const storage = memoryStorage();
    const ended = [];
    const client = createClient({ baseUrl: gw.base, storage, now: AN_HOUR_BEHIND, onLogout: (c) => ended.push(c) });
    await client.login(USER, PASSWORD);
    // Someone else holds a copy of the refresh token and rotates it twice: the client's copy
    // is now older than the immediate parent, which is theft.
    const stolen = storage.get().refreshToken;
    const second = await rawRefresh(gw.base, stolen);
    await rawRefresh(gw.base, second.refresh_token);
    await untilExpired(storage);
    const rec = recordFetch();
    let outcomes;
    try {
      outcomes = await tenCalls(client);
    } finally {
      rec.restore();
    }
    for (const o of outcomes) {
      assert.equal(o.status, 'rejected');
      assert.equal(o.reason.code, 'token_theft_detected');
      assert.equal(o.reason.status, 401);
    }
    assert.deepEqual(ended, ['token_theft_detected'], 'onLogout once');
    assert.equal(storage.get(), null, 'storage cleared');
    assert.equal(rec.to('/auth/refresh').length, 1, 'one refresh');
    await gw.settled();
    assert.equal(gw.audits('token_theft_detected').length, 1, 'the gateway detected it once');
    // Later calls go out without a token; the app is not told again.
    const later = await client.fetch('/later');
    assert.equal((await later.json()).error, 'missing_token');
    assert.deepEqual(ended, ['token_theft_detected']);
  } finally {
    await gw.stop();
    await upstream.stop();
  }
});

test('an invalid refresh token (the session idled out): onLogout("invalid_refresh_token") once', async (t) => {
  if (!haveBinary(t)) return;
  const upstream = await startUpstream();
  const gw = await startGateway({ upstream: upstream.url, token: `${SHORT}\nrefresh_ttl = "3s"` });
  try {
    const storage = memoryStorage();
    const ended = [];
    const client = createClient({ baseUrl: gw.base, storage, now: AN_HOUR_BEHIND, onLogout: (c) => ended.push(c) });
    await client.login(USER, PASSWORD);
    // Past the session's idle limit (and so past the access token's life too).
    const wait = (storage.get().refreshTokenExpiresAt + 1) * 1000 - Date.now() + 50;
    await new Promise((r) => setTimeout(r, wait));
    const outcomes = await tenCalls(client);
    for (const o of outcomes) {
      assert.equal(o.status, 'rejected');
      assert.equal(o.reason.code, 'invalid_refresh_token');
    }
    assert.deepEqual(ended, ['invalid_refresh_token'], 'once');
    assert.equal(storage.get(), null);
  } finally {
    await gw.stop();
    await upstream.stop();
  }
});

test('the gateway down: the network error surfaces, once per call, no retry storm, nothing dropped', async (t) => {
  if (!haveBinary(t)) return;
  const upstream = await startUpstream();
  const gw = await startGateway({ upstream: upstream.url, token: 'access_ttl = "60s"\nsilent_refresh_window = "10s"' });
  const storage = memoryStorage();
  const ended = [];
  const client = createClient({ baseUrl: gw.base, storage, onLogout: (c) => ended.push(c) });
  try {
    await client.login(USER, PASSWORD);
  } finally {
    await gw.stop();
    await upstream.stop();
  }
  const kept = structuredClone(storage.get());
  let rec = recordFetch();
  let outcomes;
  try {
    outcomes = await tenCalls(client);
  } finally {
    rec.restore();
  }
  for (const o of outcomes) {
    assert.equal(o.status, 'rejected');
    assert.equal(o.reason.name, 'TypeError', 'fetch\'s own network error');
  }
  assert.equal(rec.calls.length, 10, 'one attempt per call');
  // A token that looks expired (the device clock is an hour ahead): the ten share one
  // refresh attempt, which fails, and none of them is sent.
  const ahead = createClient({ baseUrl: gw.base, storage, now: AN_HOUR_AHEAD, onLogout: (c) => ended.push(c) });
  rec = recordFetch();
  try {
    outcomes = await tenCalls(ahead);
  } finally {
    rec.restore();
  }
  for (const o of outcomes) {
    assert.equal(o.status, 'rejected');
    assert.equal(o.reason.code, 'network_error');
    assert.ok(o.reason.cause instanceof TypeError);
  }
  assert.deepEqual(rec.calls.map((c) => c.path), ['/auth/refresh'], 'one refresh attempt, nothing else');
  assert.deepEqual(storage.get(), kept);
  assert.deepEqual(ended, []);
});

test('a second login on the same platform elsewhere: onLogout("session_replaced") once', async (t) => {
  if (!haveBinary(t)) return;
  const upstream = await startUpstream();
  const gw = await startGateway({ upstream: upstream.url });
  try {
    const storage = memoryStorage();
    const ended = [];
    const client = createClient({ baseUrl: gw.base, storage, platform: 'web', onLogout: (c) => ended.push(c) });
    await client.login(USER, PASSWORD);
    assert.equal((await client.fetch('/before')).status, 200);
    await rawLogin(gw.base, 'web'); // the same user, on another web browser
    const answers = await Promise.all([client.fetch('/a'), client.fetch('/b'), client.fetch('/c')]);
    for (const r of answers) {
      assert.equal(r.status, 401);
      assert.equal((await r.json()).error, 'session_replaced');
    }
    assert.deepEqual(ended, ['session_replaced']);
    assert.equal(storage.get(), null);
    // Logging in again is a new session; a late answer about the old one changes nothing.
    await client.login(USER, PASSWORD);
    assert.equal((await client.fetch('/again')).status, 200);
    assert.deepEqual(ended, ['session_replaced']);
  } finally {
    await gw.stop();
    await upstream.stop();
  }
});
