//! Where a request goes: the path canonicaliser ([`path`]) and the route table ([`table`]),
//! both working on the canonical path alone.

pub mod path;
pub mod table;

pub use path::{canonicalize, PathError, PathRules};
pub use table::{AuthMode, Route, RouteMatch, RouteTable, Unrouted};
