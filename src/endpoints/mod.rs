//! The gateway's own endpoints: `/auth/*` and JWKS on the proxy listener (`auth.rs`), and the
//! admin listener with health, readiness, metrics and the admin API (`admin.rs`).

pub(crate) mod admin;
pub(crate) mod auth;

pub(crate) use auth::JWKS_PATH;
