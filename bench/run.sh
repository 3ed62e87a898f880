#!/usr/bin/env bash
# authgate throughput and tail latency against nginx and HAProxy (issues 2 and 3).
#
#   bash bench/run.sh                         # 3 rounds x 10 s per case (~5 min)
#   DURATION=3 ROUNDS=1 bash bench/run.sh     # quick look
#   CASES="a b c" bash bench/run.sh           # a subset
#
# Cases, each measured with wrk (64 connections, --latency) on CPU 1, the proxy under test
# pinned to CPU 0, the upstream (and redis-server) on CPU 1:
#   (a) nginx direct: one worker, `return 200` with a small JSON body
#   (b) nginx, one worker, keep-alive reverse proxy to (a)
#   (c) HAProxy 2.6, nbthread 1: jwt_verify HS256 + exp check + 2 set-header, then (a)
#   (d) authgate public route            (e) authgate required route, stateless HS256
#   (f) authgate required, stateful, memory store
#   (g) authgate required, stateful, Redis store
#   (h) authgate required, stateless, an RS256 token of a [[token.issuers]] entry whose
#       discovery and JWKS python3 -m http.server serves locally (on CPU 1)
#   (i) authgate required, stateless HS256, the token in the [browser] access cookie
#       (`Cookie: authgate_access=...`) instead of the bearer header (issue 11)
#   (j) authgate's built-in login page (GET /auth/login, [browser] on; no captcha asked)
#   (k) authgate GET /auth/captcha: a PNG challenge drawn and kept in the memory store; wrk
#       sends each request from another X-Forwarded-For address (127.0.0.1 is a trusted
#       proxy there) so the 10-a-second-per-IP captcha rate does not refuse them
#   (l) (e) with the access log off (`[log] access = false`); (e) has it on, the default
#       (issue 12: on must reach 0.95x off)
# Rounds are round-robin over the cases (a b c ... g, a b c ... g, ...); the table shows
# medians over rounds. A case whose preconditions fail prints "SKIPPED: reason" and the
# run goes on.
#
# Environment: DURATION (s per case per round, 10), ROUNDS (3), CONNECTIONS (64),
# WRK_THREADS (1), WARMUP (s per case before round 1, 2), CASES ("a b c d e f g h i j k l"),
# IDLE_WAIT (before each run, wait up to this many s for CPUs 0/1 to be under 10% busy
# with other work, 30; the load seen is recorded and shown in the table),
# SKIP_BUILD=1 (use the existing release binary), AUTHGATE_LOG (gateway RUST_LOG, warn),
# KEEP_TMP=1 (keep configs and raw wrk output), OUT_DIR (copy raw output and table there).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-10}"
DURATION="${DURATION%s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64}"
WRK_THREADS="${WRK_THREADS:-1}"
WARMUP="${WARMUP:-2}"
WARMUP="${WARMUP%s}"
IDLE_WAIT="${IDLE_WAIT:-30}"
CASES="${CASES:-a b c d e f g h i j k l}"
for v in DURATION ROUNDS CONNECTIONS WRK_THREADS WARMUP IDLE_WAIT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
[ "$DURATION" -ge 1 ] && [ "$ROUNDS" -ge 1 ] || die "DURATION and ROUNDS must be at least 1"

ensure_tools wrk:wrk nginx:nginx-light haproxy:haproxy redis-server:redis-server redis-cli:redis-tools \
    taskset:util-linux curl:curl python3:python3 openssl:openssl
