#!/usr/bin/env python3
"""The soak's traffic driver and judge (bench/soak.sh starts everything, then runs this).

Python stdlib only. For MINUTES it keeps WORKERS threads cycling through a session's life
against two gateway instances that share one redis-server:

    login (instance A) -> proxied GETs (A and B in turn) -> refresh (B) -> a WebSocket echo
    (A) -> more proxied GETs with the new token -> logout (B) -> the old token refused (A)

Each worker is its own user and client IP (X-Forwarded-For from the trusted 127.0.0.1), so
the per-IP login flood guard and the platform's session limit never get in the way.

Half-way through, redis-server is killed (SIGKILL: only what it had persisted survives;
`appendfsync always` makes that every acknowledged write) and started again after GAP
seconds on the same data. Shortly before, KEEPERS sessions are created and checked; after
the restart (both /readyz 200 again), each must still work on both instances and refresh.

A sampler reads both gateways' VmRSS (/proc/PID/status) and open fds (/proc/PID/fd) every
few seconds. The verdict, printed at the end (and written as JSON to --out):
  - RSS and fds flat: after the warm-up, the median of the last fifth of the samples within
    10% of the median of the first fifth, per instance;
  - no 5xx but the 503s of the Redis gap (from the kill until both instances are ready
    again, plus GRACE seconds), and no transport error or unexpected status outside it;
  - no keeper session lost.
Exit status 0 when all pass.
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

GRACE = 5.0  # seconds after both instances are ready again in which a 503 still counts as the gap's
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CALLS = 6  # proxied GETs per token


def now():
    return time.monotonic()


class Gap:
    """When Redis was down: from the kill to both instances ready (monotonic seconds)."""

    def __init__(self):
        self.start = None
        self.end = None

    def covers(self, t0, t1):
        if self.start is None or t1 < self.start:
            return False
        return self.end is None or t0 <= self.end + GRACE


class Stats:
    def __init__(self, gap):
        self.lock = threading.Lock()
        self.gap = gap
        self.counts = Counter()  # (kind, status) -> n
        self.gap_503 = 0
        self.bad_5xx = Counter()  # (kind, status) -> n, outside the gap (or not 503)
        self.unexpected = Counter()  # (kind, status) -> n, outside the gap
        self.transport = Counter()  # kind -> n, outside the gap
        self.in_gap_other = Counter()  # (kind, status) -> n: refusals inside the gap
        self.examples = []
        self.cycles = 0
        self.revocation_checks = 0
        self.revocation_failures = 0

    def note(self, kind, status, t0, t1, expected, detail=""):
        """Records one answer; True when it is the expected one."""
        in_gap = self.gap.covers(t0, t1)
        with self.lock:
            self.counts[(kind, status)] += 1
            if status == expected:
                return True
            if status is None:
                if in_gap:
                    self.in_gap_other[(kind, "transport")] += 1
                else:
                    self.transport[kind] += 1
                    self.example(f"{kind}: transport error {detail}")
            elif status >= 500:
                if status == 503 and in_gap:
                    self.gap_503 += 1
                else:
                    self.bad_5xx[(kind, status)] += 1
                    self.example(f"{kind}: {status} {detail}")
            elif in_gap:
                self.in_gap_other[(kind, status)] += 1
            else:
                self.unexpected[(kind, status)] += 1
                self.example(f"{kind}: {status} (expected {expected}) {detail}")
            return False

    def example(self, line):
        if len(self.examples) < 20:
            self.examples.append(f"{time.strftime('%H:%M:%S')} {line[:300]}")


class Client:
    """Keep-alive HTTP/1.1 connections to each gateway, one set per thread."""

    def __init__(self, urls, timeout=15):
        self.urls = urls
        self.timeout = timeout
        self.conns = {}

    def request(self, gw, method, path, body=None, headers=None):
        """(status, headers, body); status None on a transport error (detail in body)."""
        url = urlsplit(self.urls[gw])
        h = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        for attempt in (0, 1):
            conn = self.conns.get(gw)
            fresh = conn is None
            if conn is None:
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=self.timeout)
                self.conns[gw] = conn
            try:
                conn.request(method, path, body=data, headers=h)
                r = conn.getresponse()
                payload = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    self.conns.pop(gw, None)
                return r.status, r, payload
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                conn.close()
                self.conns.pop(gw, None)
                # A keep-alive connection the server closed while idle: one retry on a new one.
                if fresh or attempt == 1:
                    return None, None, repr(e)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self.conns.pop(gw, None)
                return None, None, repr(e)
        return None, None, "unreachable"


def ws_echo(url, token, xff, timeout=15):
    """A WebSocket handshake through the gateway, one echoed message, a clean close.
    (status, detail): 101 when it all worked, the refusal's status, or None."""
    u = urlsplit(url)
    key = base64.b64encode(os.urandom(16)).decode()
    try:
        s = socket.create_connection((u.hostname, u.port), timeout=timeout)
    except OSError as e:
        return None, repr(e)
    try:
        s.sendall(
            (
                f"GET /ws/echo HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {token}\r\nX-Forwarded-For: {xff}\r\n\r\n"
            ).encode()
        )
        f = s.makefile("rb")
        status_line = f.readline().decode("latin-1")
        parts = status_line.split()
        if len(parts) < 2:
            return None, f"bad status line {status_line!r}"
        status = int(parts[1])
        headers = {}
        while True:
            line = f.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if status != 101:
            return status, "handshake refused"
        want = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != want:
            return None, "wrong Sec-WebSocket-Accept"
        msg = os.urandom(8).hex().encode()
        s.sendall(client_frame(0x1, msg))
        op, data = read_frame(f)
        if op != 0x1 or data != msg:
            return None, f"echo mismatch (opcode {op})"
        s.sendall(client_frame(0x8, struct.pack("!H", 1000)))
        op, _ = read_frame(f)
        if op != 0x8:
            return None, f"no close answer (opcode {op})"
        return 101, ""
    except (OSError, EOFError, ValueError) as e:
        return None, repr(e)
    finally:
        s.close()


