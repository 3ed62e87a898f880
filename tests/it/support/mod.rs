//! The one test harness, shared by every integration test: a real gateway on port 0 built as
//! the binary builds it, stateless or with sessions in memory or in a `redis-server` of its own
//! ([`gateway`]); small hyper upstreams that count what reaches them ([`upstream`]); HTTP/1.1,
//! h2c and raw-socket clients ([`client`]); an identity provider stand-in serving discovery and a
//! JWKS of test keys for `[[token.issuers]]` ([`idp`]); hand-built JWTs ([`jwt`]); the test users
//! ([`users`]); a receiver of `[notify]`'s signed session events ([`receiver`]); the throw-away Redis ([`redis`], compiled by the unit tests too); bounded waits
//! and the tests' one wall-clock `now()` ([`wait`]); real nginx and Caddy in front of a gateway,
//! run from the forward-auth recipes in `examples/` ([`front`]); every log line the suite's
//! gateways write, captured, read back and checked for secrets ([`logs`]).
//!
//! Every test module takes it whole: `use crate::support::*`.

mod client;
mod front;
mod gateway;
mod idp;
mod jwt;
pub mod logs;
mod receiver;
mod redis;
mod upstream;
mod users;
mod wait;

pub use crate::{both_stores, gateway};
pub use client::*;
pub use front::*;
pub use gateway::*;
pub use idp::*;
pub use jwt::*;
pub use receiver::*;
pub use redis::{installed_or_skip, program_or_skip, RedisSentinels, RedisServer};
pub use upstream::*;
pub use users::*;
pub use wait::*;
