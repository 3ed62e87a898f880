#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind (repeatable whatever else
# the machine is doing, unlike req/s): the gateway runs under callgrind on CPU 0 (one CPU, so
# the current-thread runtime, as in bench/run.sh), wrk drives it from CPU 1 for DURATION
# seconds, and the total is divided by the requests wrk counted. Start-up (config, metrics
# recorder, ~26M instructions) is included, so use runs of similar length to compare builds.
#
#   bash bench/callgrind.sh            # case (d): public route
#   CASE=e bash bench/callgrind.sh     # case (e): required route, stateless HS256
#   CASE=e ACCESS=off bash bench/callgrind.sh   # the same with `[log] access = false`
#   CASE=i bash bench/callgrind.sh     # case (i): (e) with the token in the [browser] access
#                                      # cookie (bench/run.sh's (i) gateway: users file, [browser])
#   callgrind_annotate --inclusive=yes "$OUT"   # where the instructions go
#
# Environment: CASE (d | e | i), ACCESS (on | off: the access log, on), DURATION (10), OUT (callgrind output file,
# /tmp/authgate-callgrind.CASE.out), SKIP_BUILD=1, AUTHGATE_BIN.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CASE="${CASE:-d}"
DURATION="${DURATION:-10}"
OUT="${OUT:-/tmp/authgate-callgrind.$CASE.out}"
case "$CASE" in
    d) path="public/bench" ;;
    e | i) path="api/bench" ;;
    *) die "CASE must be d, e or i" ;;
esac

ensure_tools wrk:wrk nginx:nginx-light valgrind:valgrind taskset:util-linux curl:curl python3:python3
raise_nofile 20000
init_tmp
build_authgate || die "$BUILD_FAILURE"
read -r UP_PORT PORT ADMIN <<<"$(free_ports 3)"
start_upstream "$UP_PORT"
if [ "$CASE" = i ]; then
    make_users_file "$TMP_DIR/users.toml" || die "\`authgate hash-password\` did not print a hash"
    write_authgate_config "$TMP_DIR/gw.toml" "$PORT" "$ADMIN" "$UP_PORT" stateless memory users_file "$TMP_DIR/users.toml"
    sed -i 's|^admin_listen = .*|&\ntrusted_proxies = ["127.0.0.1/32"]|' "$TMP_DIR/gw.toml"
    printf '\n[login.captcha]\nmode = "after_failures"\n\n[browser]\nenabled = true\ninsecure_cookies = true\n' >>"$TMP_DIR/gw.toml"
else
    write_authgate_config "$TMP_DIR/gw.toml" "$PORT" "$ADMIN" "$UP_PORT" stateless memory none
fi
case "${ACCESS:-on}" in
    on) ;;
    off) printf '\n[log]\naccess = false\n' >>"$TMP_DIR/gw.toml" ;;
    *) die "ACCESS must be on or off" ;;
esac
start_bg callgrind 0 env AUTHGATE_JWT_SECRET="$BENCH_SECRET" RUST_LOG=warn \
    valgrind --tool=callgrind --callgrind-out-file="$OUT" "$AUTHGATE_BIN" run -c "$TMP_DIR/gw.toml"
pid=$LAST_PID
# Under valgrind start-up takes a few seconds.
for _ in $(seq 1 300); do
    [ "$(http_code "http://127.0.0.1:$PORT/public/bench")" = 200 ] && break
    kill -0 "$pid" 2>/dev/null || die "the gateway under valgrind exited: $(tail -n 3 "$TMP_DIR/callgrind.log")"
    sleep 0.1
done
token="$(mint "$BENCH_SECRET")"
credential="Authorization: Bearer $token"
[ "$CASE" != i ] || credential="Cookie: authgate_access=$token"
requests="$(taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" -H "$credential" \
    "http://127.0.0.1:$PORT/$path" | awk '/requests in/ {print $1}')"
kill -INT "$pid"
wait "$pid" 2>/dev/null || true
total="$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')"
[ -n "$total" ] && [ -n "$requests" ] && [ "$requests" -gt 0 ] || die "no totals (see $TMP_DIR)"
echo "case ($CASE, access log ${ACCESS:-on}): $requests requests, $total instructions, $((total / requests)) per request (start-up included)"
echo "profile: $OUT"
