// The client's everyday calls against a real gateway: login, fetch with the token, the
// silent refresh header (on success and on an error status), sessions, logout, storage.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  AuthgateError,
  createClient,
  decodeJwt,
  memoryStorage,
  webStorage,
} from '../index.js';
import { haveBinary, PASSWORD, rawLogin, recordFetch, sleep, startGateway, startProxy, startUpstream, USER } from './support.mjs';

describe('pure helpers', () => {
  test('decodeJwt reads the payload of a JWT without verifying it, and nothing else', () => {
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const tok = `${b64({ alg: 'HS256' })}.${b64({ sid: 's-1', exp: 12, name: 'Zoë' })}.sig`;
    assert.deepEqual(decodeJwt(tok), { sid: 's-1', exp: 12, name: 'Zoë' });
    for (const bad of [undefined, null, 42, '', 'a.b', 'a..c', 'a.b.c.d', `x.${b64([1, 2])}.y`, `x.${b64('str')}.y`, 'x.%%%.y', `x.${Buffer.from('{nope').toString('base64url')}.y`]) {
      assert.equal(decodeJwt(bad), null, String(bad));
    }
  });

  test('webStorage keeps the tokens as JSON under one key, and survives junk in it', () => {
    const area = new Map();
    const storageArea = {
      getItem: (k) => (area.has(k) ? area.get(k) : null),
      setItem: (k, v) => area.set(k, String(v)),
      removeItem: (k) => area.delete(k),
    };
    const s = webStorage(storageArea, 'k');
    assert.equal(s.get(), null);
    s.set({ accessToken: 'a', refreshToken: 'r' });
    assert.equal(area.get('k'), '{"accessToken":"a","refreshToken":"r"}');
    assert.deepEqual(s.get(), { accessToken: 'a', refreshToken: 'r' });
    area.set('k', '{broken');
    assert.equal(s.get(), null);
    s.clear();
    assert.equal(area.has('k'), false);
    assert.throws(() => webStorage(undefined), TypeError);
  });

  test('createClient refuses a bad mode and wants a baseUrl outside a browser', () => {
    assert.throws(() => createClient({ baseUrl: 'http://x', mode: 'magic' }), /mode/);
    assert.throws(() => createClient({}), /baseUrl/);
  });
});

