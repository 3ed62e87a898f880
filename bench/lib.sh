# shellcheck shell=bash
# Helpers shared by bench/run.sh and bench/idle_rss.sh. Source it; don't run it.
#
# Everything started through start_bg is recorded in BG_PIDS and stopped by cleanup
# (installed as the EXIT trap by init_tmp). Every wait loop here is bounded.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
AUTHGATE_BIN="${AUTHGATE_BIN:-$TARGET_DIR/release/authgate}"

# A fixed, public, 38-byte test secret: benchmark tokens only, never a real one.
BENCH_SECRET="${BENCH_SECRET:-authgateBenchSecret0123456789abcdefXYZ}"
BENCH_PASSWORD="bench-password-0123"

BG_PIDS=()
APT_UPDATED=0

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ensure_tools CMD:PACKAGE... — apt-get install the packages whose command is missing,
# running `apt-get update` once first.
ensure_tools() {
    local missing=() pair cmd pkg
    for pair in "$@"; do
        cmd="${pair%%:*}"
        pkg="${pair#*:}"
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing missing packages: ${missing[*]}"
    if [ "$APT_UPDATED" -eq 0 ]; then
        $sudo apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    # The Debian packages start their services; the bench runs its own instances on
    # free ports, so the system ones are left alone (they don't use CPU when idle).
}

raise_nofile() {
    local hard
    hard="$(ulimit -Hn)"
    if [ "$hard" = "unlimited" ]; then hard=1048576; fi
    if [ "$hard" -lt "$1" ]; then
        ulimit -Hn "$1" 2>/dev/null || log "cannot raise the hard fd limit to $1 (it is $hard)"
    fi
    ulimit -n "$1" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
}

