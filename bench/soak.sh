#!/usr/bin/env bash
# Soak (issue 14): mixed traffic on two gateway instances that share one redis-server, with a
# Redis restart in the middle; leaks, stray 5xx and lost sessions are the failures.
#
#   bash bench/soak.sh                        # 10 minutes
#   SOAK_MINUTES=2 bash bench/soak.sh         # a quick one
#
# Starts (all on free loopback ports, niced like every bench here):
#   - redis-server with persistence (appendonly yes, appendfsync always: every acknowledged
#     write is on disk before the answer), daemonized with a pid file in the temp dir;
#   - the upstream bench/soak_upstream.py (HTTP and WebSocket echo, Python stdlib);
#   - two gateways (the release binary) on the Redis store in stateful mode, the same users
#     file (SOAK_WORKERS soak users and SOAK_KEEPERS keeper users), 127.0.0.1 trusted so each
#     simulated client has its own X-Forwarded-For address;
# then runs bench/soak.py, which drives logins, proxied calls, refreshes, WebSockets and
# logouts across both instances, SIGKILLs redis-server half-way and starts it again after
# SOAK_GAP seconds, samples both gateways' RSS and open fds, and prints the verdict (exit 1
# when a check fails):
#   - RSS and fds flat within 10% after the warm-up (the first quarter of the run);
#   - no 5xx other than the 503s of the Redis gap;
#   - no session lost that Redis persisted (sessions acknowledged before the restart work on
#     both instances after it, and refresh).
# Not in CI (it takes SOAK_MINUTES); its last result is in BENCHMARKS.md ("Soak").
#
# Environment: SOAK_MINUTES (10), SOAK_WORKERS (6 driver threads), SOAK_KEEPERS (40),
# SOAK_GAP (5 s with Redis down), SKIP_BUILD=1 (use the existing release binary),
# AUTHGATE_BIN, AUTHGATE_LOG (gateway RUST_LOG, warn), KEEP_TMP=1, OUT_DIR (copy the JSON
# result, with every sample, and the logs there).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SOAK_MINUTES="${SOAK_MINUTES:-10}"
SOAK_WORKERS="${SOAK_WORKERS:-6}"
SOAK_KEEPERS="${SOAK_KEEPERS:-40}"
SOAK_GAP="${SOAK_GAP:-5}"
[[ "$SOAK_MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SOAK_MINUTES must be a number of minutes (got '$SOAK_MINUTES')"
for v in SOAK_WORKERS SOAK_KEEPERS SOAK_GAP; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done

ensure_tools redis-server:redis-server redis-cli:redis-tools python3:python3 curl:curl
raise_nofile 20000
init_tmp
# The redis-server restarted by the driver is not one of BG_PIDS: stop it from its pid file.
stop_redis() {
    local pid
    pid="$(cat "$TMP_DIR/redis.pid" 2>/dev/null || true)"
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
}
trap 'st=$?; stop_redis; (exit "$st"); cleanup' EXIT

build_authgate || die "$BUILD_FAILURE"

read -r REDIS_PORT UP_PORT P1 A1 P2 A2 <<<"$(free_ports 6)"

# ---- redis-server, persistent --------------------------------------------------------------
mkdir -p "$TMP_DIR/redis"
cat >"$TMP_DIR/redis.conf" <<EOF
bind 127.0.0.1
port $REDIS_PORT
dir $TMP_DIR/redis
daemonize yes
pidfile $TMP_DIR/redis.pid
logfile $TMP_DIR/redis.log
appendonly yes
appendfsync always
save ""
EOF
nice -n 10 redis-server "$TMP_DIR/redis.conf"
for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping >/dev/null || die "redis-server did not start: $(tail -n 3 "$TMP_DIR/redis.log")"
log "redis-server on 127.0.0.1:$REDIS_PORT (appendonly yes, appendfsync always)"

# ---- the upstream ---------------------------------------------------------------------------
start_bg upstream 1 nice -n 10 python3 "$BENCH_DIR/soak_upstream.py" "$UP_PORT"
wait_http "http://127.0.0.1:$UP_PORT/" "$LAST_PID" || die "the soak upstream did not start"

# ---- users: one per driver thread, one per keeper session ------------------------------------
PASSWORD="soak-password-0123"
hash="$(printf '%s' "$PASSWORD" | "$AUTHGATE_BIN" hash-password | tail -n 1)"
case "$hash" in '$argon2id$'*) ;; *) die "hash-password printed no Argon2id hash" ;; esac
{
    echo "# bench/soak.sh users"
    for ((i = 0; i < SOAK_WORKERS; i++)); do
        printf '[[users]]\nid = "s%d"\nusername = "soak%d"\npassword_hash = "%s"\n\n' "$i" "$i" "$hash"
    done
    for ((i = 0; i < SOAK_KEEPERS; i++)); do
        printf '[[users]]\nid = "k%d"\nusername = "keeper%d"\npassword_hash = "%s"\n\n' "$i" "$i" "$hash"
    done
} >"$TMP_DIR/users.toml"