[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs (proxy on CPU 0, wrk and upstream on CPU 1)"
[ "$(nproc --all)" -eq 2 ] || log "note: $(nproc --all) CPUs; the bench still uses only CPUs 0 and 1"
raise_nofile 20000
init_tmp
RES="$TMP_DIR/results"
mkdir -p "$RES"

read -r UP_PORT B_PORT C_PORT D_PORT D_ADMIN F_PORT F_ADMIN G_PORT G_ADMIN REDIS_PORT H_PORT H_ADMIN IDP_PORT I_PORT I_ADMIN L_PORT L_ADMIN <<<"$(free_ports 17)"

declare -A URL=() TOKEN=() PID_OF=() COOKIE=() SCRIPT=()
ACTIVE=()
wanted() { [[ " $CASES " == *" $1 "* ]]; }
for k in a b c d e f g h i j k l; do
    wanted "$k" || echo "not selected (CASES=\"$CASES\")" >"$RES/$k.skipped"
done
skip() { # skip CASE REASON
    log "($1) SKIPPED: $2"
    echo "$2" >"$RES/$1.skipped"
}
enable() { # enable CASE URL PID [TOKEN]
    URL[$1]="$2"
    PID_OF[$1]="$3"
    TOKEN[$1]="${4:-}"
    ACTIVE+=("$1")
}

GOOD="$(mint "$BENCH_SECRET")"
BADSIG="$(mint "wrong-secret-but-also-32-bytes-long-xx")"
EXPIRED="$(mint "$BENCH_SECRET" --exp-in -3600)"
AUTH=(-H "Authorization: Bearer $GOOD")

# ---- (a) the upstream (always needed) -------------------------------------------------
start_upstream "$UP_PORT"
log "(a) nginx upstream on 127.0.0.1:$UP_PORT (CPU 1)"
wanted a && enable a "http://127.0.0.1:$UP_PORT/bench" "$UP_PID"

# ---- (b) nginx keep-alive reverse proxy ---------------------------------------------------
if wanted b; then
    mkdir -p "$TMP_DIR/nginx-proxy-body" "$TMP_DIR/nginx-proxy-tmp"
    render "$BENCH_DIR/conf/nginx-proxy.conf" "$TMP_DIR/nginx-proxy.conf" \
        TMP="$TMP_DIR" UP_PORT="$UP_PORT" B_PORT="$B_PORT"
    start_bg nginx-proxy 0 nginx -e "$TMP_DIR/nginx-proxy.err" -p "$TMP_DIR" -c "$TMP_DIR/nginx-proxy.conf"
    pid=$LAST_PID
    if ! wait_http "http://127.0.0.1:$B_PORT/" "$pid"; then
        skip b "nginx proxy did not start: $(tail -n 2 "$TMP_DIR/nginx-proxy.log" | tr '\n' ' ')"
    elif [ "$(http_code "http://127.0.0.1:$B_PORT/bench")" != 200 ]; then
        skip b "nginx proxy does not answer 200"
    else
        log "(b) nginx proxy on 127.0.0.1:$B_PORT (CPU 0)"
        enable b "http://127.0.0.1:$B_PORT/bench" "$pid"
    fi
fi

# ---- (c) HAProxy with jwt_verify ----------------------------------------------------------
if wanted c; then
    render "$BENCH_DIR/conf/haproxy.cfg" "$TMP_DIR/haproxy.cfg" \
        TMP="$TMP_DIR" UP_PORT="$UP_PORT" C_PORT="$C_PORT" SECRET="$BENCH_SECRET"
    if ! haproxy -c -q -f "$TMP_DIR/haproxy.cfg" >"$TMP_DIR/haproxy-check.log" 2>&1; then
        skip c "haproxy -c rejects the config: $(head -n 3 "$TMP_DIR/haproxy-check.log" | tr '\n' ' ')"
    else
        start_bg haproxy 0 haproxy -db -f "$TMP_DIR/haproxy.cfg"
        pid=$LAST_PID
        c_url="http://127.0.0.1:$C_PORT/bench"
        if ! wait_http "$c_url" "$pid"; then
            skip c "haproxy did not start: $(tail -n 2 "$TMP_DIR/haproxy.log" | tr '\n' ' ')"
        else
            good="$(http_code "$c_url" "${AUTH[@]}")"
            bad="$(http_code "$c_url" -H "Authorization: Bearer $BADSIG")"
            none="$(http_code "$c_url")"
            expd="$(http_code "$c_url" -H "Authorization: Bearer $EXPIRED")"
            who="$(curl -s --max-time 5 "${AUTH[@]}" "http://127.0.0.1:$C_PORT/__whoami" || true)"
            if [ "$good" != 200 ]; then
                skip c "haproxy answers $good to a valid token"
            elif [ "$bad" != 401 ] || [ "$none" != 401 ] || [ "$expd" != 401 ]; then
                skip c "haproxy lets bad tokens through (bad signature $bad, none $none, expired $expd)"
            elif [[ "$who" != *'"user_id":"k1","user_name":"k1"'* ]]; then
                skip c "haproxy does not inject X-User-Id/X-User-Name (upstream saw: $who)"
            else
                log "(c) haproxy on 127.0.0.1:$C_PORT (CPU 0): valid 200, bad signature/none/expired 401, identity headers set"
                enable c "$c_url" "$pid" "$GOOD"
            fi
        fi
    fi
fi

# ---- (d)-(g) authgate -------------------------------------------------------------------------
GW_CASES=()
for k in d e f g h i j k l; do wanted "$k" && GW_CASES+=("$k"); done
if [ "${#GW_CASES[@]}" -gt 0 ]; then
    if ! build_authgate; then
        for k in "${GW_CASES[@]}"; do skip "$k" "authgate cannot be built: $BUILD_FAILURE"; done
        GW_CASES=()
    fi
fi

# check_required CASE PORT TOKEN: the required route answers 200 with TOKEN, 401 with a bad
# signature, an expired token and none, and injects the identity headers.
check_required() {
    local k="$1" port="$2" tok="$3" url="http://127.0.0.1:$2/api/bench" good bad none expd who
    good="$(http_code "$url" -H "Authorization: Bearer $tok")"
    bad="$(http_code "$url" -H "Authorization: Bearer $BADSIG")"
    none="$(http_code "$url")"
    expd="$(http_code "$url" -H "Authorization: Bearer $EXPIRED")"
    who="$(curl -s --max-time 5 -H "Authorization: Bearer $tok" "http://127.0.0.1:$port/__whoami" || true)"
    if [ "$good" != 200 ]; then
        skip "$k" "required route answers $good to a valid token"
    elif [ "$bad" != 401 ] || [ "$none" != 401 ] || [ "$expd" != 401 ]; then
        skip "$k" "auth is not on: bad signature $bad, no token $none, expired $expd (want 401)"
    elif [[ "$who" != *'"user_id":"k1"'* ]]; then
        skip "$k" "identity headers not injected (upstream saw: $who)"
    else
        return 0
    fi
    return 1
}

if [[ " ${GW_CASES[*]} " == *" d "* || " ${GW_CASES[*]} " == *" e "* ]]; then
    write_authgate_config "$TMP_DIR/authgate-stateless.toml" "$D_PORT" "$D_ADMIN" "$UP_PORT" \
        stateless memory none
    if ! start_authgate authgate-stateless "$TMP_DIR/authgate-stateless.toml" "$D_PORT"; then
        for k in d e; do wanted "$k" && skip "$k" "$START_FAILURE"; done
    else
        log "authgate (stateless) on 127.0.0.1:$D_PORT (CPU 0)"
        if wanted d; then
            code="$(http_code "http://127.0.0.1:$D_PORT/public/bench")"
            if [ "$code" = 200 ]; then
                enable d "http://127.0.0.1:$D_PORT/public/bench" "$GW_PID"
            else
                skip d "public route answers $code, not 200"
            fi
        fi
        if wanted e && check_required e "$D_PORT" "$GOOD"; then
            log "(e) valid 200; bad signature, no token, expired 401; identity injected"
            enable e "http://127.0.0.1:$D_PORT/api/bench" "$GW_PID" "$GOOD"
        fi
    fi
fi

if [[ " ${GW_CASES[*]} " == *" l "* ]]; then
    write_authgate_config "$TMP_DIR/authgate-l.toml" "$L_PORT" "$L_ADMIN" "$UP_PORT" \
        stateless memory none
    printf '\n[log]\naccess = false\n' >>"$TMP_DIR/authgate-l.toml"
    if ! start_authgate authgate-l "$TMP_DIR/authgate-l.toml" "$L_PORT"; then
        skip l "$START_FAILURE"
    elif check_required l "$L_PORT" "$GOOD"; then
        log "(l) authgate (stateless, access log off) on 127.0.0.1:$L_PORT (CPU 0): valid 200; bad tokens 401"
        enable l "http://127.0.0.1:$L_PORT/api/bench" "$GW_PID" "$GOOD"
    fi
fi

# stateful_case CASE PORT ADMIN STORE: start a stateful gateway, log in twice on the same
# platform (max_sessions web = 1, so the first session is replaced: proves the per-request
# session check is on), and enable CASE with the second token.
stateful_case() {
    local k="$1" port="$2" admin="$3" store="$4" users="$TMP_DIR/users.toml" t1="" t2="" c1
    if [ ! -f "$users" ] && ! make_users_file "$users"; then
        skip "$k" "\`authgate hash-password\` did not print an Argon2id hash"
        return 0
    fi
    write_authgate_config "$TMP_DIR/authgate-$k.toml" "$port" "$admin" "$UP_PORT" \
        stateful "$store" users_file "$users" "$REDIS_PORT"
    if ! start_authgate "authgate-$k" "$TMP_DIR/authgate-$k.toml" "$port"; then
        skip "$k" "$START_FAILURE"
        return 0
    fi
    if ! login "$port" t1 || ! login "$port" t2; then
        skip "$k" "$LOGIN_FAILURE"
        return 0
    fi
    c1="$(http_code "http://127.0.0.1:$port/api/bench" -H "Authorization: Bearer $t1")"
    if [ "$c1" != 401 ]; then
        skip "$k" "a session replaced by a newer login still answers $c1 (want 401 session_replaced): the session check is not on"
        return 0
    fi
    if check_required "$k" "$port" "$t2"; then
        log "($k) stateful $store: logged in; replaced session 401; valid 200; bad tokens 401"
        enable "$k" "http://127.0.0.1:$port/api/bench" "$GW_PID" "$t2"
    fi
}

if [[ " ${GW_CASES[*]} " == *" f "* ]]; then
    stateful_case f "$F_PORT" "$F_ADMIN" memory
fi
if [[ " ${GW_CASES[*]} " == *" g "* ]]; then
    start_bg redis 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
        --appendonly no --daemonize no --dir "$TMP_DIR"
    redis_pid=$LAST_PID
    ok=0
    for _ in $(seq 1 50); do
        if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then ok=1; break; fi
        kill -0 "$redis_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$ok" = 1 ]; then
        log "redis-server on 127.0.0.1:$REDIS_PORT (CPU 1)"
        stateful_case g "$G_PORT" "$G_ADMIN" redis
    else
        skip g "redis-server did not start: $(tail -n 2 "$TMP_DIR/redis.log" | tr '\n' ' ')"
    fi
fi

# (h): an issuer's RS256 token; keys by OIDC discovery from a local static server.
if [[ " ${GW_CASES[*]} " == *" h "* ]]; then
    idp_root="$TMP_DIR/idp"
    mkdir -p "$idp_root"
    issuer="http://127.0.0.1:$IDP_PORT"
    if ! "$AUTHGATE_BIN" keygen --alg RS256 --out "$TMP_DIR/idp-keys" >/dev/null 2>&1; then
        skip h "authgate keygen --alg RS256 failed"
    elif ! H_TOKEN="$(python3 "$BENCH_DIR/idp.py" "$idp_root" "$TMP_DIR/idp-keys/private.pem" \
            "$TMP_DIR/idp-keys/public.pem" "$issuer")"; then
        skip h "bench/idp.py could not write the JWKS or sign a token"
    else
        start_bg idp 1 python3 -m http.server "$IDP_PORT" --bind 127.0.0.1 --directory "$idp_root"
        write_authgate_config "$TMP_DIR/authgate-h.toml" "$H_PORT" "$H_ADMIN" "$UP_PORT" \
            stateless memory none
        printf '\n[[token.issuers]]\nissuer = "%s"\naudiences = ["legacy-app"]\nalgorithms = ["RS256"]\n' \
            "$issuer" >>"$TMP_DIR/authgate-h.toml"
        if ! wait_http "$issuer/jwks" "$LAST_PID"; then
            skip h "the local JWKS server did not start"
        elif ! start_authgate authgate-h "$TMP_DIR/authgate-h.toml" "$H_PORT"; then
            skip h "$START_FAILURE"
        else
            # The first fetch runs in the background: 503 issuer_unavailable until it lands.
            for _ in $(seq 1 50); do
                [ "$(http_code "http://127.0.0.1:$H_PORT/api/bench" -H "Authorization: Bearer $H_TOKEN")" != 503 ] && break
                sleep 0.1
            done
            if check_required h "$H_PORT" "$H_TOKEN"; then
                log "(h) issuer RS256 by discovery: valid 200; bad tokens 401; identity injected"
                enable h "http://127.0.0.1:$H_PORT/api/bench" "$GW_PID" "$H_TOKEN"
            fi
        fi
    fi
fi

# (i)-(k): one stateless gateway with [browser] on (it needs a login backend: the users
# file) and the captcha after failures (so the login page asks none).
if [[ " ${GW_CASES[*]} " == *" i "* || " ${GW_CASES[*]} " == *" j "* || " ${GW_CASES[*]} " == *" k "* ]]; then
    users="$TMP_DIR/users.toml"
    cfg="$TMP_DIR/authgate-i.toml"
    if [ ! -f "$users" ] && ! make_users_file "$users"; then
        for k in i j k; do wanted "$k" && skip "$k" "\`authgate hash-password\` did not print an Argon2id hash"; done
    else
        write_authgate_config "$cfg" "$I_PORT" "$I_ADMIN" "$UP_PORT" stateless memory users_file "$users"
        sed -i 's|^admin_listen = .*|&\ntrusted_proxies = ["127.0.0.1/32"]|' "$cfg"
        printf '\n[login.captcha]\nmode = "after_failures"\n\n[browser]\nenabled = true\ninsecure_cookies = true\n' >>"$cfg"
        if ! start_authgate authgate-i "$cfg" "$I_PORT"; then
            for k in i j k; do wanted "$k" && skip "$k" "$START_FAILURE"; done
        else
            log "authgate (stateless, [browser] on) on 127.0.0.1:$I_PORT (CPU 0)"
            i_url="http://127.0.0.1:$I_PORT/api/bench"
            if wanted i; then
                good="$(http_code "$i_url" -H "Cookie: authgate_access=$GOOD")"
                bad="$(http_code "$i_url" -H "Cookie: authgate_access=$BADSIG")"
                expd="$(http_code "$i_url" -H "Cookie: authgate_access=$EXPIRED")"
                csrf="$(http_code "$i_url" -X POST -H "Origin: https://evil.example" -H "Cookie: authgate_access=$GOOD")"
                who="$(curl -s --max-time 5 -H "Cookie: authgate_access=$GOOD" "http://127.0.0.1:$I_PORT/__whoami" || true)"
                if [ "$good" != 200 ]; then
                    skip i "required route answers $good to a valid access cookie"
                elif [ "$bad" != 401 ] || [ "$expd" != 401 ] || [ "$csrf" != 403 ]; then
                    skip i "cookie auth is not on: bad signature $bad, expired $expd (want 401), cross-site POST $csrf (want 403)"
                elif [[ "$who" != *'"user_id":"k1"'* ]]; then
                    skip i "identity headers not injected (upstream saw: $who)"
                else
                    log "(i) access cookie: valid 200; bad signature, expired 401; cross-site POST 403; identity injected"
                    enable i "$i_url" "$GW_PID"
                    COOKIE[i]="authgate_access=$GOOD"
                fi
            fi
            if wanted j; then
                page="$(curl -s --max-time 5 "http://127.0.0.1:$I_PORT/auth/login" || true)"
                if [[ "$page" == *'name="password"'* && "$page" != *'captcha_id'* ]]; then
                    enable j "http://127.0.0.1:$I_PORT/auth/login" "$GW_PID"
                else
                    skip j "GET /auth/login is no login form without a captcha: $(head -c 120 <<<"$page" | tr '\n' ' ')"
                fi
            fi
            if wanted k; then
                one="$(curl -s --max-time 5 -H 'X-Forwarded-For: 10.255.255.1' "http://127.0.0.1:$I_PORT/auth/captcha" || true)"
                if [[ "$one" == *'"image":"data:image/png;base64,'* ]]; then
                    enable k "http://127.0.0.1:$I_PORT/auth/captcha" "$GW_PID"
                    SCRIPT[k]="$BENCH_DIR/xff.lua"
                else
                    skip k "GET /auth/captcha gave no PNG challenge: $(head -c 120 <<<"$one")"
                fi
            fi
        fi
    fi
fi

[ "${#ACTIVE[@]}" -gt 0 ] || die "no case can run"

# ---- measure ---------------------------------------------------------------------------------
run_wrk() { # run_wrk CASE SECONDS OUTFILE
    local k="$1" hdr=()
    [ -n "${TOKEN[$k]}" ] && hdr=(-H "Authorization: Bearer ${TOKEN[$k]}")
    [ -n "${COOKIE[$k]:-}" ] && hdr=(-H "Cookie: ${COOKIE[$k]}")
    [ -n "${SCRIPT[$k]:-}" ] && hdr+=(-s "${SCRIPT[$k]}")
    taskset -c 1 wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$2"s --timeout 5s --latency \
        "${hdr[@]}" "${URL[$k]}" >"$3" 2>&1
}

alive() { kill -0 "${PID_OF[$1]}" 2>/dev/null; }
# cpu_ticks PID: user + system time of the process and its threads so far (0 if gone).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

if [ "$WARMUP" -gt 0 ]; then
    log "warm-up: ${WARMUP}s per case (${ACTIVE[*]})"
    for k in "${ACTIVE[@]}"; do run_wrk "$k" "$WARMUP" "$RES/$k.warmup" || true; done
fi

# The numbers only mean something on an otherwise idle machine: say so when it is not.
quiet() { awk -v s="$1" 'BEGIN { n = split(s, f, /[= %]+/); for (i = 2; i <= n; i += 2) if (f[i] + 0 > 10) exit 1; exit 0 }'; }
BUSY="$(cpu_busy 2)"
log "background load before measuring (all servers idle): $BUSY"
if ! quiet "$BUSY"; then
    log "WARNING: CPUs 0/1 are busy with other work ($BUSY); each run waits up to ${IDLE_WAIT}s for quiet"
    BUSY="$BUSY (busy)"
fi

total=$(( ${#ACTIVE[@]} * ROUNDS * DURATION ))
log "measuring ${ACTIVE[*]}: $ROUNDS round(s) x ${DURATION}s, ${CONNECTIONS} connections, ~${total}s"
for r in $(seq 1 "$ROUNDS"); do
    for k in "${ACTIVE[@]}"; do
        [ -f "$RES/$k.skipped" ] && continue
        if ! alive "$k"; then
            skip "$k" "its server exited during the run (round $r); log in $TMP_DIR"
            continue
        fi
        out="$RES/$k.r$r.txt"
        # Other work on the machine skews a run: wait (bounded) for CPUs 0/1 to be quiet
        # and record how busy they were just before it.
        bg="$(cpu_busy 1)"
        waited=0
        while ! quiet "$bg" && [ "$waited" -lt "$IDLE_WAIT" ]; do
            bg="$(cpu_busy 1)"
            waited=$((waited + 1))
        done
        [ "$waited" -gt 0 ] && log "round $r ($k): waited ${waited}s for other work to calm down ($bg)"
        echo "$bg" >"$RES/$k.r$r.bg"
        # CPU time the server (all its threads) spent in the run, in clock ticks: CPU per
        # request is steadier on a shared VM than req/s, which moves with the host's load.
        t0="$(cpu_ticks "${PID_OF[$k]}")"
        if run_wrk "$k" "$DURATION" "$out"; then
            echo "$(( $(cpu_ticks "${PID_OF[$k]}") - t0 )) $(getconf CLK_TCK)" >"$RES/$k.r$r.cpu"
            rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
            p99="$(awk '$1 == "99%" {print $2}' "$out")"
            log "round $r ($k): ${rps:-?} req/s, p99 ${p99:-?} (background before: $bg)"
        else
            log "round $r ($k): wrk failed: $(tail -n 1 "$out")"
            mv "$out" "$out.failed"
        fi
    done
done

# ---- report --------------------------------------------------------------------------------------
{
    echo "## authgate bench: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "Command: \`DURATION=$DURATION ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS WRK_THREADS=$WRK_THREADS CASES=\"$CASES\" bash bench/run.sh\`"
    echo
    echo "Machine: $(nproc --all) CPUs ($(lscpu 2>/dev/null | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')), $(uname -sr)."
    echo "wrk ${WRK_THREADS} thread(s), ${CONNECTIONS} connections, ${DURATION}s per case per round, ${ROUNDS} round(s) round-robin, median over rounds;"
    echo "proxy under test on CPU 0, wrk + nginx upstream (+ redis) on CPU 1."
    echo "Other work on CPUs 0/1 when measuring started: $BUSY; each run first waited up to ${IDLE_WAIT}s for it to drop under 10% (column \"other load\")."
    echo "Versions: $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -n 1 | awk '{print "HAProxy " $3}'), $(redis-server --version | awk '{print "Redis " $3}' | sed 's/v=//'), authgate $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty')."
    echo
    python3 "$BENCH_DIR/summarize.py" "$RES"
} | tee "$RES/table.md"

if [ -n "${OUT_DIR:-}" ]; then
    mkdir -p "$OUT_DIR"
    cp -r "$RES/." "$OUT_DIR/"
    log "raw wrk output and table.md copied to $OUT_DIR"
fi
