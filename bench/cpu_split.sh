#!/usr/bin/env bash
# User and kernel CPU time per request: authgate on a public route (case d) against nginx as
# a keep-alive reverse proxy (case b), and the upstream nginx's own time behind each.
#
#   SKIP_BUILD=1 bash bench/cpu_split.sh
#   ROUNDS=3 DURATION=10 bash bench/cpu_split.sh
#
# Same placement as bench/run.sh (proxy on CPU 0; wrk and the upstream on CPU 1). For each
# round and proxy, reads utime and stime from /proc/PID/stat before and after a wrk run and
# divides by the requests wrk completed. Environment: ROUNDS (2), DURATION (8), SKIP_BUILD=1.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-8}"
ensure_tools wrk:wrk nginx:nginx-light taskset:util-linux curl:curl
init_tmp
if ! build_authgate; then
    echo "SKIPPED: authgate cannot be built: $BUILD_FAILURE"
    exit 0
fi

read -r UP_PORT GW_PORT GW_ADMIN NG_PORT <<<"$(free_ports 4)"
start_upstream "$UP_PORT"
UP_WORKER="$(pgrep -P "$UP_PID" | head -n 1)"
write_authgate_config "$TMP_DIR/gw.toml" "$GW_PORT" "$GW_ADMIN" "$UP_PORT" stateless memory none
start_authgate authgate "$TMP_DIR/gw.toml" "$GW_PORT" || die "$START_FAILURE"
mkdir -p "$TMP_DIR/nginx-proxy-body" "$TMP_DIR/nginx-proxy-tmp"
render "$BENCH_DIR/conf/nginx-proxy.conf" "$TMP_DIR/nginx-proxy.conf" \
    TMP="$TMP_DIR" UP_PORT="$UP_PORT" B_PORT="$NG_PORT"
start_bg nginx-proxy 0 nginx -e "$TMP_DIR/nginx-proxy.err" -p "$TMP_DIR" -c "$TMP_DIR/nginx-proxy.conf"
wait_http "http://127.0.0.1:$NG_PORT/" "$LAST_PID" || die "nginx proxy did not start"
NG_WORKER="$(pgrep -P "$LAST_PID" | head -n 1)"

ticks() { awk '{print $14, $15}' "/proc/$1/stat"; } # utime stime, in clock ticks
HZ="$(getconf CLK_TCK)"

echo "| round | proxy | req/s | proxy user µs/req | proxy kernel µs/req | kernel share | upstream user µs/req | upstream kernel µs/req |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$ROUNDS"); do
    for target in "authgate $GW_PID $GW_PORT" "nginx $NG_WORKER $NG_PORT"; do
        read -r name pid port <<<"$target"
        read -r u0 s0 <<<"$(ticks "$pid")"
        read -r uu0 us0 <<<"$(ticks "$UP_WORKER")"
        taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" "http://127.0.0.1:$port/public/bench" >"$TMP_DIR/$name.wrk"
        read -r u1 s1 <<<"$(ticks "$pid")"
        read -r uu1 us1 <<<"$(ticks "$UP_WORKER")"
        n="$(awk '/requests in/ {print $1}' "$TMP_DIR/$name.wrk")"
        awk -v r="$round" -v name="$name" -v n="$n" -v d="$DURATION" -v hz="$HZ" \
            -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v uu=$((uu1 - uu0)) -v us=$((us1 - us0)) \
            'BEGIN { k = 1e6 / hz / n;
                     printf "| %d | %s | %.0f | %.2f | %.2f | %.0f%% | %.2f | %.2f |\n",
                            r, name, n / d, u * k, s * k, 100 * s / (u + s), uu * k, us * k }'
    done
done