def client_frame(opcode, payload):
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    assert n < 126
    return struct.pack("!BB", 0x80 | opcode, 0x80 | n) + mask + masked


def read_frame(f):
    head = f.read(2)
    if len(head) < 2:
        raise EOFError
    n = head[1] & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", f.read(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", f.read(8))
    data = f.read(n)
    if len(data) < n:
        raise EOFError
    return head[0] & 0x0F, data


def login(client, stats, gw, user, password, platform, xff):
    t0 = now()
    status, _, body = client.request(
        gw,
        "POST",
        "/auth/login",
        {"username": user, "password": password},
        {"X-Platform": platform, "X-Forwarded-For": xff},
    )
    if stats.note("login", status, t0, now(), 200, body[:120] if status else body):
        return json.loads(body)
    return None


def refresh(client, stats, gw, pair, xff):
    """The new pair, or None. A 503 leaves the old token good (the contract): retried."""
    deadline = now() + 60
    while True:
        t0 = now()
        status, _, body = client.request(
            gw, "POST", "/auth/refresh", {"refresh_token": pair["refresh_token"]},
            {"X-Forwarded-For": xff},
        )
        if stats.note("refresh", status, t0, now(), 200, body[:120] if status else body):
            new = json.loads(body)
            if new["session_id"] != pair["session_id"]:
                stats.note("refresh_same_session", 0, t0, now(), 1, "a refresh changed the session id")
            return new
        if status == 503 and now() < deadline:
            time.sleep(0.2)
            continue
        return None


def call(client, stats, gw, token, xff, i):
    t0 = now()
    status, _, body = client.request(
        gw, "GET", f"/api/items/{i}",
        headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": xff},
    )
    return stats.note("proxied", status, t0, now(), 200, body[:120] if status else body)


def worker(idx, args, stats, stop):
    client = Client(args.gw)
    user, xff = f"soak{idx}", f"10.80.{idx // 250}.{idx % 250 + 1}"
    rng = random.Random(idx)
    while not stop.is_set():
        a = rng.randrange(2)
        b = 1 - a
        pair = login(client, stats, a, user, args.password, "web", xff)
        if pair is None:
            time.sleep(0.2)
            continue
        for i in range(CALLS):
            call(client, stats, (a + i) % 2, pair["access_token"], xff, i)
        new = refresh(client, stats, b, pair, xff)
        if new is not None:
            pair = new
        t0 = now()
        status, detail = ws_echo(args.gw[a], pair["access_token"], xff)
        stats.note("websocket", status, t0, now(), 101, detail)
        for i in range(CALLS):
            call(client, stats, (b + i) % 2, pair["access_token"], xff, i)
        # Logout until it is done: a 503 in the Redis gap ended nothing, so it is retried.
        deadline = now() + 60
        while True:
            t0 = now()
            status, _, body = client.request(
                b, "POST", "/auth/logout",
                headers={"Authorization": f"Bearer {pair['access_token']}", "X-Forwarded-For": xff},
            )
            ok = stats.note("logout", status, t0, now(), 204, body[:120] if status else body)
            if ok or status != 503 or now() > deadline:
                break
            time.sleep(0.2)
        if ok:
            # The other instance refuses the ended session (polled: a local cache may take
            # a moment to hear of it).
            deadline = now() + 2
            with stats.lock:
                stats.revocation_checks += 1
            while True:
                status, _, _ = client.request(
                    a, "GET", "/api/after-logout",
                    headers={"Authorization": f"Bearer {pair['access_token']}", "X-Forwarded-For": xff},
                )
                if status == 401 or now() > deadline or stop.is_set():
                    break
                time.sleep(0.05)
            if status != 401 and not stats.gap.covers(t0, now()):
                with stats.lock:
                    stats.revocation_failures += 1
                    stats.example(f"after logout the other instance answered {status}, not 401")
        with stats.lock:
            stats.cycles += 1


