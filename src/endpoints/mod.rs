//! The gateway's own endpoints.
