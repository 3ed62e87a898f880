// Test support: a real authgate binary, started per test on free loopback ports with a config
// written for it, a real upstream (node:http) behind it, and real servers for the faults
// (redis-server to stop, a proxy in front that answers what the test asks). Nothing here
// mocks the gateway: every request the client makes goes over a socket to one of them.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export const USER = 'alice';
/** A second user, for the marker logins of `settled()`: they never touch alice's sessions. */
const MARKER_USER = 'marker';
export const PASSWORD = 'client-test-password-7';

/** The authgate binary: `AUTHGATE_BIN`, else cargo's debug build. */
export function binary() {
  if (process.env.AUTHGATE_BIN) return process.env.AUTHGATE_BIN;
  const target = process.env.CARGO_TARGET_DIR
    ? path.resolve(REPO, process.env.CARGO_TARGET_DIR)
    : path.join(REPO, 'target');
  return path.join(target, 'debug', 'authgate');
}

/**
 * Skips the test (loudly) when a program it needs is missing, unless `CI` is set: then the
 * missing program fails it. Returns true when the test can run.
 */
export function needs(t, what, available) {
  if (available) return true;
  if (process.env.CI) throw new Error(`${what} is missing, and CI is set`);
  console.error(`\n*** SKIPPED: ${what} is missing.\n`);
  t.skip(`${what} is missing`);
  return false;
}

export function haveBinary(t) {
  return needs(t, `the authgate binary (${binary()}; build it with \`cargo build\` or set AUTHGATE_BIN)`, existsSync(binary()));
}

export function haveRedis(t) {
  const found = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  return needs(t, 'redis-server', !found.error && found.status === 0);
}

let hashed = null;
/** The test user's Argon2id hash, made once by `authgate hash-password`. */
function passwordHash() {
  if (hashed) return hashed;
  const out = spawnSync(binary(), ['hash-password'], { input: `${PASSWORD}\n`, encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`authgate hash-password failed: ${out.stderr}`);
  hashed = out.stdout.trim();
  return hashed;
}

/** A free loopback port (for redis-server, which cannot report one it picked). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function listen(server) {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
}

function close(server) {
  return new Promise((resolve) => {
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
}

/**
 * The upstream behind the gateway: echoes what it got as JSON (method, path, the identity
 * headers, the body's length and text). `/fail` answers 500; `/expired-forever` answers a
 * 401 `token_expired` of its own, every time (an app that mimics the gateway's code).
 */
export async function startUpstream() {
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const echo = {
        method: req.method,
        path: req.url,
        userId: req.headers['x-user-id'] ?? null,
        sessionId: req.headers['x-session-id'] ?? null,
        platform: req.headers['x-user-platform'] ?? null,
        body,
        bodyLength: Buffer.byteLength(body),
      };
      if (req.url.startsWith('/fail')) {
        res.writeHead(500, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: 'upstream_broke', ...echo }));
      } else if (req.url.startsWith('/expired-forever')) {
        res.writeHead(401, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: 'token_expired', message: "the app's own 401" }));
      } else {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(echo));
      }
    });
  });
  const url = await listen(server);
  return { url, stop: () => close(server) };
}

