// End-to-end: authgate's browser sessions in a real browser (issue 11).
//
// Starts `authgate demo` (binary from AUTHGATE_BIN) with 4-second access tokens, drives
// Debian's Chromium through playwright-core (executablePath /usr/bin/chromium, a fresh
// --user-data-dir; never a downloaded browser), and walks what a user does:
//   protected page -> login page -> log in -> the page with the identity -> inside the
//   silent-refresh window: still in, cookie renewed in place -> past the token's whole life:
//   still in, renewed through <prefix>/refresh -> a form post from another origin of the
//   same site: 403 csrf_failed, never forwarded; from another site: no cookie goes with it
//   (SameSite=Lax), 401 -> log out -> back at the login page.
// Exits 0 when every step held; prints each step.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BIN = process.env.AUTHGATE_BIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TTL = 4; // seconds; the demo's silent-refresh window is half of it, leeway 0
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
  child.stderr.on('data', (d) => { err += d; });
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

/** A page of "another origin of the same site": 127.0.0.1 on another port, with a form that
 * posts to the gateway's protected route. */
function startOtherOrigin(target) {
  const server = http.createServer((req, res) => {
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    res.end(`<!DOCTYPE html><html><body>
<form method="post" action="${target}/api/orders"><input name="amount" value="1000000">
<button id="go" type="submit">Win a prize</button></form></body></html>`);
  });
  return new Promise((resolve) => {
    server.listen(0, () => resolve({ server, url: `http://127.0.0.1:${server.address().port}/` }));
  });
}

async function accessCookie(context) {
  const c = (await context.cookies()).find((x) => x.name === 'authgate_access');
  return c && c.value;
}

async function main() {
  const demo = startDemo();
  const userDataDir = mkdtempSync(path.join(tmpdir(), 'authgate-chromium-'));
  let context;
  let other;
  try {
    const base = await Promise.race([
      demo.base,
      sleep(30000).then(() => { throw new Error('the demo did not start within 30 s'); }),
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
    const page = context.pages()[0] || (await context.newPage());

    // 1. A protected page without a session: the login page, which knows where to return.
    await page.goto(`${base}/app/reports?year=2026`);
    check(new URL(page.url()).pathname === '/auth/login', `protected page leads to the login page (${page.url()})`);
    check(new URL(page.url()).searchParams.get('return_to') === '/app/reports?year=2026', 'the login page keeps return_to');
    check(await page.locator('input[name=password][type=password]').count() === 1, 'the login page has a password field');

    // 2. A wrong password: back at the login page with a message.
    await page.fill('#username', 'alice');
    await page.fill('#password', 'not-the-password');
    await page.click('button[type=submit]');
    check(new URL(page.url()).searchParams.get('error') === 'invalid_credentials', 'a wrong password comes back with error=invalid_credentials');
    check((await page.locator('[role=alert]').innerText()).includes('Wrong username or password'), 'the page says why');

    // 3. Log in: the page asked for first, with the identity the upstream received.
    await page.fill('#username', 'alice');
    await page.fill('#password', 'wonderland-demo-42');
    await page.click('button[type=submit]');
    check(new URL(page.url()).pathname === '/app/reports', `after login: back at the page asked for (${page.url()})`);
    check((await page.locator('#x-user-id').innerText()) === '1001', 'the upstream received X-User-Id 1001');
    check((await page.locator('#x-user-name').innerText()) === 'alice', 'the upstream received X-User-Name alice');
    const cookies = await context.cookies();
    const access = cookies.find((c) => c.name === 'authgate_access');
    check(access && access.httpOnly && access.sameSite === 'Lax', 'the access cookie is HttpOnly, SameSite=Lax');
    check(!(await page.evaluate(() => document.cookie)).includes('authgate_access'), 'scripts cannot read the access cookie');

    // 4. Inside the silent-refresh window (half the token's life left or less): the next
    //    navigation is answered directly, with the token renewed in a Set-Cookie.
    const first = await accessCookie(context);
    await sleep((TTL / 2) * 1000 + 700);
    const inWindow = await page.goto(`${base}/app/reports?year=2026`);
    check(inWindow.status() === 200 && inWindow.request().redirectedFrom() === null, 'inside the window: answered without a redirect');
    const second = await accessCookie(context);
    check(second && second !== first, 'inside the window: the access cookie was renewed');
    check((await page.locator('#x-user-id').innerText()) === '1001', 'inside the window: still logged in');

    // 5. Past the token's whole life with no request: the navigation renews through
    //    <prefix>/refresh (the refresh cookie) and lands on the page again.
    await sleep(TTL * 1000 + 700);
    const renewed = await page.goto(`${base}/app/reports?year=2026`);
    const hops = [];
    for (let r = renewed.request().redirectedFrom(); r; r = r.redirectedFrom()) hops.push(new URL(r.url()).pathname);
    check(hops.includes('/auth/refresh'), `past the token's life: renewed through /auth/refresh (${hops.join(' <- ')})`);
    check(new URL(page.url()).pathname === '/app/reports', 'past the token\'s life: back at the page');
    check((await page.locator('#x-user-id').innerText()) === '1001', 'past the token\'s life: still logged in');
    check((await accessCookie(context)) !== second, 'past the token\'s life: the access cookie was renewed');

    // 6. A form on another origin of the same site (the cookies do go with it) posts to the
    //    app: refused by the CSRF check, as JSON.
    other = await startOtherOrigin(base);
    const attacker = await context.newPage();
    await attacker.goto(other.url);
    const [posted] = await Promise.all([
      attacker.waitForNavigation(),
      attacker.click('#go'),
    ]);
    check(posted.status() === 403, `a cross-origin form post is refused (${posted.status()})`);
    check((await posted.json()).error === 'csrf_failed', 'with csrf_failed');
    // The same form on another site (localhost is not 127.0.0.1's site): SameSite=Lax keeps
    // the cookies home, so the post arrives without a token.
    await attacker.goto(other.url.replace('127.0.0.1', 'localhost'));
    const [crossSite] = await Promise.all([
      attacker.waitForNavigation(),
      attacker.click('#go'),
    ]);
    check(crossSite.status() === 401, `a cross-site form post carries no cookie (${crossSite.status()})`);
    await attacker.close();

    // 7. Log out with the upstream page's button: the login page, and the protected page
    //    leads there again.
    await page.click('text=Log out');
    check(new URL(page.url()).pathname === '/auth/login', `after logout: the login page (${page.url()})`);
    check((await accessCookie(context)) === undefined, 'after logout: the access cookie is gone');
    await page.goto(`${base}/app/reports`);
    check(new URL(page.url()).pathname === '/auth/login', 'after logout: the protected page leads to the login page');
    console.log('all browser steps passed');
  } finally {
    if (context) await context.close().catch(() => {});
    if (other) other.server.close();
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