# ---- two gateways on the one Redis -----------------------------------------------------------
gateway_conf() { # gateway_conf DEST PORT ADMIN_PORT
    cat >"$1" <<EOF
# bench/soak.sh: one of two instances sharing redis-server
[server]
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"
trusted_proxies = ["127.0.0.1/32"]

[token]
algorithm = "HS256"
secret_env = "AUTHGATE_JWT_SECRET"
# Short-lived access tokens: the verified-token and silent-refresh caches hold an entry per
# token until it expires, so they reach their steady size within the warm-up.
access_ttl = "2m"
silent_refresh_window = "30s"

[session]
store = "redis"
mode = "stateful"
redis_url = "redis://127.0.0.1:$REDIS_PORT/0"

[login]
backend = "users_file"
users_file = "$TMP_DIR/users.toml"

[log]
access = false

[[upstreams]]
name = "up"
urls = ["http://127.0.0.1:$UP_PORT"]

[[routes]]
path = "/public"
auth = "public"
upstream = "up"

[[routes]]
path = "/"
auth = "required"
upstream = "up"
EOF
}
PIDS=()
for n in 1 2; do
    port="P$n" admin="A$n"
    gateway_conf "$TMP_DIR/gw$n.toml" "${!port}" "${!admin}"
    start_authgate "gw$n" "$TMP_DIR/gw$n.toml" "${!port}" || die "$START_FAILURE"
    renice -n 10 -p "$GW_PID" >/dev/null
    PIDS+=("$GW_PID")
    log "gateway $n (pid $GW_PID) on 127.0.0.1:${!port}, admin ${!admin}"
done

# ---- the soak ------------------------------------------------------------------------------
log "soak: $SOAK_MINUTES min, $SOAK_WORKERS workers, $SOAK_KEEPERS keepers, Redis down $SOAK_GAP s half-way"
rc=0
nice -n 10 python3 "$BENCH_DIR/soak.py" \
    --gw "http://127.0.0.1:$P1,http://127.0.0.1:$P2" \
    --admin "http://127.0.0.1:$A1,http://127.0.0.1:$A2" \
    --pids "${PIDS[0]},${PIDS[1]}" \
    --minutes "$SOAK_MINUTES" --workers "$SOAK_WORKERS" --keepers "$SOAK_KEEPERS" --gap "$SOAK_GAP" \
    --password "$PASSWORD" \
    --redis-conf "$TMP_DIR/redis.conf" --redis-pidfile "$TMP_DIR/redis.pid" \
    --out "$TMP_DIR/soak.json" || rc=$?
for n in 1 2; do
    if ! kill -0 "${PIDS[$((n - 1))]}" 2>/dev/null; then
        log "gateway $n died during the soak: $(tail -n 5 "$TMP_DIR/gw$n.log" | tr '\n' ' ')"
        rc=1
    fi
    if grep -q panicked "$TMP_DIR/gw$n.log"; then
        log "gateway $n panicked: $(grep -m 3 panicked "$TMP_DIR/gw$n.log" | tr '\n' ' ')"
        rc=1
    fi
done
if [ -n "${OUT_DIR:-}" ]; then
    mkdir -p "$OUT_DIR"
    cp "$TMP_DIR/soak.json" "$TMP_DIR"/gw*.log "$TMP_DIR/redis.log" "$OUT_DIR/" 2>/dev/null || true
    log "results copied to $OUT_DIR"
fi
exit "$rc"
