//! Integration tests of the gateway core: the real gateway on port 0 (the library entry the
//! binary uses), real upstreams over sockets, real clients (HTTP/1.1, h2c, raw bytes,
//! WebSocket). Each test starts its own gateway and upstream, so they run in parallel.

mod support;

mod browser;
mod browser_e2e;
mod captcha;
mod cli;
mod cors;
mod demo;
mod forward_auth;
mod h2_floods;
mod headers;
mod issuers;
mod lifecycle;
mod limits;
mod logs;
mod metrics;
mod notify;
mod paths;
mod proxy;
mod refresh;
mod routes;
mod sentinel;
mod sessions;
mod shutdown;
mod systemd;
mod tls_reload;
mod tokens;
mod users_admin;
mod verify;
mod websocket;
