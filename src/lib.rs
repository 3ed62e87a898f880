//! authgate: a reverse-proxy authentication gateway for legacy backends.
//!
//! It lets public routes through, verifies the access token on every other request, checks its
//! server-side session, hands a fresh token back in a response header when the old one nears
//! expiry, strips any identity headers a client sent and injects the verified ones, then
//! forwards to the legacy upstream. It also issues tokens itself (login, refresh with rotation
//! and theft detection, logout, per-platform sessions).
//!
//! # Layout
//! - [`app`]: the shared state: the live config snapshot (`ArcSwap`), the session store,
//!   the silent-refresh cache, the registry of open streams.
//! - [`config`]: `gateway.toml` → validated [`config::Config`]; live reload.
//! - [`server`]: listeners, TLS, connection limits, graceful shutdown.
//! - [`pipeline`]: one request through its phases: [`pipeline::path`] (canonicalise),
//!   [`pipeline::route`] (match), [`pipeline::token`] (extract + verify),
//!   [`pipeline::identity`] (strip + inject), [`pipeline::refresh`] (silent refresh),
//!   [`pipeline::cors`], [`pipeline::live_streams`] (close a session's streams when it ends).
//! - [`proxy`]: the upstream client: pool, round robin, hop-by-hop headers, X-Forwarded-*,
//!   the WebSocket tunnel (closed with a Close frame when its session ends).
//! - [`tokens`]: key ring, verification, minting, JWKS, keygen.
//! - [`session`]: the session store (memory, Redis): sessions, refresh rotation, kick-out,
//!   lock-out counters, revocation broadcast.
//! - [`login`]: credential backends (users file with Argon2id, the legacy app's own login),
//!   lock-out policy and the per-IP flood guard.
//! - [`endpoints`]: the gateway's own `/auth/*` endpoints and the admin listener.
//! - [`audit`]: one JSON line per security event.
//! - [`explain`]: `authgate explain` (and its exit code: forwarded or refused).
//! - [`error`]: [`error::GatewayError`] and its one mapping to HTTP.
//! - [`body`]: the streaming body type used throughout.
//! - [`demo`]: `authgate demo`'s echo upstream, near-expiry token service and config.
#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod body;
pub mod config;
pub mod demo;
pub mod endpoints;
pub mod error;
pub mod explain;
pub mod login;
pub mod pipeline;
pub mod proxy;
pub mod server;
pub mod session;
pub mod tokens;