describe('against the gateway', { concurrency: false }, () => {
  let upstream;
  let gw;
  let skip = false;
  before(async (t) => {
    if (!haveBinary(t)) {
      skip = true;
      return;
    }
    upstream = await startUpstream();
    // Ten-second tokens whose silent-refresh window opens two seconds after they are minted.
    gw = await startGateway({
      upstream: upstream.url,
      token: 'access_ttl = "10s"\nsilent_refresh_window = "8s"\nleeway = "0s"',
    });
  });
  after(async () => {
    await gw?.stop();
    await upstream?.stop();
  });

  test('login stores the pair; fetch attaches the token; the app never sees a token', async (t) => {
    if (skip) return t.skip();
    const storage = memoryStorage();
    const client = createClient({ baseUrl: gw.base, storage, platform: 'h5', deviceId: 'test-device' });
    const rec = recordFetch();
    let info;
    try {
      info = await client.login(USER, PASSWORD);
    } finally {
      rec.restore();
    }
    assert.equal(info.user.id, '1001');
    assert.equal(info.platform, 'h5');
    assert.ok(info.sessionId);
    assert.equal(JSON.stringify(info).includes(storage.get().refreshToken), false, 'no refresh token in what login returns');
    assert.equal('accessToken' in info, false);
    const resp = await client.fetch('/orders?x=1');
    assert.equal(resp.status, 200);
    const echo = await resp.json();
    assert.equal(echo.userId, '1001');
    assert.equal(echo.sessionId, info.sessionId);
    assert.equal(echo.platform, 'h5');
    const sessions = await client.sessions();
    const mine = sessions.find((s) => s.current);
    assert.equal(mine.session_id, info.sessionId);
    assert.equal(mine.device, 'test-device');
    assert.equal('upstream' in info, false, 'no legacy login, no upstream answer');
    assert.deepEqual(await client.current(), info);
  });

  test('a wrong password is an AuthgateError with the gateway code; nothing is stored', async (t) => {
    if (skip) return t.skip();
    const storage = memoryStorage();
    const client = createClient({ baseUrl: gw.base, storage });
    await assert.rejects(client.login(USER, 'wrong'), (e) => e instanceof AuthgateError && e.code === 'invalid_credentials' && e.status === 401);
    assert.equal(storage.get(), null);
    // Without a session, fetch sends no token and hands back the gateway's 401 as it is.
    const resp = await client.fetch('/orders');
    assert.equal(resp.status, 401);
    assert.equal((await resp.json()).error, 'missing_token');
  });

  test('inside the window, the fresh access token of the refresh-token header is stored', async (t) => {
    if (skip) return t.skip();
    const storage = memoryStorage();
    const client = createClient({ baseUrl: gw.base, storage });
    await client.login(USER, PASSWORD);
    const first = storage.get();
    await sleep(2100); // into the window (8 s left: far from the 3 s margin)
    const rec = recordFetch();
    let resp;
    try {
      resp = await client.fetch('/orders');
    } finally {
      rec.restore();
    }
    assert.equal(resp.status, 200);
    const fresh = resp.headers.get('refresh-token');
    assert.ok(fresh, 'the gateway sent a fresh token');
    const now = storage.get();
    assert.equal(now.accessToken, fresh, 'stored');
    assert.equal(now.refreshToken, first.refreshToken, 'the refresh token is kept (nothing rotated)');
    assert.ok(now.accessTokenExpiresAt > first.accessTokenExpiresAt);
    assert.equal(rec.to('/auth/refresh').length, 0, 'no refresh call was needed');
    const next = await client.fetch('/orders');
    assert.equal(next.headers.get('refresh-token'), null, 'the new token is out of the window');
  });

  test('a refresh-token header on an error status is stored when it is a newer token of the same session', async (t) => {
    if (skip) return t.skip();
    const storage = memoryStorage();
    const client = createClient({ baseUrl: gw.base, storage });
    await client.login(USER, PASSWORD);
    const first = storage.get();
    await sleep(2100);
    // The upstream fails (500); the gateway verified the request all the same, and its
    // fresh token rides on the failure: the client keeps it.
    const resp = await client.fetch('/fail');
    assert.equal(resp.status, 500);
    assert.equal((await resp.json()).error, 'upstream_broke', 'the error answer reaches the caller untouched');
    const fresh = resp.headers.get('refresh-token');
    assert.ok(fresh);
    assert.equal(storage.get().accessToken, fresh);
    assert.equal(decodeJwt(fresh).sid, decodeJwt(first.accessToken).sid);
  });

  test('a refresh-token header that is not a newer token of this session is ignored, on any status', async (t) => {
    if (skip) return t.skip();
    // A proxy in front adds a header of its own choosing to the gateway's answers.
    let inject = 'not-a-jwt';
    const proxy = await startProxy(gw.base, {
      decorate: (req, headers) => {
        headers['refresh-token'] = inject;
      },
    });
    try {
      const storage = memoryStorage();
      const client = createClient({ baseUrl: proxy.url, storage });
      await client.login(USER, PASSWORD);
      const mine = storage.get().accessToken;
      // A real token of another session, minted a second later: it lives longer than ours.
      await sleep(1100);
      const other = await rawLogin(gw.base, 'app');
      assert.ok(decodeJwt(other.access_token).exp > decodeJwt(mine).exp);
      for (const [value, path] of [
        ['not-a-jwt', '/orders'],
        ['not-a-jwt', '/fail'],
        [other.access_token, '/orders'],
        [other.access_token, '/fail'],
        [mine, '/fail'], // the same token again: not newer
        [`${mine.split('.')[0]}.e30.x`, '/orders'], // a JWT without sid or exp
      ]) {
        inject = value;
        const resp = await client.fetch(path);
        assert.ok(resp.status === 200 || resp.status === 500, `${path}: ${resp.status}`);
        assert.equal(storage.get().accessToken, mine, `${value.slice(0, 12)} on ${path}: ignored`);
      }
    } finally {
      await proxy.stop();
    }
  });

  test('requests to another origin go out untouched: no token, no refresh', async (t) => {
    if (skip) return t.skip();
    const storage = memoryStorage();
    const client = createClient({ baseUrl: gw.base, storage });
    await client.login(USER, PASSWORD);
    // The upstream directly: another origin.
    const resp = await client.fetch(`${upstream.url}/direct`, { headers: { 'X-Probe': '1' } });
    const echo = await resp.json();
    assert.equal(echo.userId, null);
    assert.equal(resp.status, 200);
    // A caller that brings its own Authorization keeps it (and gets the gateway's verdict).
    const own = await client.fetch('/orders', { headers: { Authorization: 'Bearer not-mine' } });
    assert.equal(own.status, 401);
    assert.equal((await own.json()).error, 'invalid_token');
    assert.ok(storage.get(), 'the stored session is untouched by that answer');
  });

  test('logout ends the session on the gateway and drops the tokens; onLogout is for the gateway\'s verdicts only', async (t) => {
    if (skip) return t.skip();
    const storage = memoryStorage();
    const ended = [];
    const client = createClient({ baseUrl: gw.base, storage, onLogout: (c) => ended.push(c) });
    await client.login(USER, PASSWORD);
    const token = storage.get().accessToken;
    await client.logout();
    assert.equal(storage.get(), null);
    assert.equal(await client.current(), null);
    const r = await fetch(`${gw.base}/orders`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal((await r.json()).error, 'session_revoked', 'the old token stopped working');
    await client.logout(); // nothing stored: a no-op
    assert.deepEqual(ended, []);
  });

  test('logoutAll ends every session of the user: the other device is told session_revoked, once', async (t) => {
    if (skip) return t.skip();
    const endedA = [];
    const endedB = [];
    const a = createClient({ baseUrl: gw.base, platform: 'web', onLogout: (c) => endedA.push(c) });
    const bStorage = memoryStorage();
    const b = createClient({ baseUrl: gw.base, platform: 'app', storage: bStorage, onLogout: (c) => endedB.push(c) });
    await a.login(USER, PASSWORD);
    await b.login(USER, PASSWORD);
    await a.logoutAll();
    const answers = await Promise.all([b.fetch('/x'), b.fetch('/y'), b.fetch('/z')]);
    for (const r of answers) {
      assert.equal(r.status, 401);
      assert.equal((await r.json()).error, 'session_revoked');
    }
    assert.deepEqual(endedB, ['session_revoked'], 'once, not per request');
    assert.equal(bStorage.get(), null);
    assert.deepEqual(endedA, []);
    await assert.rejects(b.sessions(), (e) => e.code === 'missing_token');
  });
});
