#!/usr/bin/env bash
# Revocation propagation between two authgate processes sharing one redis-server, and the
# Redis commands a proxied request costs in steady state (issue 14).
#
#   bash bench/propagation.sh                  # 300 logouts (~1 min with a release build)
#   ROUNDS=50 SKIP_BUILD=1 bash bench/propagation.sh
#   AUTHGATE_BIN=target/debug/authgate SKIP_BUILD=1 bash bench/propagation.sh
#
# Two gateways, A and B, with the default `[session] local_cache` on, in front of a
# `python3 -m http.server` upstream, on one redis-server. Each round: log in on A, send
# requests on B until one passes (B has the session in its local cache now), log out on A,
# then send requests on B back to back until B refuses (401); the time from A's logout answer
# to B's first refusal is one sample (what a user sees: logged out here, refused there). Prints
# p50/p90/p99/max over the rounds, and then the Redis commands per proxied request on B over
# a burst of requests (`INFO commandstats` before and after; the subscriber's PING and our INFO
# excluded). Light: one connection each, no load; not part of `bench/run.sh`.
#
# Environment: ROUNDS (300), BURST (requests for the command count, 5000), SKIP_BUILD=1 (use
# $AUTHGATE_BIN as is), AUTHGATE_BIN (default $CARGO_TARGET_DIR/release/authgate),
# KEEP_TMP=1.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-300}"
BURST="${BURST:-5000}"
for v in ROUNDS BURST; do
    [[ "${!v}" =~ ^[0-9]+$ ]] && [ "${!v}" -ge 1 ] || die "$v must be a whole number >= 1"
done
ensure_tools redis-server:redis-server taskset:util-linux curl:curl python3:python3
init_tmp
build_authgate || die "$BUILD_FAILURE"

read -r REDIS_PORT UP_PORT A_PORT A_ADMIN B_PORT B_ADMIN <<<"$(free_ports 6)"
start_bg redis 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
for _ in $(seq 1 100); do
    [ "$(redis-cli -p "$REDIS_PORT" PING 2>/dev/null)" = PONG ] && break
    sleep 0.1
done
[ "$(redis-cli -p "$REDIS_PORT" PING 2>/dev/null)" = PONG ] || die "redis-server did not start"
mkdir -p "$TMP_DIR/www"
echo ok >"$TMP_DIR/www/index.html"
start_bg upstream 1 python3 -m http.server --bind 127.0.0.1 --directory "$TMP_DIR/www" "$UP_PORT"
wait_http "http://127.0.0.1:$UP_PORT/" "$LAST_PID" || die "the upstream did not start"

make_users_file "$TMP_DIR/users.toml" || die "authgate hash-password failed"
write_authgate_config "$TMP_DIR/a.toml" "$A_PORT" "$A_ADMIN" "$UP_PORT" stateful redis users_file \
    "$TMP_DIR/users.toml" "$REDIS_PORT"
write_authgate_config "$TMP_DIR/b.toml" "$B_PORT" "$B_ADMIN" "$UP_PORT" stateful redis users_file \
    "$TMP_DIR/users.toml" "$REDIS_PORT"
start_authgate gw-a "$TMP_DIR/a.toml" "$A_PORT" || die "$START_FAILURE"
start_authgate gw-b "$TMP_DIR/b.toml" "$B_PORT" || die "$START_FAILURE"
log "A on :$A_PORT, B on :$B_PORT, redis-server on :$REDIS_PORT; $ROUNDS rounds"

python3 - "$A_PORT" "$B_PORT" "$REDIS_PORT" "$ROUNDS" "$BURST" "$BENCH_PASSWORD" <<'PY'
import http.client, json, socket, sys, time

a_port, b_port, redis_port, rounds, burst = map(int, sys.argv[1:6])
password = sys.argv[6]

def conn(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c

class Conn:
    """A kept-alive connection, opened again when the gateway has closed it (a 429 or an
    error answer may come with `Connection: close`)."""
    def __init__(self, port):
        self.port, self.c = port, conn(port)

    def call(self, method, path, token=None, body=None, headers=None):
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        for attempt in (0, 1):
            try:
                self.c.request(method, path, body=body, headers=h)
                r = self.c.getresponse()
                data = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.c.close()
                    self.c = conn(self.port)
                return r.status, data
            except (http.client.HTTPException, OSError):
                if attempt:
                    raise
                self.c.close()
                self.c = conn(self.port)

def call(c, *args, **kwargs):
    return c.call(*args, **kwargs)

def redis(*args):
    s = socket.create_connection(("127.0.0.1", redis_port))
    s.sendall(("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a), a) for a in args)).encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        data += chunk
        head, _, rest = data.partition(b"\r\n")
        if head.startswith(b"$") and len(rest) >= int(head[1:]):
            return rest[: int(head[1:])].decode()
        if not chunk:
            raise SystemExit("redis: connection closed")

def commands():
    total = 0
    for line in redis("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_") and not line.startswith(("cmdstat_info:", "cmdstat_ping:")):
            total += int(line.split("calls=")[1].split(",")[0])
    return total

A, B = Conn(a_port), Conn(b_port)
login_body = json.dumps({"username": "bench", "password": password})

def login():
    while True:
        status, body = call(A, "POST", "/auth/login", body=login_body,
                            headers={"Content-Type": "application/json", "X-Platform": "web"})
        if status == 200:
            return json.loads(body)["access_token"]
        if status == 429:  # the per-IP login flood guard: 20 a second
            time.sleep(0.06)
            continue
        raise SystemExit("login answered %d: %r" % (status, body[:200]))

samples, polls = [], []
for i in range(rounds):
    token = login()
    for _ in range(1000):
        status, _ = call(B, "GET", "/", token)
        if status == 200:
            break
    else:
        raise SystemExit("B never passed the new session")
    status, body = call(A, "POST", "/auth/logout", token)
    done = time.perf_counter()
    if status != 204:
        raise SystemExit("logout answered %d: %r" % (status, body[:200]))
    n = 0
    while True:
        status, _ = call(B, "GET", "/", token)
        n += 1
        if status == 401:
            samples.append((time.perf_counter() - done) * 1000)
            polls.append(n)
            break
        if status != 200 or time.perf_counter() - done > 5:
            raise SystemExit("B answered %d, %.0f ms after the logout" % (status, (time.perf_counter() - done) * 1000))

samples.sort()
def pct(p):
    return samples[min(len(samples) - 1, int(round(p / 100 * (len(samples) - 1))))]
passed_after = sum(1 for n in polls if n > 1)
print("revocation propagation A -> B (logout answered on A -> first 401 on B), %d rounds:" % len(samples))
print("  p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms" % (pct(50), pct(90), pct(99), samples[-1]))
print("  B still passed the token after A's logout answer in %d of %d rounds (at most %d times)"
      % (passed_after, len(samples), max(polls) - 1))

token = login()
call(B, "GET", "/", token)
before = commands()
for _ in range(burst):
    status, _ = call(B, "GET", "/", token)
    if status != 200:
        raise SystemExit("burst: B answered %d" % status)
after = commands()
print("Redis commands per proxied request in steady state: %d commands / %d requests = %g"
      % (after - before, burst, (after - before) / burst))
PY
