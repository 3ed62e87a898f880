// End-to-end: the JavaScript client (clients/js) in a real browser (issue 13).
//
// Starts `authgate demo` (binary from AUTHGATE_BIN) with 12-second access tokens (a
// silent-refresh window of 6 s, no leeway) and drives its single-page app (/spa/) in Debian's
// Chromium through playwright-core (executablePath /usr/bin/chromium, a fresh --user-data-dir;
// never a downloaded browser). Two tabs at once:
//   bearer mode (platform web): log in -> call (the echo shows the identity) -> inside the
//     window: the fresh token rides back in refresh-token and is stored, no refresh call ->
//     the session list -> under 3 s left: one POST /auth/refresh before the call -> a second
//     login on web made outside the browser -> the next call: logged out, the page says
//     session_replaced -> log in again, log out;
//   cookie mode (platform h5): log in (HttpOnly cookies, nothing in storage) -> call -> past
//     the access token's life: 401 token_expired, POST /auth/refresh (204), the call retried
//     -> kicked by a second login on h5 -> session_replaced on the page -> log in again, log
//     out (the POST carries X-CSRF-Token, the CSRF cookie's value).
// No CSP violation and no script error on either page. Exits 0 when every step held.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BIN = process.env.AUTHGATE_BIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TTL = 12; // seconds; the demo's window is half of it
const USER = 'alice';
const PASSWORD = 'wonderland-demo-42';
if (!BIN) {
  console.error('AUTHGATE_BIN must name the authgate binary');
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function check(cond, what) {
  if (!cond) throw new Error(`FAILED: ${what}`);
  console.log(`ok - ${what}`);
}

/** Starts the demo; resolves with its base URL once the walk-through names it. */
function startDemo() {
  const child = spawn(
    BIN,
    ['demo', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--access-ttl-secs', String(TTL)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => {
    err += d;
  });
  const base = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/gateway\s+(http:\/\/127\.0\.0\.1:\d+)/);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`demo exited (${code}): ${err.slice(-2000)}`)));
  });
  return { child, base };
}

/** A login made outside the browser (as curl would): the pair's JSON. */
async function loginElsewhere(base, platform) {
  const r = await fetch(`${base}/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Platform': platform },
    body: JSON.stringify({ username: USER, password: PASSWORD }),
  });
  if (r.status !== 200) throw new Error(`login elsewhere: ${r.status}`);
  return r.json();
}

/** Watches a page for script errors and CSP violations (Chromium logs those as console errors). */
function watch(page, name) {
  const problems = [];
  page.on('pageerror', (e) => problems.push(`${name}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/401|Failed to load resource/.test(m.text())) problems.push(`${name}: ${m.text()}`);
  });
  return problems;
}

/** The page's activity list: each request the client made, as `METHOD path status`. */
async function activity(page) {
  return page.$$eval('#activity li', (items) => items.map((li) => ({
    text: li.textContent,
    path: li.dataset.path,
    status: li.dataset.status,
    renewed: li.dataset.renewed === 'true',
  })));
}

/** Clicks "Call /api/echo" and waits for the answer to be shown; the requests it made. */
async function call(page) {
  const before = (await activity(page)).length;
  await page.evaluate(() => {
    document.getElementById('echo').dataset.status = '';
  });
  await page.click('#call');
  await page.waitForFunction(() => document.getElementById('echo').dataset.status !== ''
    || document.getElementById('login-section').hidden === false);
  return (await activity(page)).slice(before);
}

async function stored(page) {
  return page.evaluate(() => JSON.parse(sessionStorage.getItem('authgate-demo') || 'null'));
}

/** Waits until the stored access token has `secs` seconds left (client clock = gateway clock). */
async function untilLeft(page, secs) {
  const exp = (await stored(page)).accessTokenExpiresAt;
  const wait = (exp - secs) * 1000 - Date.now();
  if (wait > 0) await sleep(wait);
}

async function login(page) {
  await page.fill('#password', PASSWORD);
  await page.click('#login');
  await page.waitForSelector('#app-section:not([hidden])');
}

