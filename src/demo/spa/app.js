// The demo page's own code: the UI around the client library (./authgate.js, clients/js).
import { createClient, sessionStorageAdapter } from './authgate.js';

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const mode = query.get('mode') === 'cookie' ? 'cookie' : 'bearer';
const platform = ['web', 'h5', 'app'].includes(query.get('platform')) ? query.get('platform') : 'web';
$('mode').value = mode;
$('platform').value = platform;

/** Why the gateway ended the session, in words. */
const REASONS = {
  session_replaced: 'a newer login on the same platform ended this session',
  session_revoked: 'the session was ended (logout elsewhere, revoked, or expired)',
  token_theft_detected: 'a spent refresh token was used again: the session was ended to be safe',
  invalid_refresh_token: 'the refresh token is no longer valid: log in again',
};

/** Each request the library makes, as the page's activity list shows it. */
async function loggedFetch(input, init = {}) {
  const url = new URL(typeof input === 'string' ? input : input.url, location.href);
  const method = (init.method || (typeof input === 'string' ? 'GET' : input.method)).toUpperCase();
  const item = document.createElement('li');
  item.textContent = `${method} ${url.pathname} …`;
  $('activity').append(item);
  try {
    const resp = await fetch(input, init);
    const renewed = resp.headers.has('refresh-token') ? ' refresh-token' : '';
    item.textContent = `${method} ${url.pathname} ${resp.status}${renewed}`;
    item.dataset.path = url.pathname;
    item.dataset.status = String(resp.status);
    if (renewed) item.dataset.renewed = 'true';
    return resp;
  } catch (e) {
    item.textContent = `${method} ${url.pathname} failed: ${e.message}`;
    throw e;
  }
}

const client = createClient({
  mode,
  platform,
  deviceId: `demo page (${mode})`,
  // Bearer mode keeps the pair in this tab's sessionStorage, and sends no cookies: a cookie
  // session of this browser (the other mode) would otherwise travel beside the bearer token.
  storage: mode === 'bearer' ? sessionStorageAdapter('authgate-demo') : undefined,
  credentials: mode === 'bearer' ? 'omit' : undefined,
  fetch: loggedFetch,
  onLogout(code) {
    showReason(code);
    showLogin();
  },
});

function showReason(code) {
  const p = $('logout-reason');
  p.dataset.code = code;
  p.textContent = `Logged out by the gateway: ${code} (${REASONS[code] || code}).`;
  p.hidden = false;
}

function showLogin() {
  $('app-section').hidden = true;
  $('login-section').hidden = false;
  $('password').value = '';
}

async function showApp(info) {
  $('login-section').hidden = true;
  $('app-section').hidden = false;
  await showInfo(info);
}

async function showInfo(info) {
  const cur = info || (await client.current());
  if (!cur) return;
  $('who').textContent = cur.user ? `${cur.user.name} (id ${cur.user.id}) on ${cur.platform}` : '';
  $('session-id').textContent = cur.sessionId || '';
  $('expires').textContent = mode === 'cookie'
    ? 'kept in an HttpOnly cookie (renewed by the gateway)'
    : new Date(cur.accessTokenExpiresAt * 1000).toLocaleTimeString();
  $('expires').dataset.exp = String(cur.accessTokenExpiresAt || '');
}

async function showCaptcha() {
  const c = await client.captcha();
  $('captcha-image').src = c.image;
  $('captcha-image').dataset.id = c.captchaId;
  $('captcha').value = '';
  $('captcha-field').hidden = false;
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('login-error').textContent = '';
  const field = $('captcha-field');
  const captcha = field.hidden ? {} : { captchaId: $('captcha-image').dataset.id, captcha: $('captcha').value };
  try {
    const info = await client.login($('username').value, $('password').value, captcha);
    $('logout-reason').hidden = true;
    field.hidden = true;
    await showApp(info);
  } catch (e) {
    $('login-error').textContent = `Login refused: ${e.code}`;
    $('login-error').dataset.code = e.code || '';
    if (e.code === 'captcha_required' || e.code === 'invalid_captcha') await showCaptcha();
  }
});

$('call').addEventListener('click', async () => {
  try {
    const resp = await client.fetch('/api/echo');
    const body = await resp.json();
    $('echo').textContent = JSON.stringify(body, null, 2);
    $('echo').dataset.status = String(resp.status);
    for (const name of ['x-user-id', 'x-user-name', 'x-session-id', 'x-user-platform']) {
      const v = body.headers && body.headers[name];
      $(`echo-${name}`).textContent = v ? v.join(', ') : resp.ok ? '(not sent)' : '';
    }
    await showInfo();
  } catch (e) {
    $('echo').textContent = `Failed: ${e.code || e.name}: ${e.message}`;
  }
});

$('list').addEventListener('click', async () => {
  const tbody = $('sessions').querySelector('tbody');
  try {
    const list = await client.sessions();
    tbody.replaceChildren(...list.map((s) => {
      const tr = document.createElement('tr');
      for (const v of [s.session_id, s.platform, s.device || '', new Date(s.last_seen_at * 1000).toLocaleTimeString()]) {
        const td = document.createElement('td');
        td.textContent = v;
        tr.append(td);
      }
      const td = document.createElement('td');
      td.textContent = s.current ? 'this one' : '';
      tr.append(td);
      if (s.current) tr.dataset.current = 'true';
      return tr;
    }));
  } catch (e) {
    tbody.replaceChildren();
    $('echo').textContent = `Failed: ${e.code}: ${e.message}`;
  }
});

for (const [id, fn] of [['logout', () => client.logout()], ['logout-all', () => client.logoutAll()]]) {
  $(id).addEventListener('click', async () => {
    try {
      await fn();
    } finally {
      const p = $('logout-reason');
      p.dataset.code = 'logout';
      p.textContent = 'You logged out.';
      p.hidden = false;
      showLogin();
    }
  });
}

// At start: bearer mode knows from its storage; cookie mode asks the gateway (the cookies are
// HttpOnly, as they should be).
async function start() {
  if (mode === 'bearer') {
    const cur = await client.current();
    if (cur) return showApp(cur);
    return showLogin();
  }
  try {
    const list = await client.sessions();
    const mine = list.find((s) => s.current);
    return showApp({ sessionId: mine && mine.session_id, platform: mine && mine.platform, user: null });
  } catch {
    return showLogin();
  }
}
start().then(() => {
  document.body.dataset.ready = 'true';
});
