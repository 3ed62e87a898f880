#!/usr/bin/env bash
# Gateway memory per idle keep-alive client connection (issue 2 target: <= 16 KiB).
#
#   bash bench/idle_rss.sh                    # authgate, 5,000 connections
#   CONNS=10000 bash bench/idle_rss.sh
#   TARGET=nginx bash bench/idle_rss.sh       # the same measurement of nginx (b), for reference
#
# Starts the nginx upstream (CPU 1) and the gateway (CPU 0, stateless config of run.sh),
# warms the gateway up, reads VmRSS from /proc/PID/status, opens CONNS connections with
# bench/idle_clients.py (CPU 1; each sends one GET /public/bench and then idles; at most
# BATCH requests in flight so the upstream pool stays small), reads VmRSS again and prints
# (after - before) / CONNS. The gateway's default idle_timeout is 60 s, far longer than this.
#
# Environment: CONNS (5000), BATCH (50), TARGET (authgate | nginx | haproxy),
# SKIP_BUILD=1, KEEP_TMP=1.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNS="${CONNS:-5000}"
BATCH="${BATCH:-50}"
TARGET="${TARGET:-authgate}"
[[ "$CONNS" =~ ^[0-9]+$ && "$CONNS" -ge 100 ]] || die "CONNS must be a number >= 100"
[[ "$BATCH" =~ ^[0-9]+$ && "$BATCH" -ge 1 ]] || die "BATCH must be a number >= 1"

ensure_tools nginx:nginx-light haproxy:haproxy taskset:util-linux curl:curl python3:python3 ss:iproute2
# CONNS client sockets here, as many in the gateway, plus its upstream pool.
# (HAProxy's maxconn 8000 in conf/haproxy.cfg wants about 16,100 itself.)
want_fds=$((CONNS * 2 + 4096))
[ "$want_fds" -ge 20000 ] || want_fds=20000
raise_nofile "$want_fds"
[ "$(ulimit -n)" -ge $((CONNS + 1024)) ] || die "fd limit $(ulimit -n) is too low for $CONNS connections"
init_tmp

read -r UP_PORT GW_PORT GW_ADMIN <<<"$(free_ports 3)"
start_upstream "$UP_PORT"

case "$TARGET" in
    authgate)
        if ! build_authgate; then
            echo "SKIPPED: authgate cannot be built: $BUILD_FAILURE"
            exit 0
        fi
        write_authgate_config "$TMP_DIR/authgate.toml" "$GW_PORT" "$GW_ADMIN" "$UP_PORT" stateless memory none
        if ! start_authgate authgate "$TMP_DIR/authgate.toml" "$GW_PORT"; then
            echo "SKIPPED: $START_FAILURE"
            exit 0
        fi
        PID=$GW_PID
        ;;
    nginx)
        mkdir -p "$TMP_DIR/nginx-proxy-body" "$TMP_DIR/nginx-proxy-tmp"
        render "$BENCH_DIR/conf/nginx-proxy.conf" "$TMP_DIR/nginx-proxy.conf" \
            TMP="$TMP_DIR" UP_PORT="$UP_PORT" B_PORT="$GW_PORT"
        start_bg nginx-proxy 0 nginx -e "$TMP_DIR/nginx-proxy.err" -p "$TMP_DIR" -c "$TMP_DIR/nginx-proxy.conf"
        wait_http "http://127.0.0.1:$GW_PORT/" "$LAST_PID" || die "nginx proxy did not start"
        # RSS of the one worker (the master holds no connections).
        PID="$(pgrep -P "$LAST_PID" | head -n 1)"
        ;;
    haproxy)
        render "$BENCH_DIR/conf/haproxy.cfg" "$TMP_DIR/haproxy.cfg" \
            TMP="$TMP_DIR" UP_PORT="$UP_PORT" C_PORT="$GW_PORT" SECRET="$BENCH_SECRET"
        # The JWT frontend answers 401 without a token; route the idle clients' GET through
        # a copy of the config without the auth rules.
        sed -i '/http-request /d' "$TMP_DIR/haproxy.cfg"
        start_bg haproxy 0 haproxy -db -f "$TMP_DIR/haproxy.cfg"
        PID=$LAST_PID
        wait_http "http://127.0.0.1:$GW_PORT/" "$PID" || die "haproxy did not start"
        ;;
    *) die "TARGET must be authgate, nginx or haproxy" ;;
esac

code="$(http_code "http://127.0.0.1:$GW_PORT/public/bench")"
if [ "$code" != 200 ]; then
    echo "SKIPPED: $TARGET answers $code on /public/bench, not 200"
    exit 0
fi

rss_kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

clients() { # clients COUNT HOLD READY_FILE: idle_clients.py on CPU 1, in the background
    rm -f "$3"
    taskset -c 1 python3 "$BENCH_DIR/idle_clients.py" 127.0.0.1 "$GW_PORT" "$1" "$BATCH" \
        /public/bench "$3" "$2" >"$TMP_DIR/clients.log" 2>&1 &
    CLIENT_PID=$!
    BG_PIDS+=("$CLIENT_PID")
    for _ in $(seq 1 1200); do # up to 120 s
        [ -f "$3" ] && return 0
        kill -0 "$CLIENT_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$TMP_DIR/clients.log" >&2
    die "the idle clients did not get ready"
}

# Warm-up: a first wave of connections, closed again, so allocator pools, the upstream
# pool and lazily built state exist before the baseline.
clients 500 0 "$TMP_DIR/warm.ready"
wait "$CLIENT_PID" || true
sleep 2

before="$(rss_kib "$PID" VmRSS)"
before_anon="$(rss_kib "$PID" RssAnon)"
clients "$CONNS" 600 "$TMP_DIR/idle.ready"
read -r _ ok failed extra <"$TMP_DIR/idle.ready" || true
sleep 2
after="$(rss_kib "$PID" VmRSS)"
after_anon="$(rss_kib "$PID" RssAnon)"
established="$(ss -Htn state established "( sport = :$GW_PORT )" | wc -l)"
kill -TERM "$CLIENT_PID" 2>/dev/null || true

per_conn="$(awk -v a="$after" -v b="$before" -v n="$ok" 'BEGIN { if (n > 0) printf "%.2f", (a - b) / n; else print "n/a" }')"
per_conn_anon="$(awk -v a="$after_anon" -v b="$before_anon" -v n="$ok" 'BEGIN { if (n > 0) printf "%.2f", (a - b) / n; else print "n/a" }')"
verdict="$(awk -v p="$per_conn" 'BEGIN { if (p + 0 <= 16) print "met (<= 16 KiB)"; else printf "MISSED by %.0f%% (target <= 16 KiB)", (p - 16) / 16 * 100 }')"

echo "## idle keep-alive connections: $TARGET"
echo
echo "Command: \`CONNS=$CONNS BATCH=$BATCH TARGET=$TARGET bash bench/idle_rss.sh\`"
echo
echo "| measure | value |"
echo "|---|---:|"
echo "| connections answered 200 and held idle | $ok (failed: $failed${extra:+; $extra}) |"
echo "| established on the gateway port (ss) | $established |"
echo "| VmRSS before / after | $before KiB / $after KiB |"
echo "| RssAnon before / after | $before_anon KiB / $after_anon KiB |"
echo "| **KiB per idle connection (VmRSS)** | **$per_conn** |"
echo "| KiB per idle connection (RssAnon) | $per_conn_anon |"
echo
if [ "$TARGET" = authgate ]; then echo "Target: $verdict"; fi
if [ "$failed" != 0 ]; then echo "WARNING: $failed connections failed; the figure is per answered connection."; fi
