//! The serde mirror of `gateway.toml`: every key with its default, unknown keys rejected.