def read_proc(pid):
    rss = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def sampler(args, samples, stop, t_start, interval):
    while True:
        t = now() - t_start
        row = {"t": round(t, 1)}
        for i, pid in enumerate(args.pids):
            try:
                row[f"rss{i}"], row[f"fds{i}"] = read_proc(pid)
            except OSError:
                row[f"rss{i}"], row[f"fds{i}"] = None, None
        samples.append(row)
        if stop.wait(interval):
            return


def wait_ready(args, deadline):
    """Both instances' /readyz 200 (the store reachable again)."""
    ready = [False] * len(args.admin)
    while not all(ready) and now() < deadline:
        for i, url in enumerate(args.admin):
            if ready[i]:
                continue
            u = urlsplit(url)
            try:
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
                c.request("GET", "/readyz")
                ready[i] = c.getresponse().status == 200
                c.close()
            except OSError:
                pass
        if not all(ready):
            time.sleep(0.1)
    return all(ready)


def redis_pid(args):
    try:
        with open(args.redis_pidfile) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def restart_redis(args, gap):
    """SIGKILL, GAP seconds down, started again on the same files; True when both instances
    are ready again."""
    pid = redis_pid(args)
    if pid is None:
        raise SystemExit("no redis-server pid file")
    gap.start = now()
    os.kill(pid, signal.SIGKILL)
    while True:  # its port is free once the process is gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    try:
        os.unlink(args.redis_pidfile)
    except OSError:
        pass
    time.sleep(args.gap)
    subprocess.run(["redis-server", args.redis_conf], check=True)
    ok = wait_ready(args, now() + 60)
    gap.end = now()
    return ok


def make_keepers(args, stats, count):
    """Sessions created (and checked) before the restart, spread over both instances."""
    client = Client(args.gw)
    keepers = []
    for i in range(count):
        xff = f"10.81.0.{i % 250 + 1}"
        pair = login(client, stats, i % 2, f"keeper{i}", args.password, "app", xff)
        if pair and call(client, stats, (i + 1) % 2, pair["access_token"], xff, 0):
            keepers.append((pair, xff))
    return keepers


def check_keepers(args, stats, keepers):
    """How many keepers were lost: a proxied GET on both instances and a refresh, each 200."""
    client = Client(args.gw)
    lost = []
    for pair, xff in keepers:
        ok = True
        for gw in (0, 1):
            t0 = now()
            status, _, body = client.request(
                gw, "GET", "/api/keeper",
                headers={"Authorization": f"Bearer {pair['access_token']}", "X-Forwarded-For": xff},
            )
            ok &= stats.note("keeper_call", status, t0, now(), 200, body[:120] if status else body)
        ok &= refresh(client, stats, 1, pair, xff) is not None
        if not ok:
            lost.append(pair["session_id"])
    return lost


