//! One request through the gateway's phases, in one direction.

pub mod cors;
pub mod identity;
pub mod path;
pub mod refresh;
pub mod route;
pub mod token;
