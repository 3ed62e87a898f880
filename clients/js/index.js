// @authgate/client: the client half of authgate's silent refresh, for browsers and Node 20+.
//
// One file, no dependencies, no bundler: `import { createClient } from './authgate.js'`.
// What it does for every request to the gateway's origin (see README.md):
//   - attaches the access token (bearer mode), or sends the gateway's cookies and the CSRF
//     header (cookie mode, `[browser]`);
//   - stores the fresh access token the gateway hands back in `refresh-token`;
//   - refreshes before sending when the token has less than `refreshMarginSecs` left;
//   - on 401 `token_expired`, refreshes once for every request that failed together, and
//     retries each of them once; a request is never retried twice and never loops;
//   - on `session_revoked`, `session_replaced`, `token_theft_detected` or
//     `invalid_refresh_token`, clears what it stored and calls `onLogout(code)` once.

/** The gateway's codes after which the session is gone for good (contract §7). */
const SESSION_ENDED = new Set([
  'session_revoked',
  'session_replaced',
  'token_theft_detected',
  'invalid_refresh_token',
]);

/** Methods the gateway never CSRF-checks (RFC 9110 §9.2.1). */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Every failure the client reports itself. `code` is the gateway's error code when it
 * answered one (`store_unavailable`, `token_theft_detected`, `invalid_credentials`, ...), or
 * one of the client's own: `network_error`, `body_not_replayable`, `not_logged_in`,
 * `bad_response`, `http_<status>` (an error answer without a gateway code).
 */