def flat(samples, key, warmup):
    vals = [(s["t"], s[key]) for s in samples if s["t"] >= warmup and s.get(key) is not None]
    if len(vals) < 10:
        return None
    k = max(3, len(vals) // 5)
    start = statistics.median(v for _, v in vals[:k])
    end = statistics.median(v for _, v in vals[-k:])
    ratio = end / start if start else float("inf")
    return {
        "start": start,
        "end": end,
        "min": min(v for _, v in vals),
        "max": max(v for _, v in vals),
        "change_pct": round((ratio - 1) * 100, 1),
        "pass": abs(ratio - 1) <= 0.10,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gw", required=True, help="the two gateways' base URLs, comma-separated")
    p.add_argument("--admin", required=True, help="their admin URLs, comma-separated")
    p.add_argument("--pids", required=True, help="their pids, comma-separated")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--keepers", type=int, default=40)
    p.add_argument("--gap", type=float, default=5)
    p.add_argument("--password", required=True)
    p.add_argument("--redis-conf", required=True)
    p.add_argument("--redis-pidfile", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    args.gw = args.gw.split(",")
    args.admin = args.admin.split(",")
    args.pids = [int(x) for x in args.pids.split(",")]

    duration = args.minutes * 60
    warmup = duration / 4
    interval = max(1.0, min(5.0, duration / 60))
    gap = Gap()
    stats = Stats(gap)
    stop = threading.Event()
    samples = []
    t_start = now()
    threads = [threading.Thread(target=sampler, args=(args, samples, stop, t_start, interval), daemon=True)]
    threads += [
        threading.Thread(target=worker, args=(i, args, stats, stop), daemon=True)
        for i in range(args.workers)
    ]
    for t in threads:
        t.start()

    def at(fraction):
        left = t_start + duration * fraction - now()
        if left > 0:
            stop.wait(left)

    at(0.45)
    keepers = make_keepers(args, stats, args.keepers)
    print(f"[soak] {len(keepers)} keeper sessions created and checked", flush=True)
    at(0.5)
    print("[soak] redis-server: SIGKILL, restart", flush=True)
    ready = restart_redis(args, gap)
    print(f"[soak] redis back, both instances ready: {ready} ({gap.end - gap.start:.1f} s gap)", flush=True)
    lost = check_keepers(args, stats, keepers)
    at(1.0)
    stop.set()
    for t in threads[1:]:
        t.join(timeout=90)

    result = {
        "minutes": args.minutes,
        "workers": args.workers,
        "cycles": stats.cycles,
        "requests": sum(stats.counts.values()),
        "answers": {f"{k} {s}": n for (k, s), n in sorted(stats.counts.items(), key=str)},
        "gap_seconds": round(gap.end - gap.start, 1),
        "gap_ready": ready,
        "gap_503": stats.gap_503,
        "gap_other": {f"{k} {s}": n for (k, s), n in stats.in_gap_other.items()},
        "bad_5xx": {f"{k} {s}": n for (k, s), n in stats.bad_5xx.items()},
        "unexpected": {f"{k} {s}": n for (k, s), n in stats.unexpected.items()},
        "transport_errors": dict(stats.transport),
        "revocation_checks": stats.revocation_checks,
        "revocation_failures": stats.revocation_failures,
        "keepers": len(keepers),
        "keepers_requested": args.keepers,
        "keepers_lost": lost,
        "warmup_seconds": warmup,
        "sample_interval": interval,
        "flat": {},
        "examples": stats.examples,
        "samples": samples,
    }
    for i in range(len(args.pids)):
        for what in ("rss", "fds"):
            result["flat"][f"{what}{i}"] = flat(samples, f"{what}{i}", warmup)
    checks = {
        "rss_flat": all(result["flat"][f"rss{i}"] and result["flat"][f"rss{i}"]["pass"] for i in range(len(args.pids))),
        "fds_flat": all(result["flat"][f"fds{i}"] and result["flat"][f"fds{i}"]["pass"] for i in range(len(args.pids))),
        "no_5xx_outside_gap": not stats.bad_5xx,
        "no_unexpected_outside_gap": not stats.unexpected and not stats.transport and not stats.revocation_failures,
        "no_session_lost": ready and not lost and len(keepers) == args.keepers,
    }
    result["checks"] = checks
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)

    ok = lambda b: "PASS" if b else "FAIL"
    print()
    print(f"soak: {args.minutes:g} min, {args.workers} workers, {stats.cycles} session cycles, "
          f"{result['requests']} requests on 2 instances")
    for i, pid in enumerate(args.pids):
        r, d = result["flat"][f"rss{i}"], result["flat"][f"fds{i}"]
        if r and d:
            print(f"  instance {i + 1} (pid {pid}): RSS {r['start'] / 1024:.1f} -> {r['end'] / 1024:.1f} MiB "
                  f"({r['change_pct']:+.1f}%, range {r['min'] / 1024:.1f}-{r['max'] / 1024:.1f}); "
                  f"fds {d['start']:g} -> {d['end']:g} ({d['change_pct']:+.1f}%, range {d['min']}-{d['max']})")
        else:
            print(f"  instance {i + 1} (pid {pid}): too few samples")
    print(f"  [{ok(checks['rss_flat'])}] RSS flat within 10% after the {warmup:.0f} s warm-up")
    print(f"  [{ok(checks['fds_flat'])}] open fds flat within 10% after the warm-up")
    print(f"  [{ok(checks['no_5xx_outside_gap'])}] 5xx other than the gap's 503s: "
          f"{sum(stats.bad_5xx.values())} {dict(result['bad_5xx']) or ''} "
          f"(503s in the {result['gap_seconds']} s Redis gap: {stats.gap_503})")
    print(f"  [{ok(checks['no_unexpected_outside_gap'])}] unexpected answers outside the gap: "
          f"{sum(stats.unexpected.values())} {result['unexpected'] or ''}, transport errors "
          f"{sum(stats.transport.values())}, logouts not seen by the other instance "
          f"{stats.revocation_failures}/{stats.revocation_checks}")
    print(f"  [{ok(checks['no_session_lost'])}] sessions acknowledged before the Redis restart "
          f"still work after it: {len(keepers) - len(lost)}/{args.keepers}")
    for line in stats.examples:
        print(f"    e.g. {line}")
    print("soak:", "PASS" if all(checks.values()) else "FAIL")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
