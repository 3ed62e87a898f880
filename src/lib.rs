//! authgate: a reverse-proxy authentication gateway for legacy backends.
//!
//! It lets public routes through, verifies the access token on every other request, checks its
//! server-side session, hands a fresh token back in a response header when the old one nears
//! expiry, strips any identity headers a client sent and injects the verified ones, then
//! forwards to the legacy upstream. It also issues tokens itself (login, refresh with rotation
//! and theft detection, logout, per-platform sessions).
//!
//! # Layout
//! Modules form tiers; a module imports only from tiers below its own (`tests/layers.rs`
//! reads this list and checks every `use crate::…`). Lowest first:
//!
//! 0. `clock`, `body`, `shutdown`, `claims`, `logs`: time ([`clock::Clock`],
//!    [`clock::Millis`]), the body type, the one shutdown signal every background task and
//!    connection hears ([`shutdown::Shutdown`]), reading a token's claims by name or JSON
//!    pointer, and where log lines go with each request's log context (its id, what the
//!    phases found, why it was refused).
//! 1. `routing`, `tokens`, `session`: the path canonicaliser and route table; the key ring
//!    (verify, mint, JWKS, the single-flight silent-refresh mint) and the identity providers'
//!    keys (`[[token.issuers]]`, fetched and refreshed); the session store (memory,
//!    Redis: sessions, refresh rotation, kick-out, lock-out counters, revocations; a single
//!    node, a Cluster or Sentinel, behind a circuit breaker; and the Redis store's local
//!    session cache that the revocation channel keeps true).
//! 2. `error`: [`error::GatewayError`], the `From` impls of the domain errors below, and its
//!    one mapping to HTTP.
//! 3. `config`: `gateway.toml` → validated [`config::Config`], one file per section.
//! 4. `audit`, `streams`: one JSON line per security event; a session's open tunnels and
//!    streams, ended with it.
//! 5. `proxy`: the upstream client (pool, round robin, hop-by-hop, X-Forwarded-*, identity
//!    headers, the WebSocket tunnel, its errors counted by kind).
//! 6. `login`: credential backends (users file with Argon2id, the legacy app's own login),
//!    the lock-out policy, the per-IP flood guard and the login captcha.
//! 7. `metrics`, `notify`: the Prometheus recorder, the catalogue of every metric, the
//!    request counters and the count of requests in flight; the signed session events of
//!    `[notify]` (a bounded queue and the workers that POST them off the request path).
//! 8. `app`: the shared state: the live config snapshot (`ArcSwap`) and what outlives it
//!    (store, clock, refresher, stream registry).
//! 9. `reload`: live reload of the config and the users file.
//! 10. `auth`: the one authentication path: extract, verify, session check, requirements,
//!     silent refresh; used by the pipeline and the endpoints alike.
//! 11. `pipeline`, `endpoints`, `explain`: one proxied request through its phases; the
//!     gateway's own `/auth/*` endpoints and the admin listener; `authgate explain`. The
//!     three never import each other.
//! 12. `server`: listeners, TLS, protocol detection, the connection watchdog, the front
//!     router (admin → admin, `login.prefix` and JWKS → endpoints, the rest → pipeline).
//! 13. `demo`: `authgate demo`'s echo upstream, token service (near-expiry tokens, a stand-in
//!     identity provider), single-page app (the JavaScript client of `clients/js`) and config.
//! 14. `fuzzing`: the entry points of the fuzz targets in `fuzz/` (hidden, not an API).
//!
//! `main.rs` (the command line) sits on top. A request's path through the files is in
//! `ARCHITECTURE.md`.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod app;
mod audit;
mod auth;
pub mod body;
mod claims;
pub mod clock;
pub mod config;
pub mod demo;
mod endpoints;
mod error;
pub mod explain;
#[doc(hidden)]
pub mod fuzzing;
mod login;
pub mod logs;
mod metrics;
mod notify;
mod pipeline;
mod proxy;
pub mod reload;
mod routing;
pub mod server;
pub mod session;
pub mod shutdown;
mod streams;
pub mod tokens;
