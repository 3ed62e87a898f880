#!/usr/bin/env bash
# API schema check: docs/openapi.yaml against the running binary, with Schemathesis.
#
#   bash tests/schema.sh                       # the debug binary (cargo build first)
#   AUTHGATE_BIN=target/release/authgate bash tests/schema.sh
#
# Starts the gateway on free loopback ports with the memory store, a users file with one user
# of its own, an admin token, [browser] on (form logins, cookie refresh, the login page),
# captcha after failures, and 127.0.0.1 as a trusted proxy (so /auth/verify answers). Then
# runs `schemathesis run` twice, bounded by SCHEMA_MAX_EXAMPLES per operation and
# SCHEMA_MAX_TIME seconds per run: once for the /auth endpoints and the JWKS on `listen`,
# once for /admin/*, /healthz, /readyz and /metrics on `admin_listen`. Protected endpoints
# get a live access token (or the admin token) from tests/schema/hooks.py, which logs in
# again whenever a generated logout has ended its session.
#
# Checks: not_a_server_error (no 5xx: the only 5xx the schema knows are the store's 503 and
# the legacy login's 502, and neither can happen with the memory store and the users file),
# status_code_conformance, content_type_conformance, response_headers_conformance,
# response_schema_conformance, ignored_auth (a protected endpoint without its token must
# refuse), unsupported_method and allow_header_conformance (a method an endpoint does not
# take is 405 with Allow); SCHEMA_CHECKS=all adds the ones that judge the schema's input
# constraints (positive_data_acceptance, negative_data_rejection...), which a schema cannot
# state exactly here (path canonicalisation, the forwarded URI). Exit 1 when Schemathesis
# finds anything, or when the gateway panicked or died.
#
# Schemathesis (pinned in docs/requirements.txt) comes from SCHEMATHESIS (a path), else a
# virtualenv under the cargo target dir (created and installed when missing; needs PyPI),
# else the PATH.
#
# Environment: AUTHGATE_BIN, SCHEMATHESIS, SCHEMA_MAX_EXAMPLES (10), SCHEMA_MAX_TIME (20),
# SCHEMA_CHECKS (comma-separated, or all), SCHEMA_SEED (a fixed seed for reproducing a run), SCHEMA_FILE (another schema, e.g. one
# broken on purpose to see the check fail), KEEP_TMP=1 (keep configs, logs and the
# JUnit reports).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${AUTHGATE_BIN:-$TARGET/debug/authgate}"
MAX_EXAMPLES="${SCHEMA_MAX_EXAMPLES:-10}"
MAX_TIME="${SCHEMA_MAX_TIME:-20}"
SEED="${SCHEMA_SEED:-}"
SCHEMA="${SCHEMA_FILE:-$ROOT/docs/openapi.yaml}"

log() { printf '[schema %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- Schemathesis ------------------------------------------------------------------------
VENV="$TARGET/schemathesis-venv"
ST="${SCHEMATHESIS:-}"
if [ -z "$ST" ]; then
    want="$(grep -E '^schemathesis==' "$ROOT/docs/requirements.txt" | cut -d= -f3)"
    if [ ! -x "$VENV/bin/schemathesis" ] || [ "$("$VENV/bin/schemathesis" --version 2>/dev/null | awk '{print $NF}')" != "$want" ]; then
        log "installing schemathesis $want into $VENV (docs/requirements.txt)"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/docs/requirements.txt"
    fi
    ST="$VENV/bin/schemathesis"
fi
"$ST" --version >/dev/null 2>&1 || die "schemathesis does not run: $ST"
log "$("$ST" --version)"
# SCHEMA_INSTALL_ONLY=1: install and stop (.ci/run installs in the background while it builds).
[ "${SCHEMA_INSTALL_ONLY:-0}" != 1 ] || exit 0

[ -x "$BIN" ] || die "no gateway binary at $BIN (cargo build, or set AUTHGATE_BIN)"

# ---- the gateway ---------------------------------------------------------------------------
WORK="$(mktemp -d /tmp/authgate-schema.XXXXXX)"
GW_PID=""
cleanup() {
    local rc=$?
    if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
        kill -TERM "$GW_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$GW_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$GW_PID" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] || [ "${KEEP_TMP:-0}" = 1 ]; then
        log "kept $WORK (gateway.log, the JUnit reports)"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

read -r PORT ADMIN_PORT UP_PORT <<<"$(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')"

# The user is the demo's (users.toml, and the login example in docs/openapi.yaml), so the
# example login succeeds and its token pair is checked against the schema too; the admin
# token is made up for this run. EdDSA, so that the JWKS has a key to publish.
export SCHEMA_USER="alice"
export SCHEMA_PASSWORD="wonderland-demo-42"
export AUTHGATE_ADMIN_TOKEN="schema-admin-token-$RANDOM$RANDOM$RANDOM"
hash="$(printf '%s' "$SCHEMA_PASSWORD" | "$BIN" hash-password | tail -n 1)"
case "$hash" in '$argon2id$'*) ;; *) die "hash-password printed no Argon2id hash" ;; esac
cat >"$WORK/users.toml" <<EOF
[[users]]
id = "1001"
username = "$SCHEMA_USER"
password_hash = "$hash"
tenant = "acme"
roles = ["admin"]
EOF
"$BIN" keygen --alg EdDSA --out "$WORK/keys" >/dev/null

