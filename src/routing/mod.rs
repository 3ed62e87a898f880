//! Where a request goes: the path canonicaliser ([`path`]) and the route table ([`table`]),
//! both working on the canonical path alone.

pub(crate) mod path;
pub(crate) mod table;

pub(crate) use path::{canonicalize, PathError};
pub(crate) use table::{AuthMode, Route, Unrouted};