export class AuthgateError extends Error {
  constructor(code, message, { status = 0, retryAfter = null, body = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'AuthgateError';
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
    this.body = body;
  }
}

/** The default storage: the tokens live in this page's (or process's) memory only. */
export function memoryStorage() {
  let value = null;
  return {
    get: () => value,
    set: (tokens) => {
      value = tokens;
    },
    clear: () => {
      value = null;
    },
  };
}

/**
 * Storage in a Web Storage area (`localStorage`, `sessionStorage`), as JSON under `key`.
 * Several tabs sharing `localStorage` share one session: each reads the tokens when it needs
 * them, so a tab picks up the pair another tab refreshed.
 */
export function webStorage(area, key = 'authgate.tokens') {
  if (!area || typeof area.getItem !== 'function') {
    throw new TypeError('authgate: webStorage needs a Storage such as localStorage');
  }
  return {
    get() {
      const raw = area.getItem(key);
      if (!raw) return null;
      try {
        return JSON.parse(raw);
      } catch {
        return null;
      }
    },
    set(tokens) {
      area.setItem(key, JSON.stringify(tokens));
    },
    clear() {
      area.removeItem(key);
    },
  };
}

/** `webStorage(localStorage, key)`. */
export function localStorageAdapter(key) {
  return webStorage(globalThis.localStorage, key);
}

/** `webStorage(sessionStorage, key)`: one tab's session, gone when the tab closes. */
export function sessionStorageAdapter(key) {
  return webStorage(globalThis.sessionStorage, key);
}

/**
 * The claims of a JWT, read WITHOUT verifying it (only the gateway can do that): the client
 * only needs `exp` and `sid`. `null` for anything that is not a JWT with a JSON object payload.
 */
export function decodeJwt(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[1]) return null;
  try {
    let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    b64 += '='.repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

/** Reads a response's JSON body without consuming it for the caller; `null` if it has none. */
async function peekJson(resp) {
  const type = resp.headers.get('content-type') || '';
  if (!type.toLowerCase().includes('json')) return null;
  try {
    return await resp.clone().json();
  } catch {
    return null;
  }
}

/** Reads (and consumes) the JSON body of one of the gateway's own answers; `null` if none. */
async function readJson(resp) {
  try {
    const text = await resp.text();
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

/** The error code of a 401 answer: `X-Auth-Error` when readable, else the JSON `error`. */
async function authErrorCode(resp) {
  if (resp.status !== 401) return null;
  const header = resp.headers.get('x-auth-error');
  if (header) return header.trim();
  const body = await peekJson(resp);
  return body && typeof body.error === 'string' ? body.error : null;
}

function retryAfterOf(resp) {
  const v = resp.headers.get('retry-after');
  if (v === null) return null;
  const secs = Number(v);
  return Number.isFinite(secs) ? secs : null;
}

/** The error for a refused call to one of the gateway's endpoints. */
function refusal(resp, body, what) {
  const code = body && typeof body.error === 'string' ? body.error : `http_${resp.status}`;
  return new AuthgateError(code, `authgate: ${what} (${resp.status} ${code})`, {
    status: resp.status,
    retryAfter: retryAfterOf(resp),
    body,
  });
}

/** Whether a fetch body can be sent a second time (a stream has been read by the first). */
function replayable(body) {
  if (body === undefined || body === null) return true;
  if (typeof body === 'string') return true;
  if (body instanceof URLSearchParams || body instanceof ArrayBuffer || ArrayBuffer.isView(body)) {
    return true;
  }
  if (typeof Blob !== 'undefined' && body instanceof Blob) return true;
  if (typeof FormData !== 'undefined' && body instanceof FormData) return true;
  return false; // ReadableStream, async iterables: read once
}

/** The token pair JSON (contract §5) as the client stores it. */
function pairToRecord(pair) {
  return {
    accessToken: pair.access_token,
    refreshToken: pair.refresh_token,
    sessionId: pair.session_id,
    platform: pair.platform,
    user: pair.user,
    accessTokenExpiresAt: pair.access_token_expires_at,
    refreshTokenExpiresAt: pair.refresh_token_expires_at,
  };
}

/** What the application may see of a session: never a token. */
function publicInfo(x) {
  if (!x) return null;
  return {
    sessionId: x.sessionId ?? x.session_id ?? null,
    platform: x.platform ?? null,
    user: x.user ?? null,
    accessTokenExpiresAt: x.accessTokenExpiresAt ?? x.access_token_expires_at ?? null,
    refreshTokenExpiresAt: x.refreshTokenExpiresAt ?? x.refresh_token_expires_at ?? null,
  };
}

/** The login's answer for the app: the session, and the legacy login's own JSON if any. */
function withUpstream(info, answer) {
  return answer && answer.upstream !== undefined ? { ...info, upstream: answer.upstream } : info;
}

/** Reads a cookie readable by scripts (the CSRF cookie); `null` outside a browser. */
function readCookie(name) {
  const all = globalThis.document && typeof globalThis.document.cookie === 'string'
    ? globalThis.document.cookie
    : '';
  for (const part of all.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      return decodeURIComponent(part.slice(eq + 1).trim());
    }
  }
  return null;
}

/**
 * A client for one gateway. See README.md for every option; `baseUrl` is the only one a
 * Node program must give.
 */
export function createClient(options = {}) {
  const mode = options.mode ?? 'bearer';
  if (mode !== 'bearer' && mode !== 'cookie') {
    throw new TypeError(`authgate: mode must be "bearer" or "cookie", not ${JSON.stringify(mode)}`);
  }
  const cookieMode = mode === 'cookie';
  const baseText = options.baseUrl ?? globalThis.location?.origin;
  if (!baseText) throw new TypeError('authgate: baseUrl is required outside a browser');
  const base = new URL(baseText);
  const basePath = base.pathname.replace(/\/+$/, '');
  const prefix = '/' + String(options.prefix ?? '/auth').replace(/^\/+|\/+$/g, '');
  const platform = options.platform ?? null;
  const platformHeader = options.platformHeader ?? 'X-Platform';
  const deviceId = options.deviceId ?? null;
  const storage = options.storage ?? memoryStorage();
  const refreshHeader = options.refreshHeader ?? 'refresh-token';
  const csrfCookie = options.csrfCookie ?? 'authgate_csrf';
  const csrfHeader = options.csrfHeader ?? 'X-CSRF-Token';
  const marginSecs = options.refreshMarginSecs ?? 3;
  const onLogout = options.onLogout ?? (() => {});
  const now = options.now ?? (() => Date.now());
  // Looked up at each call, so a fetch installed (or wrapped) later is the one used.
  const rawFetch = (input, init) => (options.fetch ?? globalThis.fetch)(input, init);
  // Bearer mode leaves `credentials` to the caller unless told; cookie mode always sends them.
  const credentials = cookieMode ? 'include' : options.credentials;

  const endpoint = (path) => `${base.origin}${basePath}${prefix}${path}`;
  const resolve = (input) => {
    if (typeof Request !== 'undefined' && input instanceof Request) return input.url;
    return new URL(String(input), `${base.origin}${basePath}/`).href;
  };
  const isOurs = (url) => new URL(url).origin === base.origin;

  let flight = null; // the one refresh in progress, shared by every request that needs it
  let generation = 0; // cookie mode: bumped by each login, refresh and logout
  let endedGeneration = -1; // cookie mode: the generation onLogout was called for
  let quietSession = null; // bearer: the session being logged out on purpose (no onLogout)
  let cookieInfo = null; // cookie mode: what the last login said (no token)
  let completed = 0; // refreshes finished, either way
  // The last refresh that failed: what it was for (the access token, or in cookie mode the
  // generation) and its error. A request sent before it failed, with that same token, gets
  // that error instead of a second refresh: ten answers arriving one by one make one refresh.
  let lastFailure = null;

  const secsLeft = (token) => {
    const exp = decodeJwt(token)?.exp;
    return typeof exp === 'number' ? exp - now() / 1000 : Infinity;
  };
  const sidOf = (token) => decodeJwt(token)?.sid ?? null;

  function notify(code) {
    try {
      onLogout(code);
    } catch (e) {
      // The application's own bug: reported, never allowed to break the request in flight.
      setTimeout(() => {
        throw e;
      });
    }
  }

  /** Bearer: ends the stored session (once), if the failed token belonged to it. */
  async function endSession(code, token) {
    const cur = await storage.get();
    if (!cur) return; // already ended (onLogout was called then) or never logged in
    const sid = sidOf(token);
    const same = sid ? sid === cur.sessionId : token === cur.accessToken;
    if (!same) return; // a stale answer about an older session: the newer one stays
    await storage.clear();
    if (quietSession !== cur.sessionId) notify(code);
  }

  /** Cookie mode: onLogout once per login, and only for the login still current. */
  function endCookieSession(code, sentGeneration) {
    if (sentGeneration !== generation || endedGeneration === generation) return;
    endedGeneration = generation;
    cookieInfo = null;
    notify(code);
  }

  async function post(url, headers, body) {
    try {
      return await rawFetch(url, { method: 'POST', headers, body, credentials, cache: 'no-store' });
    } catch (e) {
      throw new AuthgateError('network_error', `authgate: ${url} could not be reached`, {
        cause: e,
      });
    }
  }

  function csrfHeaders(method, headers) {
    if (cookieMode && !SAFE_METHODS.has(method.toUpperCase())) {
      const v = readCookie(csrfCookie);
      if (v !== null && !headers.has(csrfHeader)) headers.set(csrfHeader, v);
    }
    return headers;
  }

  /** One refresh over the wire (bearer): the new pair stored, or the reason it failed. */
  async function refreshBearer(cur) {
    const resp = await post(
      endpoint('/refresh'),
      { 'Content-Type': 'application/json', Accept: 'application/json' },
      JSON.stringify({ refresh_token: cur.refreshToken }),
    ).catch((e) => {
      e.message = 'authgate: the token refresh could not reach the gateway; tokens kept, the request was not retried';
      throw e;
    });
    const body = await readJson(resp);
    if (resp.ok && body && typeof body.access_token === 'string') {
      const next = pairToRecord(body);
      await storage.set(next);
      return next;
    }
    const err = refusal(resp, body, 'the token refresh failed; tokens kept, the request was not retried');
    if (SESSION_ENDED.has(err.code)) {
      err.message = `authgate: the session has ended (${err.code})`;
      await endSession(err.code, cur.accessToken);
    }
    throw err;
  }

  /** One refresh over the wire (cookie mode): `POST <prefix>/refresh` without a body. */
  async function refreshCookie(sentGeneration) {
    const resp = await post(
      endpoint('/refresh'),
      csrfHeaders('POST', new Headers({ Accept: 'application/json' })),
      undefined,
    );
    if (resp.status === 204 || resp.ok) {
      generation += 1;
      return null;
    }
    const body = await readJson(resp);
    const err = refusal(resp, body, 'the cookie refresh failed; the request was not retried');
    if (SESSION_ENDED.has(err.code)) {
      err.message = `authgate: the session has ended (${err.code})`;
      endCookieSession(err.code, sentGeneration);
    }
    throw err;
  }

  /** Makes `refreshing` (for `token`) the one refresh in flight, and records how it ends. */
  function fly(token, refreshing) {
    flight = refreshing
      .then(
        (ok) => {
          lastFailure = null;
          return ok;
        },
        (err) => {
          lastFailure = { token, err };
          throw err;
        },
      )
      .finally(() => {
        completed += 1;
        flight = null;
      });
    return flight;
  }

  /**
   * The refresh a request needs, shared: one at a time for the whole client. `failed` is the
   * access token the request went out with (cookie mode: the generation), `sentAt` the count
   * of finished refreshes when it did. When the stored token is already newer (someone
   * refreshed meanwhile, here or in another tab), that one is used without a new refresh;
   * when a refresh for the same token failed since, its error is the answer.
   */
  async function sharedRefresh(failed, sentAt) {
    if (flight) return flight;
    if (sentAt !== undefined && sentAt !== completed && lastFailure && lastFailure.token === failed) {
      throw lastFailure.err;
    }
    if (cookieMode) {
      if (failed !== undefined && failed !== generation) return null;
      return fly(generation, refreshCookie(generation));
    }
    const cur = await storage.get();
    if (flight) return flight; // started while the storage answered
    if (!cur || !cur.refreshToken) {
      throw new AuthgateError('not_logged_in', 'authgate: no session to refresh (log in first)');
    }
    if (failed !== undefined && cur.accessToken !== failed && secsLeft(cur.accessToken) >= marginSecs) {
      return cur;
    }
    return fly(cur.accessToken, refreshBearer(cur));
  }

  /** Stores the fresh access token of a silent refresh: a JWT of the same session, newer. */
  async function pickUp(resp) {
    const fresh = resp.headers.get(refreshHeader);
    if (!fresh || cookieMode) return;
    const claims = decodeJwt(fresh.trim());
    if (!claims || typeof claims.exp !== 'number' || !claims.sid) return;
    const cur = await storage.get();
    if (!cur) return;
    const mine = decodeJwt(cur.accessToken);
    if (!mine || mine.sid !== claims.sid || !(claims.exp > (mine.exp ?? 0))) return;
    await storage.set({ ...cur, accessToken: fresh.trim(), accessTokenExpiresAt: claims.exp });
  }

  /** How to send a request (again): the caller's input and init, with our headers. */
  function plan(input, init) {
    const isRequest = typeof Request !== 'undefined' && input instanceof Request;
    const method = (init.method ?? (isRequest ? input.method : 'GET')).toUpperCase();
    // A Request's body is a stream: a clone (fetch tees it) is the copy for the retry. A
    // ReadableStream given in `init.body` is read by the first send and cannot be replayed.
    let spare = isRequest && input.body !== null && init.body === undefined ? input.clone() : null;
    const canReplay = replayable(init.body);
    let sent = 0;
    return {
      method,
      canReplay,
      headers() {
        return new Headers(init.headers ?? (isRequest ? input.headers : undefined));
      },
      send(headers) {
        let target = input;
        if (sent > 0 && spare) {
          target = spare;
          spare = target.clone();
        }
        sent += 1;
        const opts = { ...init, headers };
        if (credentials !== undefined && init.credentials === undefined) {
          opts.credentials = credentials;
        }
        return rawFetch(target, opts);
      },
    };
  }

  function notReplayable() {
    return new AuthgateError(
      'body_not_replayable',
      'authgate: the request needed a token refresh, but its body is a stream that the first attempt consumed; it was not sent again (the token is fresh now: send it anew, or pass a string, Blob, ArrayBuffer or FormData body)',
      { status: 401 },
    );
  }

  async function bearerFetch(p) {
    const callerHeaders = p.headers();
    if (callerHeaders.has('authorization')) {
      return p.send(callerHeaders); // the caller chose the credentials: passed through as is
    }
    const startedAt = completed;
    let cur = await storage.get();
    // One refresh attempt per request at most: before sending, or after a token_expired.
    let refreshed = false;
    let refreshFailure = null;
    if (cur && secsLeft(cur.accessToken) < marginSecs) {
      refreshed = true;
      try {
        cur = await sharedRefresh(cur.accessToken, startedAt);
      } catch (e) {
        // The session ended, or the token is dead anyway: the refresh's error is the answer.
        // A refresh that failed for a while (503, network) while the token still has some
        // life: the request goes out with it; if the gateway finds it expired, the refresh's
        // error is the answer then.
        if (SESSION_ENDED.has(e.code) || e.code === 'not_logged_in' || secsLeft(cur.accessToken) <= 0) throw e;
        refreshFailure = e;
      }
    }
    const send = (record) => {
      const h = p.headers();
      if (record) h.set('Authorization', `Bearer ${record.accessToken}`);
      return p.send(h);
    };
    let sentWith = cur;
    const sentAt = completed;
    let resp = await send(sentWith);
    await pickUp(resp);
    let code = await authErrorCode(resp);
    if (code === 'token_expired' && refreshFailure) throw refreshFailure;
    if (code === 'token_expired' && sentWith && !refreshed) {
      const next = await sharedRefresh(sentWith.accessToken, sentAt);
      if (!p.canReplay) throw notReplayable();
      sentWith = next;
      resp = await send(sentWith);
      await pickUp(resp);
      code = await authErrorCode(resp);
    }
    if (sentWith && SESSION_ENDED.has(code)) await endSession(code, sentWith.accessToken);
    return resp;
  }

  async function cookieFetch(p) {
    const sentGeneration = generation;
    const sentAt = completed;
    const send = () => p.send(csrfHeaders(p.method, p.headers()));
    let resp = await send();
    let code = await authErrorCode(resp);
    if (code === 'token_expired') {
      await sharedRefresh(sentGeneration, sentAt);
      if (!p.canReplay) throw notReplayable();
      resp = await send();
      code = await authErrorCode(resp);
    }
    if (SESSION_ENDED.has(code)) endCookieSession(code, sentGeneration);
    return resp;
  }

  /** `fetch`, for the gateway's origin with the session; other origins are passed through. */
  async function authFetch(input, init = {}) {
    const url = resolve(input);
    if (!isOurs(url)) return rawFetch(input, init);
    const isRequest = typeof Request !== 'undefined' && input instanceof Request;
    const p = plan(isRequest ? input : url, init);
    return cookieMode ? cookieFetch(p) : bearerFetch(p);
  }

  /** One of the gateway's endpoints that take the session, through the same machinery. */
  async function call(path, method, what) {
    const resp = await authFetch(endpoint(path), {
      method,
      headers: { Accept: 'application/json' },
      cache: 'no-store',
    }).catch((e) => {
      if (e instanceof AuthgateError) throw e;
      throw new AuthgateError('network_error', `authgate: ${what}: the gateway could not be reached`, {
        cause: e,
      });
    });
    const body = await readJson(resp);
    if (!resp.ok) throw refusal(resp, body, what);
    return body;
  }

  async function login(username, password, { captchaId, captcha } = {}) {
    const headers = new Headers({ Accept: 'application/json' });
    if (platform) headers.set(platformHeader, platform);
    if (deviceId) headers.set('X-Device-Id', deviceId);
    let body;
    if (cookieMode) {
      // A form login: the gateway sets the cookies and, asked for JSON, answers no token.
      headers.set('Content-Type', 'application/x-www-form-urlencoded');
      const form = new URLSearchParams({ username, password });
      if (captchaId !== undefined) form.set('captcha_id', captchaId);
      if (captcha !== undefined) form.set('captcha', captcha);
      body = form.toString();
    } else {
      headers.set('Content-Type', 'application/json');
      const json = { username, password };
      if (captchaId !== undefined) json.captcha_id = captchaId;
      if (captcha !== undefined) json.captcha = captcha;
      body = JSON.stringify(json);
    }
    const resp = await post(endpoint('/login'), headers, body);
    const answer = await readJson(resp);
    if (!resp.ok) throw refusal(resp, answer, 'the login was refused');
    generation += 1;
    if (cookieMode) {
      cookieInfo = publicInfo(answer);
      return withUpstream(cookieInfo, answer);
    }
    if (!answer || typeof answer.access_token !== 'string' || typeof answer.refresh_token !== 'string') {
      throw new AuthgateError('bad_response', 'authgate: the login answer holds no token pair', {
        status: resp.status,
        body: answer,
      });
    }
    const record = pairToRecord(answer);
    await storage.set(record);
    return withUpstream(publicInfo(record), answer);
  }

  async function endOnPurpose(path) {
    if (cookieMode) {
      generation += 1; // answers to requests sent before this are about a session we ended
      cookieInfo = null;
      const resp = await post(
        endpoint(path),
        csrfHeaders('POST', new Headers({ Accept: 'application/json' })),
        undefined,
      );
      if (!resp.ok && resp.status !== 401) throw refusal(resp, await readJson(resp), 'the logout failed');
      return;
    }
    const cur = await storage.get();
    if (!cur) return;
    quietSession = cur.sessionId;
    let failure = null;
    try {
      await call(path, 'POST', 'the logout failed');
    } catch (e) {
      // Already ended (401): logged out all the same. Anything else is worth reporting, but
      // the tokens are dropped either way: the user asked to be logged out here.
      if (!(e instanceof AuthgateError && e.status === 401)) failure = e;
    }
    const still = await storage.get();
    if (still && still.sessionId === cur.sessionId) await storage.clear();
    if (failure) throw failure;
  }

  return {
    mode,
    fetch: authFetch,
    login,
    logout: () => endOnPurpose('/logout'),
    logoutAll: () => endOnPurpose('/logout-all'),
    async sessions() {
      return (await call('/sessions', 'GET', 'the session list was refused'))?.sessions ?? [];
    },
    async refresh() {
      const next = await sharedRefresh(undefined);
      return cookieMode ? null : publicInfo(next);
    },
    async captcha() {
      let resp;
      try {
        resp = await rawFetch(endpoint('/captcha'), { credentials, cache: 'no-store' });
      } catch (e) {
        throw new AuthgateError('network_error', 'authgate: no captcha: the gateway could not be reached', { cause: e });
      }
      const body = await readJson(resp);
      if (!resp.ok) throw refusal(resp, body, 'no captcha');
      return { captchaId: body.captcha_id, image: body.image, expiresIn: body.expires_in };
    },
    async current() {
      return cookieMode ? cookieInfo : publicInfo(await storage.get());
    },
  };
}