/** A redis-server of its own on a free port, no persistence. */
export async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('Ready to accept connections')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`redis-server exited (${code}): ${out.slice(-500)}`)));
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  return {
    url: `redis://127.0.0.1:${port}/0`,
    async stop() {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** A field of a JSON log line (tracing puts the event's fields at the top or under `fields`). */
function field(line, name) {
  return line[name] ?? line.fields?.[name];
}

/**
 * Starts `authgate run -c <tmp>/gateway.toml` on free ports with `toml` added to a base
 * config: HS256, the memory store (unless `toml` says otherwise), one user, the upstream at
 * `upstream` on `/` (required). Resolves once its `listening` line names its addresses.
 * Keeps every JSON line it logs on stderr (`lines`), for the audit events.
 */
export async function startGateway({ upstream, token = '', session = '', extra = '' }) {
  const dir = mkdtempSync(path.join(tmpdir(), 'authgate-js-'));
  writeFileSync(
    path.join(dir, 'users.toml'),
    `[[users]]\nid = "1001"\nusername = "${USER}"\npassword_hash = "${passwordHash()}"\ntenant = "acme"\n\n`
      + `[[users]]\nid = "2002"\nusername = "${MARKER_USER}"\npassword_hash = "${passwordHash()}"\n`,
  );
  writeFileSync(
    path.join(dir, 'gateway.toml'),
    `[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[token]
algorithm = "HS256"
secret_env = "AUTHGATE_JWT_SECRET"
${token}

[session]
${session}

[login]
backend = "users_file"
users_file = "users.toml"

[login.lockout]
max_failures = 1000
max_failures_per_ip = 1000

${extra}

[[upstreams]]
name = "app"
urls = ["${upstream}"]

[[routes]]
path = "/"
upstream = "app"
auth = "required"
`,
  );
  const child = spawn(binary(), ['--log-format', 'json', 'run', '-c', path.join(dir, 'gateway.toml')], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, AUTHGATE_JWT_SECRET: randomBytes(48).toString('base64') },
  });
  const lines = [];
  const waiters = [];
  let rest = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    rest += d;
    let nl;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const text = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      let line;
      try {
        line = JSON.parse(text);
      } catch {
        line = { text };
      }
      lines.push(line);
      for (const w of [...waiters]) {
        if (w.pred(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  /** Resolves with the first line (logged so far or later) that `pred` accepts. */
  const waitFor = (pred, what = 'a log line') => {
    const seen = lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`gateway: no ${what} within 20 s`)), 20000);
      waiters.push({ pred, resolve: (l) => { clearTimeout(timer); resolve(l); } });
      exited.then((code) => reject(new Error(`gateway exited (${code}) before ${what}: ${JSON.stringify(lines.slice(-5))}`)));
    });
  };
  const up = await waitFor((l) => field(l, 'message') === 'listening', 'listening line');
  const base = `http://${field(up, 'addr')}`;
  const admin = `http://${field(up, 'admin')}`;
  const audits = (event) => lines.filter((l) => field(l, 'audit') === true && field(l, 'event') === event);
  return {
    base,
    admin,
    lines,
    audits,
    /**
     * Waits until every audit line of the requests answered before now has been read: the
     * gateway writes an event's line before it answers, so the `login` line of a marker login
     * made now (another user, its own session) comes after all of them.
     */
    async settled() {
      const r = await fetch(`${base}/auth/login`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ username: MARKER_USER, password: PASSWORD }),
      });
      const { session_id: sid } = await r.json();
      await waitFor((l) => field(l, 'audit') === true && field(l, 'event') === 'login' && field(l, 'session_id') === sid, 'marker login line');
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A real HTTP proxy in front of the gateway (a load balancer, a CDN): passes every request
 * on, unless `rule(req)` returns an answer `{ status, headers, body }` to give instead;
 * `decorate(req, headers)` may add headers to what the gateway answered.
 */
export async function startProxy(target, { rule = () => null, decorate = () => {} } = {}) {
  const t = new URL(target);
  const seen = [];
  const server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const own = rule(req);
    if (own) {
      req.resume();
      res.writeHead(own.status, own.headers ?? {});
      res.end(own.body ?? '');
      return;
    }
    const up = http.request(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers },
      (r) => {
        const headers = { ...r.headers };
        decorate(req, headers, r.statusCode);
        res.writeHead(r.statusCode, headers);
        r.pipe(res);
      },
    );
    up.on('error', () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  const url = await listen(server);
  return { url, seen, stop: () => close(server) };
}

/**
 * Wraps the real global fetch to record what went out (method, path, status); the requests
 * still go to the real servers. `restore()` puts the original back.
 */
export function recordFetch() {
  const original = globalThis.fetch;
  const calls = [];
  globalThis.fetch = async (input, init = {}) => {
    const url = new URL(typeof input === 'string' || input instanceof URL ? String(input) : input.url);
    const method = (init.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
    const call = { method, path: url.pathname, status: null, error: null };
    calls.push(call);
    try {
      const resp = await original(input, init);
      call.status = resp.status;
      return resp;
    } catch (e) {
      call.error = e;
      throw e;
    }
  };
  return {
    calls,
    to: (p) => calls.filter((c) => c.path === p),
    restore() {
      globalThis.fetch = original;
    },
  };
}

/** A login outside any client (another device, or curl): the token pair JSON. */
export async function rawLogin(base, platform = 'web') {
  const r = await fetch(`${base}/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Platform': platform },
    body: JSON.stringify({ username: USER, password: PASSWORD }),
  });
  if (r.status !== 200) throw new Error(`raw login: ${r.status} ${await r.text()}`);
  return r.json();
}

/** A refresh outside any client: the new pair JSON. */
export async function rawRefresh(base, refreshToken) {
  const r = await fetch(`${base}/auth/refresh`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: refreshToken }),
  });
  if (r.status !== 200) throw new Error(`raw refresh: ${r.status} ${await r.text()}`);
  return r.json();
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
