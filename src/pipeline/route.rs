//! Route matching on the canonical path alone: first match in file order wins.
//!
//! `path` is a prefix on segment boundaries (`/api` matches `/api` and `/api/x`, not `/apix`),
//! `exact` one path, `glob` a pattern whose `*` is exactly one segment. A route with `methods`
//! matches only those; a path that some route matches but no route allows the method for is
//! a 405.

use http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Public,
    Required,
    Optional,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Normalised: starts with `/`, no trailing slash unless it is `/`.
    Prefix(String),
    Exact(String),
    /// Segments of the pattern; `None` is a `*`.
    Glob(Vec<Option<String>>),
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the file (`routes[i]`).
    pub index: usize,
    /// The pattern as written, for logs, metrics and `explain`.
    pub label: String,
    pub matcher: Matcher,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    pub auth: AuthMode,
    /// `None`: every method.
    pub methods: Option<Vec<Method>>,
    pub require_roles: Vec<String>,
    pub require_tenants: Vec<String>,
    /// Normalised like a prefix; removed from the canonical path before forwarding.
    pub strip_prefix: Option<String>,
}

/// The outcome of matching one request.
#[derive(Debug)]
pub enum RouteMatch<'a> {
    Found(&'a Route),
    /// Some route matched the path but none allows the method.
    MethodNotAllowed(&'a Route),
    NotFound,
}

/// All routes in file order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the route for a canonical path and method.
    pub fn find(&self, path: &str, method: &Method) -> RouteMatch<'_> {
        let _ = (path, method);
        todo!("RouteTable::find")
    }

    /// Warnings for `check`: routes shadowed by earlier ones, public routes overlapping
    /// protected ones.
    pub fn warnings(&self) -> Vec<String> {
        todo!("RouteTable::warnings")
    }
}

impl Route {
    /// The path to forward: the canonical path with `strip_prefix` removed (never empty).
    pub fn forward_path<'p>(&self, canonical: &'p str) -> &'p str {
        let _ = canonical;
        todo!("Route::forward_path")
    }
}
