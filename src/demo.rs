//! `authgate demo`.
