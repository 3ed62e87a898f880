//! The gateway's own endpoints: `/auth/*` and JWKS on the proxy listener (`auth.rs`), and the
//! admin listener with health, readiness, metrics and the admin API (`admin.rs`).

pub mod admin;
pub mod auth;

pub use auth::JWKS_PATH;