async function main() {
  const demo = startDemo();
  const userDataDir = mkdtempSync(path.join(tmpdir(), 'authgate-chromium-'));
  let context;
  try {
    const base = await Promise.race([
      demo.base,
      sleep(30000).then(() => {
        throw new Error('the demo did not start within 30 s');
      }),
    ]);
    console.log(`demo at ${base}`);
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync',
      ],
    });
    const bearer = context.pages()[0] || (await context.newPage());
    const problems = watch(bearer, 'bearer page');

    // 1. The page: static, on a public route, with a CSP that allows no inline script.
    const served = await bearer.goto(`${base}/spa/`);
    check(served.status() === 200, 'the single-page app is served on its public route');
    check((served.headers()['content-security-policy'] || '').includes("script-src 'self'"), "its CSP allows scripts from its own origin only");
    await bearer.waitForSelector('body[data-ready=true]');
    check(await bearer.isVisible('#login-form'), 'not logged in: the login form');

    // 2. Log in (bearer mode, platform web): the pair in sessionStorage, no cookie.
    await login(bearer);
    check((await bearer.innerText('#who')).includes('alice'), 'logged in as alice');
    const first = await stored(bearer);
    check(first && first.accessToken && first.refreshToken, 'the pair is in sessionStorage');
    check(!(await context.cookies()).some((c) => c.name === 'authgate_access'), 'bearer mode sets no cookie');

    // The cookie tab logs in now, so its token's life runs alongside the bearer tab's waits.
    const cookie = await context.newPage();
    const cookieProblems = watch(cookie, 'cookie page');
    await cookie.goto(`${base}/spa/?mode=cookie&platform=h5`);
    await cookie.waitForSelector('body[data-ready=true]');
    check(await cookie.isVisible('#login-form'), 'cookie mode, no cookie yet: the login form');
    await login(cookie);
    const cookieLoginAt = Date.now();
    const jar = await context.cookies();
    const access = jar.find((c) => c.name === 'authgate_access');
    check(access && access.httpOnly, 'cookie mode: the gateway set an HttpOnly access cookie');
    check(await cookie.evaluate(() => sessionStorage.length === 0 && localStorage.length === 0), 'cookie mode: nothing in storage');
    let reqs = await call(cookie);
    check((await cookie.innerText('#echo-x-user-platform')) === 'h5', 'cookie mode: the upstream saw platform h5');
    check(reqs.some((r) => r.path === '/api/echo' && r.status === '200'), 'cookie mode: the call succeeded');

    // 3. A call: the upstream's echo shows who the gateway said we are.
    reqs = await call(bearer);
    check((await bearer.innerText('#echo-x-user-id')) === '1001', 'the upstream received X-User-Id 1001');
    check((await bearer.innerText('#echo-x-session-id')) === first.sessionId, 'and this session\'s id');
    check(reqs.length === 1 && !reqs[0].renewed, 'outside the window: one request, no fresh token');

    // 4. Inside the silent-refresh window (6 s left or less, in the gateway's whole seconds)
    //    but above the client's 3 s margin: the fresh token rides back on the answer and is
    //    stored, with no refresh call.
    await untilLeft(bearer, 5);
    reqs = await call(bearer);
    check(reqs.length === 1 && reqs[0].path === '/api/echo' && reqs[0].renewed, `inside the window: the answer carried refresh-token (${reqs.map((r) => r.text)})`);
    const silent = await stored(bearer);
    check(silent.accessToken !== first.accessToken && silent.refreshToken === first.refreshToken, 'the fresh access token is stored; the refresh token unchanged');
    check(silent.accessTokenExpiresAt > first.accessTokenExpiresAt, 'and it lives longer');

    // 5. The session list, this session marked.
    await bearer.click('#list');
    await bearer.waitForSelector('#sessions tbody tr[data-current=true]');
    const rows = await bearer.$$eval('#sessions tbody tr', (trs) => trs.map((tr) => tr.textContent));
    check(rows.length === 2 && rows.some((r) => r.includes('web')) && rows.some((r) => r.includes('h5')), `the session list shows both sessions (${rows.length})`);

    // 6. Under 3 s left: the client refreshes before it calls.
    await untilLeft(bearer, 2.2);
    reqs = await call(bearer);
    check(reqs.map((r) => `${r.path} ${r.status}`).join(', ') === '/auth/refresh 200, /api/echo 200', `under 3 s left: one refresh, then the call (${reqs.map((r) => r.text)})`);
    const refreshed = await stored(bearer);
    check(refreshed.refreshToken !== first.refreshToken && refreshed.sessionId === first.sessionId, 'a rotated pair for the same session');

    // 7. Cookie mode, past the access token's life: token_expired, one refresh (204, new
    //    cookies), the call retried.
    await sleep(Math.max(0, cookieLoginAt + (TTL + 1.2) * 1000 - Date.now()));
    reqs = await call(cookie);
    check(reqs.map((r) => `${r.path} ${r.status}`).join(', ') === '/api/echo 401, /auth/refresh 204, /api/echo 200', `cookie mode, expired: refreshed once and retried (${reqs.map((r) => r.text)})`);
    check((await cookie.innerText('#echo-x-user-id')) === '1001', 'cookie mode: still logged in');

    // 8. A second login on web outside the browser: the bearer page's next call is refused,
    //    the client logs out, and the page says why.
    await loginElsewhere(base, 'web');
    reqs = await call(bearer);
    await bearer.waitForSelector('#logout-reason:not([hidden])');
    check((await bearer.getAttribute('#logout-reason', 'data-code')) === 'session_replaced', 'kicked out: onLogout("session_replaced")');
    check((await bearer.innerText('#logout-reason')).includes('a newer login on the same platform'), 'the page shows the reason');
    check(await bearer.isVisible('#login-form'), 'and the login form again');
    check((await stored(bearer)) === null, 'the tokens are gone from storage');
    check(reqs.filter((r) => r.path === '/auth/refresh').length === 0, 'no refresh was tried for an ended session');

    // 9. The same for the cookie tab (platform h5).
    await loginElsewhere(base, 'h5');
    await call(cookie);
    await cookie.waitForSelector('#logout-reason:not([hidden])');
    check((await cookie.getAttribute('#logout-reason', 'data-code')) === 'session_replaced', 'cookie mode kicked out: session_replaced on the page');

    // 10. Log in again and log out with the button.
    await login(bearer);
    const again = await stored(bearer);
    check(again.sessionId !== first.sessionId, 'a new session');
    await bearer.click('#logout');
    await bearer.waitForSelector('#login-section:not([hidden])');
    check((await bearer.getAttribute('#logout-reason', 'data-code')) === 'logout', 'logged out by the button');
    check((await stored(bearer)) === null, 'storage cleared');
    const dead = await fetch(`${base}/api/echo`, { headers: { Authorization: `Bearer ${again.accessToken}` } });
    check((await dead.json()).error === 'session_revoked', 'the token stopped working on the gateway');
    await login(cookie);
    const csrf = (await context.cookies()).find((c) => c.name === 'authgate_csrf');
    const [logoutRequest] = await Promise.all([
      cookie.waitForRequest((r) => r.method() === 'POST' && new URL(r.url()).pathname === '/auth/logout'),
      cookie.click('#logout'),
    ]);
    check(csrf && logoutRequest.headers()['x-csrf-token'] === csrf.value, 'cookie mode: an unsafe request carries X-CSRF-Token from the CSRF cookie');
    await cookie.waitForSelector('#login-section:not([hidden])');
    check(!(await context.cookies()).some((c) => c.name === 'authgate_access'), 'cookie mode logout: the access cookie is gone');

    const all = [...problems, ...cookieProblems];
    check(all.length === 0, `no script error or CSP violation (${all.join('; ')})`);
    console.log('all client steps passed');
  } finally {
    if (context) await context.close().catch(() => {});
    demo.child.kill('SIGTERM');
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e.stack || String(e));
    process.exit(1);
  },
);
