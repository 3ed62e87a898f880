//! The one test harness: a real gateway on port 0 (through the library entry `config::load_str`
//! → `App::new` → `server::start`), small hyper upstreams that count what reaches them, an HTTP
//! client (hyper-util's legacy client, HTTP/1.1 or h2c), a raw-socket client for requests that
//! must go out byte for byte, and hand-built JWTs for the token attacks.
//!
//! Every test module takes it whole (`use crate::support::*`); each part has its own file.

mod client;
mod gateway;
mod jwt;
mod redis;
mod upstream;
mod wait;

pub use client::*;
pub use gateway::*;
pub use jwt::*;
pub use self::redis::*;
pub use upstream::*;
pub use wait::*;