# init_tmp: the run's temp dir in $TMP_DIR, removed on exit unless KEEP_TMP=1.
init_tmp() {
    TMP_DIR="$(mktemp -d /tmp/authgate-bench.XXXXXX)"
    # nginx workers drop to `nobody` when started as root: let them read the dir.
    chmod 755 "$TMP_DIR"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

cleanup() {
    local rc=$? pid i
    # Stop in reverse start order: clients' servers first, the upstream last.
    for ((i = ${#BG_PIDS[@]} - 1; i >= 0; i--)); do
        pid="${BG_PIDS[$i]}"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${BG_PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${TMP_DIR:-}" ] && [ -d "$TMP_DIR" ]; then
        if [ "${KEEP_TMP:-0}" = "1" ]; then
            log "kept temp dir $TMP_DIR"
        else
            rm -rf "$TMP_DIR"
        fi
    fi
    exit "$rc"
}

# free_ports N: prints N distinct free TCP ports on 127.0.0.1.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# render TEMPLATE DEST NAME=VALUE...: copy TEMPLATE replacing each @NAME@ by VALUE.
render() {
    local src="$1" dst="$2" kv args=()
    shift 2
    for kv in "$@"; do
        args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
    done
    sed "${args[@]}" "$src" >"$dst"
    if grep -q '@[A-Z_]*@' "$dst"; then die "unrendered placeholder in $dst"; fi
}

# start_bg NAME CPU CMD...: start CMD pinned to CPU, output in $TMP_DIR/NAME.log;
# sets LAST_PID.
start_bg() {
    local name="$1" cpu="$2"
    shift 2
    # The output goes to a folder of its own (linked from $TMP_DIR/NAME.log): the gateway
    # watches the folders of its config and users files, and a log written beside them would
    # wake that watch on every write, a cost no real deployment has.
    mkdir -p "$TMP_DIR/log"
    ln -sfn "log/$name.log" "$TMP_DIR/$name.log"
    taskset -c "$cpu" "$@" >"$TMP_DIR/log/$name.log" 2>&1 &
    LAST_PID=$!
    BG_PIDS+=("$LAST_PID")
}

# http_code URL [CURL ARGS...]: prints the status code (000 when nothing answered).
http_code() {
    local url="$1"
    shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url" 2>/dev/null || true
}

# wait_http URL PID: up to ~15 s for URL to answer anything while PID lives.
wait_http() {
    local url="$1" pid="$2" code
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || return 1
        code="$(http_code "$url")"
        [ "$code" != "000" ] && return 0
        sleep 0.1
    done
    return 1
}

# cpu_busy SECONDS: prints "cpu0=N% cpu1=N%", how busy CPUs 0 and 1 were over SECONDS
# (everything on the machine: run it while the bench's own servers are idle).
cpu_busy() {
    python3 - "$1" <<'PY'
import sys, time
def snap():
    out = {}
    for line in open("/proc/stat"):
        f = line.split()
        if f[0] in ("cpu0", "cpu1"):
            v = list(map(int, f[1:]))
            out[f[0]] = (sum(v), v[3] + v[4])  # total, idle + iowait
    return out
a = snap(); time.sleep(float(sys.argv[1])); b = snap()
print(" ".join(f"{c}={100 * (1 - (b[c][1] - a[c][1]) / max(1, b[c][0] - a[c][0])):.0f}%" for c in sorted(a)))
PY
}

mint() { python3 "$BENCH_DIR/mint_jwt.py" "$@"; }

start_upstream() { # start_upstream PORT: case (a), nginx on CPU 1; sets UP_PID
    mkdir -p "$TMP_DIR/nginx-upstream-body"
    render "$BENCH_DIR/conf/nginx-upstream.conf" "$TMP_DIR/nginx-upstream.conf" \
        TMP="$TMP_DIR" UP_PORT="$1"
    start_bg nginx-upstream 1 nginx -e "$TMP_DIR/nginx-upstream.err" -p "$TMP_DIR" -c "$TMP_DIR/nginx-upstream.conf"
    UP_PID=$LAST_PID
    wait_http "http://127.0.0.1:$1/" "$UP_PID" || {
        cat "$TMP_DIR/nginx-upstream.log" "$TMP_DIR/nginx-upstream.err" >&2 2>/dev/null || true
        die "the nginx upstream did not start"
    }
    [ "$(http_code "http://127.0.0.1:$1/bench")" = 200 ] || die "the nginx upstream does not answer 200"
}

# build_authgate: `cargo build --release`; 0 when the binary is there afterwards.
build_authgate() {
    if [ "${SKIP_BUILD:-0}" = "1" ]; then
        log "SKIP_BUILD=1: using $AUTHGATE_BIN as is"
    else
        log "cargo build --release (log: $TMP_DIR/build.log)"
        if ! (cd "$ROOT" && cargo build --release) >"$TMP_DIR/build.log" 2>&1; then
            tail -n 15 "$TMP_DIR/build.log" >&2
            BUILD_FAILURE="cargo build --release failed (see the lines above)"
            return 1
        fi
    fi
    if [ ! -x "$AUTHGATE_BIN" ]; then
        BUILD_FAILURE="no binary at $AUTHGATE_BIN"
        return 1
    fi
}

# write_authgate_config DEST PORT ADMIN_PORT UP_PORT MODE STORE LOGIN_BACKEND [USERS_FILE] [REDIS_PORT]
# The bench's gateway config (CONTRACT.md section 2; unknown keys are errors there).
write_authgate_config() {
    local dest="$1" port="$2" admin="$3" up="$4" mode="$5" store="$6" backend="$7"
    local users="${8:-}" redis_port="${9:-}"
    {
        echo "# authgate bench config, written by bench/lib.sh"
        echo "[server]"
        echo "listen = \"127.0.0.1:$port\""
        echo "admin_listen = \"127.0.0.1:$admin\""
        echo
        echo "[token]"
        echo "algorithm = \"HS256\""
        echo "secret_env = \"AUTHGATE_JWT_SECRET\""
        echo
        echo "[session]"
        echo "mode = \"$mode\""
        echo "store = \"$store\""
        if [ "$store" = "redis" ]; then
            echo "redis_url = \"redis://127.0.0.1:$redis_port/0\""
        fi
        echo
        echo "[login]"
        echo "backend = \"$backend\""
        if [ "$backend" = "users_file" ]; then
            echo "users_file = \"$users\""
        fi
        echo
        echo "[[upstreams]]"
        echo "name = \"up\""
        echo "urls = [\"http://127.0.0.1:$up\"]"
        echo
        echo "[[routes]]"
        echo "path = \"/public\""
        echo "auth = \"public\""
        echo "upstream = \"up\""
        echo
        echo "[[routes]]"
        echo "path = \"/\""
        echo "auth = \"required\""
        echo "upstream = \"up\""
    } >"$dest"
}

# start_authgate NAME CONFIG PORT: the gateway on CPU 0; sets GW_PID, or returns 1 with
# START_FAILURE set. RUST_LOG defaults to warn: nginx and HAProxy run without access logs.
start_authgate() {
    local name="$1" cfg="$2" port="$3"
    start_bg "$name" 0 env AUTHGATE_JWT_SECRET="$BENCH_SECRET" RUST_LOG="${AUTHGATE_LOG:-warn}" \
        "$AUTHGATE_BIN" run -c "$cfg"
    GW_PID=$LAST_PID
    if ! wait_http "http://127.0.0.1:$port/public/bench" "$GW_PID"; then
        START_FAILURE="authgate did not start ($name); last log lines: $(tail -n 3 "$TMP_DIR/$name.log" 2>/dev/null | tr '\n' ' ' | cut -c1-300)"
        kill -TERM "$GW_PID" 2>/dev/null || true
        return 1
    fi
}

# make_users_file DEST: a users file with the bench user; 1 when hash-password fails.
make_users_file() {
    local hash
    hash="$(printf '%s' "$BENCH_PASSWORD" | "$AUTHGATE_BIN" hash-password 2>/dev/null | tail -n 1)" || true
    case "$hash" in
        '$argon2id$'*) ;;
        *) return 1 ;;
    esac
    render "$BENCH_DIR/conf/users.toml" "$1" PASSWORD_HASH="$hash"
}

# login PORT VAR: sets VAR to the access token of a fresh web session of the bench user,
# or returns 1 with LOGIN_FAILURE set.
login() {
    local port="$1" code body="$TMP_DIR/login.$1.json" token
    code="$(curl -s -o "$body" -w '%{http_code}' --max-time 10 -X POST \
        -H 'Content-Type: application/json' -H 'X-Platform: web' \
        -d "{\"username\":\"bench\",\"password\":\"$BENCH_PASSWORD\"}" \
        "http://127.0.0.1:$port/auth/login" 2>/dev/null)" || true
    if [ "$code" != 200 ]; then
        LOGIN_FAILURE="POST /auth/login answered $code, not 200: $(head -c 120 "$body" 2>/dev/null | tr -d '\n')"
        return 1
    fi
    if ! token="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' "$body" 2>/dev/null)"; then
        LOGIN_FAILURE="POST /auth/login answered 200 without an access_token"
        return 1
    fi
    printf -v "$2" '%s' "$token"
}
