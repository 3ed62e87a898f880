# syntax=docker/dockerfile:1
#
# authgate container image: the release binary on debian:bookworm-slim, run as a non-root user.
#
#   docker build -t authgate .
#   docker run --rm -p 8080:8080 -p 9091:9091 \
#       -v "$PWD/gateway.toml:/etc/authgate/gateway.toml:ro" \
#       -e AUTHGATE_JWT_SECRET="$(openssl rand -base64 48)" authgate
#
# Inside a container the config must listen on all interfaces (listen = "0.0.0.0:8080",
# admin_listen = "0.0.0.0:9091"); the defaults (127.0.0.1) are unreachable from outside.
# `docker stop` waits 10 s before SIGKILL; give it shutdown_grace plus a little
# (`docker stop -t 35` for the default 30 s) so in-flight requests finish.
#
# Note: the development machine has no Docker engine, so this file is not built in CI;
# keep it in step with Cargo.toml by hand (see the comments in the builder stage).

ARG RUST_VERSION=1

# ---- builder ---------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src

# Dependency layer: build every dependency against stub sources, so this layer stays cached
# until Cargo.toml or Cargo.lock change. If the manifest gains a build.rs or targets with
# explicit paths ([[bench]], [[example]], ...), stub or copy them here too.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && echo '' > src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# The real sources. COPY keeps the files' own mtimes, which may be older than the stub
# build: touch the crate roots so cargo rebuilds authgate itself (dependencies stay cached).
# strip --strip-debug drops the line tables (profile.release keeps them for profiling);
# symbols stay, so backtraces still name functions.
COPY src ./src
# The demo's single-page app embeds the JavaScript client (include_str!).
COPY clients/js/index.js ./clients/js/index.js
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && strip --strip-debug target/release/authgate \
 && ./target/release/authgate --help >/dev/null

# ---- runtime ---------------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: rediss:// and HTTPS upstreams verify against the system roots.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 authgate \
 && useradd --system --uid 10001 --gid authgate --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin authgate \
 && mkdir -p /etc/authgate

COPY --from=builder /src/target/release/authgate /usr/local/bin/authgate

USER 10001:10001
WORKDIR /etc/authgate
EXPOSE 8080 9091

# Health check without curl: the slim image has no HTTP client, and authgate has no health
# subcommand (yet), so bash (always present in Debian) speaks HTTP/1.1 over /dev/tcp to the
# admin listener's /healthz and requires a 200 status line. Set HEALTHCHECK_PORT when
# admin_listen uses another port. If authgate grows `authgate health`, use that instead.
ENV HEALTHCHECK_PORT=9091
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${HEALTHCHECK_PORT} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && IFS= read -r -t 2 status <&3 && [[ $status == HTTP/1.[01]' 200'* ]]"]

ENTRYPOINT ["authgate"]
CMD ["run", "-c", "/etc/authgate/gateway.toml"]