# The upstream port is left closed: none of the endpoints checked here forwards.
cat >"$WORK/gateway.toml" <<EOF
# tests/schema.sh: the gateway Schemathesis checks docs/openapi.yaml against.
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
trusted_proxies = ["127.0.0.1/32"]

[token]
algorithm = "EdDSA"
private_key_file = "keys/private.pem"

[session]
store = "memory"

[platforms]
max_sessions = { web = 100000, h5 = 100000, app = 100000 }

[login]
backend = "users_file"
users_file = "users.toml"

# Generated logins fail by the thousand from 127.0.0.1: no lock-out stops the run.
[login.lockout]
max_failures = 1000000
max_failures_per_ip = 1000000

[login.captcha]
mode = "after_failures"
after_failures = 999999

[browser]
enabled = true
insecure_cookies = true

[[upstreams]]
name = "up"
urls = ["http://127.0.0.1:$UP_PORT"]

[[routes]]
path = "/public"
auth = "public"
upstream = "up"

[[routes]]
path = "/admin-area"
auth = "required"
require_roles = ["auditor"]
upstream = "up"

[[routes]]
path = "/"
auth = "required"
upstream = "up"
EOF

"$BIN" check -c "$WORK/gateway.toml" >"$WORK/check.log" 2>&1 || {
    cat "$WORK/check.log" >&2
    die "authgate check rejects the schema check's config"
}
RUST_LOG="${AUTHGATE_LOG:-info}" "$BIN" run -c "$WORK/gateway.toml" --log-format json >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
for _ in $(seq 1 150); do
    kill -0 "$GW_PID" 2>/dev/null || { tail -n 20 "$WORK/gateway.log" >&2; die "the gateway exited at start"; }
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$ADMIN_PORT/healthz" && break
    sleep 0.1
done
curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$ADMIN_PORT/healthz" || die "the gateway did not start"
log "gateway (pid $GW_PID) on 127.0.0.1:$PORT, admin 127.0.0.1:$ADMIN_PORT"

# ---- Schemathesis runs ---------------------------------------------------------------------
export SCHEMA_GATEWAY_URL="http://127.0.0.1:$PORT"
export SCHEMATHESIS_HOOKS="hooks"
export PYTHONPATH="$ROOT/tests/schema${PYTHONPATH:+:$PYTHONPATH}"
CHECKS="${SCHEMA_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,ignored_auth,unsupported_method,allow_header_conformance}"
FAILED=0
st_run() { # st_run NAME URL PATH_REGEX
    local name="$1" url="$2" regex="$3" args=()
    [ -n "$SEED" ] && args+=(--seed "$SEED")
    log "schemathesis: $name ($url, paths $regex, at most $MAX_EXAMPLES examples per operation, $MAX_TIME s)"
    # From the temp dir: Schemathesis keeps a crash cache in ./.schemathesis.
    if ! (cd "$WORK" && "$ST" --no-color run "$SCHEMA" --url "$url" \
        --include-path-regex "$regex" \
        --checks "$CHECKS" \
        --max-examples "$MAX_EXAMPLES" --max-time "$MAX_TIME" \
        --request-timeout 30 --workers 1 \
        --suppress-health-check too_slow,filter_too_much \
        --report junit --report-junit-path "$WORK/junit-$name.xml" \
        "${args[@]}"); then
        log "schemathesis: $name FAILED"
        FAILED=1
    fi
}
st_run auth "http://127.0.0.1:$PORT" '^/(auth/|\.well-known/)'
st_run admin "http://127.0.0.1:$ADMIN_PORT" '^/(admin/|healthz$|readyz$|metrics$)'

# ---- the gateway afterwards ----------------------------------------------------------------
if ! kill -0 "$GW_PID" 2>/dev/null; then
    tail -n 30 "$WORK/gateway.log" >&2
    log "the gateway died during the run"
    FAILED=1
fi
if grep -q 'panicked' "$WORK/gateway.log"; then
    grep -m 5 'panicked' "$WORK/gateway.log" >&2
    log "the gateway panicked during the run"
    FAILED=1
fi
if [ "$FAILED" -ne 0 ]; then
    log "FAILED (gateway log: $WORK/gateway.log)"
    exit 1
fi
log "passed: docs/openapi.yaml matches the gateway"
