//! The upstream client.
