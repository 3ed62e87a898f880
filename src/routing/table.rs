//! Route matching on the canonical path alone: first match in file order wins.
//!
//! `path` is a prefix on segment boundaries (`/api` matches `/api` and `/api/x`, not `/apix`),
//! `exact` one path, `glob` a pattern whose `*` is exactly one segment. The first route whose
//! path matches decides; if it does not list the method, a later route with the *same*
//! pattern may take it (`GET /api` public, `POST /api` required), and otherwise the answer is
//! a 405: an unlisted method never falls through to a broader route (which might be public).
//!
//! Matching rules, precisely (paths are canonical, see [`super::path`]):
//! - Segments are compared by name, the part before a `;`: `/admin;jsessionid=1` is `/admin` to
//!   every matcher, because servlet containers strip such parameters before routing and must
//!   not see a protected path under a different route's rules. Patterns may not contain `;`.
//! - A trailing slash is ignored, in patterns and in paths: `exact = "/x"` matches `/x` and
//!   `/x/` (frameworks commonly serve both alike, so both get the same rules); a glob likewise.
//! - Patterns are canonicalised like request paths (`/%7Eu` is `/~u`, `%c3` is `%C3`, `//` is
//!   `/`) and may not hold `.` or `..` segments.
//! - A route listing `GET` also takes `HEAD`.
//! - Unless `server.route_case_sensitive`, patterns are compared without regard to ASCII case
//!   (`/ADMIN/x` is `/admin/x`), as IIS, ASP.NET and Express route: a case-blind upstream must
//!   never serve a protected path under another route's rules. Such a route's pattern is kept
//!   in ASCII lower case ([`Matcher::folded`]), so "the same pattern" and the `check` warnings
//!   fold case too; the path itself is forwarded as sent.
//!
//! [`RouteTable::find`] is a linear scan that does not allocate; [`RouteTable::explain`] says
//! why each route did or did not take a request, and [`RouteTable::warnings`] finds shadowed
//! routes and public routes that take over protected paths, for `authgate check`.

use std::fmt;

use http::Method;

use super::path::{canonicalize, PathError, PathRules};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Public,
    Required,
    Optional,
}

impl AuthMode {
    /// `public`, `required` or `optional`, as in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Public => "public",
            AuthMode::Required => "required",
            AuthMode::Optional => "optional",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Normalised: starts with `/`, no trailing slash unless it is `/`.
    Prefix(String),
    Exact(String),
    /// Segments of the pattern; `None` is a `*`.
    Glob(Vec<Option<String>>),
}

/// Why a route pattern (or `strip_prefix`) was refused; `check` prints it under the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("must start with /")]
    NotAbsolute,
    #[error("not a valid path: {0}")]
    Path(PathError),
    #[error("must not contain . or .. segments")]
    DotSegment,
    #[error("must not contain ; (segment parameters are ignored when matching)")]
    Params,
    #[error("* must be a whole segment (write %2A for a literal *)")]
    PartialWildcard,
}

/// Checks and normalises a pattern: canonical, no dot segments, no `;`, no trailing slash
/// unless it is `/`. Also the form `strip_prefix` takes.
pub(crate) fn normalize_pattern(pattern: &str) -> Result<String, PatternError> {
    if !pattern.starts_with('/') {
        return Err(PatternError::NotAbsolute);
    }
    if pattern.split('/').any(is_dot_segment) {
        return Err(PatternError::DotSegment);
    }
    // Patterns may name a `%25` path: whether requests may carry one is the request side's rule.
    let lenient = PathRules {
        allow_encoded_percent: true,
    };
    let canonical = canonicalize(pattern, lenient).map_err(|e| match e {
        PathError::DotSegmentParams => PatternError::Params,
        e => PatternError::Path(e),
    })?;
    if canonical.contains(';') {
        return Err(PatternError::Params);
    }
    let trimmed = canonical.strip_suffix('/').unwrap_or(&canonical);
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

/// `.` or `..`, also percent-encoded (only the pattern checker needs this; requests resolve them).
fn is_dot_segment(raw: &str) -> bool {
    let decoded = raw.replace("%2e", ".").replace("%2E", ".");
    decoded == "." || decoded == ".."
}

impl Matcher {
    /// `path = "..."`: a prefix on segment boundaries.
    pub fn parse_prefix(pattern: &str) -> Result<Self, PatternError> {
        normalize_pattern(pattern).map(Matcher::Prefix)
    }

    /// `exact = "..."`: one path (a trailing slash on either side ignored).
    pub fn parse_exact(pattern: &str) -> Result<Self, PatternError> {
        normalize_pattern(pattern).map(Matcher::Exact)
    }

    /// `glob = "..."`: `*` stands for exactly one non-empty segment.
    pub fn parse_glob(pattern: &str) -> Result<Self, PatternError> {
        let normal = normalize_pattern(pattern)?;
        segments(&normal)
            .map(|seg| match seg {
                "*" => Ok(None),
                s if s.contains('*') => Err(PatternError::PartialWildcard),
                s => Ok(Some(s.to_owned())),
            })
            .collect::<Result<_, _>>()
            .map(Matcher::Glob)
    }

    /// The matcher with its pattern in ASCII lower case, for case-blind matching.
    pub fn folded(self) -> Self {
        match self {
            Matcher::Prefix(p) => Matcher::Prefix(p.to_ascii_lowercase()),
            Matcher::Exact(p) => Matcher::Exact(p.to_ascii_lowercase()),
            Matcher::Glob(g) => Matcher::Glob(
                g.into_iter()
                    .map(|s| s.map(|s| s.to_ascii_lowercase()))
                    .collect(),
            ),
        }
    }

    /// Whether the canonical `path` is one of this matcher's paths (`fold`: without regard to
    /// ASCII case). Does not allocate.
    pub fn matches(&self, path: &str, fold: bool) -> bool {
        self.matches_plain(path, !path.contains(';'), fold)
    }

    /// [`matches`](Self::matches), told whether `path` has no `;` parameters: then a prefix
    /// or an exact pattern (normalised, never with `;`) is a plain string comparison, which
    /// is what nearly every request needs.
    fn matches_plain(&self, path: &str, plain: bool, fold: bool) -> bool {
        if plain && path.starts_with('/') {
            match self {
                Matcher::Prefix(prefix) => {
                    return prefix == "/"
                        || strip(path, prefix, fold)
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
                }
                Matcher::Exact(exact) if exact != "/" => {
                    return strip(path, exact, fold)
                        .is_some_and(|rest| rest.is_empty() || rest == "/");
                }
                _ => {}
            }
        }
        match self {
            Matcher::Prefix(prefix) => prefix_len(prefix, path, fold).is_some(),
            Matcher::Exact(exact) => {
                let mut path = segments(path);
                segments(exact).all(|want| path.next().is_some_and(|s| same(name(s), want, fold)))
                    && path.next().is_none()
            }
            Matcher::Glob(pattern) => {
                let mut path = segments(path);
                pattern.iter().all(|want| {
                    path.next().is_some_and(|s| match want {
                        None => !name(s).is_empty(),
                        Some(want) => same(name(s), want, fold),
                    })
                }) && path.next().is_none()
            }
        }
    }

    /// `path`, `exact` or `glob`: the config key the matcher comes from.
    pub fn key(&self) -> &'static str {
        match self {
            Matcher::Prefix(_) => "path",
            Matcher::Exact(_) => "exact",
            Matcher::Glob(_) => "glob",
        }
    }

    /// The matcher as a sequence of segments, and whether it goes on (a prefix).
    fn shape(&self) -> Shape<'_> {
        match self {
            Matcher::Prefix(p) => Shape {
                segs: segments(p).map(Some).collect(),
                open: true,
            },
            Matcher::Exact(p) => Shape {
                segs: segments(p).map(Some).collect(),
                open: false,
            },
            Matcher::Glob(g) => Shape {
                segs: g.iter().map(Option::as_deref).collect(),
                open: false,
            },
        }
    }
}

/// The segments of a path, without the leading `/` and a trailing empty one: `/` has none,
/// `/a/b/` has `a`, `b`.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let inner = path.strip_prefix('/').unwrap_or(path);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    (!inner.is_empty())
        .then(|| inner.split('/'))
        .into_iter()
        .flatten()
}

/// A segment without its `;` parameters.
fn name(segment: &str) -> &str {
    segment.split_once(';').map_or(segment, |(name, _)| name)
}

/// A path segment against a pattern segment (`fold`: the pattern is lower case and ASCII case
/// is ignored; escapes compare alike either way, their hex digits being case-blind).
fn same(segment: &str, pattern: &str, fold: bool) -> bool {
    if fold {
        segment.eq_ignore_ascii_case(pattern)
    } else {
        segment == pattern
    }
}

/// `path` without `prefix` (compared as [`same`] does), or `None` when it does not start so.
fn strip<'p>(path: &'p str, prefix: &str, fold: bool) -> Option<&'p str> {
    if !fold {
        return path.strip_prefix(prefix);
    }
    let head = path.as_bytes().get(..prefix.len())?;
    // Canonical paths are ASCII, so the cut is a char boundary; `get` says so if not.
    head.eq_ignore_ascii_case(prefix.as_bytes())
        .then(|| path.get(prefix.len()..))
        .flatten()
}

/// How many bytes of `path` the segments of `prefix` cover (parameters of the last one
/// included), or `None` when `path` does not start with them.
fn prefix_len(prefix: &str, path: &str, fold: bool) -> Option<usize> {
    let mut path = segments(path);
    let mut len = 0;
    for want in segments(prefix) {
        let seg = path.next().filter(|s| same(name(s), want, fold))?;
        len += 1 + seg.len();
    }
    Some(len)
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
    /// Every one must be granted (`scope` or `scp`).
    pub(crate) require_scopes: Vec<String>,
    /// Each claim (by name or pointer) must equal its value.
    pub(crate) require_claims: Vec<(crate::claims::ClaimPath, serde_json::Value)>,
    /// Normalised like a prefix; removed from the canonical path before forwarding.
    pub strip_prefix: Option<String>,
    /// Match (and strip) without regard to ASCII case: `!server.route_case_sensitive`. The
    /// matcher and `strip_prefix` are then lower case.
    pub fold: bool,
}

/// The outcome of matching one request.
#[derive(Debug, Clone, Copy)]
pub enum RouteMatch<'a> {
    Found(&'a Route),
    /// Some route matched the path but none allows the method.
    MethodNotAllowed(&'a Route),
    NotFound,
}

/// Why no route takes a request (each has its contract answer: 405, 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrouted {
    MethodNotAllowed,
    NotFound,
}

impl<'a> RouteMatch<'a> {
    /// The route that takes the request, or why none does.
    pub fn found(self) -> Result<&'a Route, Unrouted> {
        match self {
            RouteMatch::Found(r) => Ok(r),
            RouteMatch::MethodNotAllowed(_) => Err(Unrouted::MethodNotAllowed),
            RouteMatch::NotFound => Err(Unrouted::NotFound),
        }
    }
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

    /// Finds the route for a canonical path and method: the first route that matches both;
    /// else the first that matches the path (405); else none (404). Does not allocate.
    pub fn find(&self, path: &str, method: &Method) -> RouteMatch<'_> {
        // The first route whose path matches decides. Only routes with the very same pattern
        // may take a method it does not list (`GET /api` public, then `POST /api` required);
        // a broader later route never does, so an unlisted method can't slip from a
        // protected route to a public catch-all: it is a 405.
        let mut first: Option<&Route> = None;
        let plain = !path.contains(';');
        for route in &self.routes {
            match first {
                Some(f) if route.matcher != f.matcher => continue,
                None if !route.matcher.matches_plain(path, plain, route.fold) => continue,
                _ => {}
            }
            if route.allows(method) {
                return RouteMatch::Found(route);
            }
            first.get_or_insert(route);
        }
        first.map_or(RouteMatch::NotFound, RouteMatch::MethodNotAllowed)
    }

    /// What [`find`](Self::find) decides, with each route's part in it, for `authgate explain`.
    pub fn explain(&self, path: &str, method: &Method) -> Explanation<'_> {
        let outcome = self.find(path, method);
        let chosen = match outcome {
            RouteMatch::Found(r) => Some(r.index),
            _ => None,
        };
        // Mirrors `find`: the first route matching the path decides, and only routes with the
        // same pattern are looked at after it.
        let mut first: Option<&Matcher> = None;
        let mut done = false;
        let steps = self
            .routes
            .iter()
            .map(|route| {
                let verdict = if done {
                    Verdict::NotReached
                } else if Some(route.index) == chosen {
                    done = true;
                    Verdict::Taken
                } else if first.is_some_and(|f| *f != route.matcher) {
                    Verdict::NotReached
                } else if !route.matcher.matches(path, route.fold) {
                    Verdict::PathDiffers
                } else {
                    first.get_or_insert(&route.matcher);
                    Verdict::MethodNotListed
                };
                Step { route, verdict }
            })
            .collect();
        Explanation {
            path: path.to_owned(),
            method: method.clone(),
            outcome,
            steps,
        }
    }

    /// Warnings for `check`: routes shadowed by earlier ones, public routes overlapping
    /// protected ones.
    ///
    /// A route is shadowed when an earlier route with another pattern includes all of its
    /// paths (that route decides for every method), or when earlier routes with the same
    /// pattern together allow every method it allows. A public route takes over a protected
    /// (required or optional) route's paths when the two share paths, the public one is not
    /// simply a carve-out inside the protected one, and it comes first (for a method both
    /// allow, if they have the same pattern); or, with the same pattern, it comes later and
    /// takes the methods the protected one does not list. Routes are compared pairwise, so a
    /// route in between that takes those requests first is not accounted for.
    pub fn warnings(&self) -> Vec<String> {
        let shapes: Vec<Shape<'_>> = self.routes.iter().map(|r| r.matcher.shape()).collect();
        let methods: Vec<Option<Vec<Method>>> =
            self.routes.iter().map(|r| effective(&r.methods)).collect();
        let mut warnings = Vec::new();
        let mut shadowed = vec![false; self.routes.len()];

        for (j, route) in self.routes.iter().enumerate() {
            if methods[j].as_ref().is_some_and(Vec::is_empty) {
                warnings.push(format!("{route} lists no methods, so it never matches"));
                shadowed[j] = true;
                continue;
            }
            // Methods of route j not yet taken by an earlier covering route; `None`: all.
            let mut left = methods[j].clone();
            let mut by = Vec::new();
            for i in 0..j {
                if !shapes[i].covers(&shapes[j]) {
                    continue;
                }
                let same = self.routes[i].matcher == route.matcher;
                match (&methods[i], &mut left) {
                    // Another pattern covering every path decides first, for every method.
                    _ if !same => {
                        by.push(i);
                        left = Some(Vec::new());
                    }
                    (None, _) => {
                        by.push(i);
                        left = Some(Vec::new());
                    }
                    (Some(taken), Some(left)) => {
                        let before = left.len();
                        left.retain(|m| !taken.contains(m));
                        if left.len() < before {
                            by.push(i);
                        }
                    }
                    // Only an unrestricted route takes every method.
                    (Some(_), None) => {}
                }
                if left.as_ref().is_some_and(Vec::is_empty) {
                    let by: Vec<String> = by.iter().map(|&i| self.routes[i].to_string()).collect();
                    warnings.push(format!("{route} is shadowed by {}", by.join(", ")));
                    shadowed[j] = true;
                    break;
                }
            }
        }

        for (p, public) in self.routes.iter().enumerate() {
            if public.auth != AuthMode::Public || shadowed[p] {
                continue;
            }
            for (q, protected) in self.routes.iter().enumerate() {
                let same = public.matcher == protected.matcher;
                if protected.auth == AuthMode::Public
                    || !shapes[p].intersects(&shapes[q])
                    || (shapes[q].covers(&shapes[p]) && !same)
                {
                    continue;
                }
                let auth = protected.auth.as_str();
                if p < q && (!same || methods_intersect(&methods[p], &methods[q])) {
                    warnings.push(format!(
                        "{public} is public and comes first, so it takes requests to paths of \
                         {protected}, which is {auth}"
                    ));
                } else if p > q && same && methods_exceed(&methods[p], &methods[q]) {
                    warnings.push(format!(
                        "{public} is public and takes requests to paths of {protected}, which is \
                         {auth}, for the methods {protected} does not list"
                    ));
                }
            }
        }
        warnings
    }
}

impl Route {
    /// The path to forward: the canonical path with `strip_prefix` removed (never empty).
    ///
    /// The prefix is removed on segment boundaries only, together with any `;` parameters
    /// of its last segment (`/api;v=1/x` without `/api` is `/x`); a path that does not start
    /// with it is forwarded whole.
    pub fn forward_path<'p>(&self, canonical: &'p str) -> &'p str {
        let Some(prefix) = self.strip_prefix.as_deref() else {
            return canonical;
        };
        // `prefix_len` ends on a segment boundary (before a `/` or at the end), a char
        // boundary within `canonical`, so the slice cannot panic.
        match prefix_len(prefix, canonical, self.fold).map(|len| &canonical[len..]) {
            Some("") => "/",
            Some(rest) => rest,
            None => canonical,
        }
    }

    /// Whether the route takes this method (`HEAD` where `GET` is listed). CONNECT and TRACE
    /// only where listed: a route without `methods` does not take them (CONNECT would reach
    /// the upstream as `CONNECT /path`, h2 extended CONNECT included; TRACE echoes headers).
    pub fn allows(&self, method: &Method) -> bool {
        match &self.methods {
            None => *method != Method::CONNECT && *method != Method::TRACE,
            Some(list) => {
                list.contains(method) || (method == Method::HEAD && list.contains(&Method::GET))
            }
        }
    }
}

/// `routes[3] (path "/api/x")`, as `check` and `explain` name a route.
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "routes[{}] ({} {:?})",
            self.index,
            self.matcher.key(),
            self.label
        )
    }
}

/// A matcher as segments (`None`: a `*`), `open` when it also matches longer paths.
#[derive(Debug)]
struct Shape<'a> {
    segs: Vec<Option<&'a str>>,
    open: bool,
}

impl Shape<'_> {
    /// Every path `other` matches, `self` matches too.
    fn covers(&self, other: &Shape<'_>) -> bool {
        let lengths_fit = if self.open {
            other.segs.len() >= self.segs.len()
        } else {
            !other.open && other.segs.len() == self.segs.len()
        };
        lengths_fit
            && self
                .segs
                .iter()
                .zip(&other.segs)
                .all(|(a, b)| match (a, b) {
                    (None, _) => true,
                    (Some(a), Some(b)) => a == b,
                    (Some(_), None) => false,
                })
    }

    /// Some path matches both.
    fn intersects(&self, other: &Shape<'_>) -> bool {
        let (short, long) = if self.segs.len() <= other.segs.len() {
            (self, other)
        } else {
            (other, self)
        };
        let lengths_fit = short.open || short.segs.len() == long.segs.len();
        lengths_fit
            && short
                .segs
                .iter()
                .zip(&long.segs)
                .all(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                })
    }
}

/// The methods a route takes, `HEAD` added where `GET` is listed; `None`: all.
fn effective(methods: &Option<Vec<Method>>) -> Option<Vec<Method>> {
    methods.as_ref().map(|list| {
        let mut all = list.clone();
        if all.contains(&Method::GET) && !all.contains(&Method::HEAD) {
            all.push(Method::HEAD);
        }
        all
    })
}

/// Some method is taken by both.
fn methods_intersect(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        (Some(list), None) | (None, Some(list)) => !list.is_empty(),
        (None, None) => true,
    }
}

/// Some method taken by `a` is not taken by `b`.
fn methods_exceed(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> bool {
    match (a, b) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a.iter().any(|m| !b.contains(m)),
    }
}

/// What one route made of a request in [`RouteTable::explain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its pattern does not match the path.
    PathDiffers,
    /// It matches the path but does not list the method.
    MethodNotListed,
    /// It takes the request.
    Taken,
    /// An earlier route took the request.
    NotReached,
}

/// One route's part in an [`Explanation`].
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    pub route: &'a Route,
    pub verdict: Verdict,
}

/// Why a request goes where it goes: the outcome and every route's verdict, in file order.
/// `Display` writes one summary line, then one line per route that was tried.
#[derive(Debug, Clone)]
pub struct Explanation<'a> {
    pub path: String,
    pub method: Method,
    pub outcome: RouteMatch<'a>,
    pub steps: Vec<Step<'a>>,
}

impl fmt::Display for Explanation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (method, path) = (&self.method, &self.path);
        match self.outcome {
            RouteMatch::Found(route) => write!(f, "{method} {path} goes to {route}")?,
            RouteMatch::MethodNotAllowed(route) => write!(
                f,
                "{method} {path}: 405 method_not_allowed: {route} matches the path but does not \
                 list {method}"
            )?,
            RouteMatch::NotFound if self.steps.is_empty() => {
                write!(f, "{method} {path}: 404 no_route: no routes are configured")?
            }
            RouteMatch::NotFound => write!(
                f,
                "{method} {path}: 404 no_route: no route matches the path"
            )?,
        }
        for step in self
            .steps
            .iter()
            .filter(|s| s.verdict != Verdict::NotReached)
        {
            let route = step.route;
            write!(f, "\n  {route}: ")?;
            match step.verdict {
                Verdict::PathDiffers => write!(f, "path does not match")?,
                Verdict::Taken => write!(f, "matches")?,
                Verdict::MethodNotListed => {
                    let listed: Vec<&str> =
                        route.methods.iter().flatten().map(Method::as_str).collect();
                    write!(f, "path matches, method not in [{}]", listed.join(", "))?
                }
                Verdict::NotReached => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_comparison_agrees_with_segment_matching() {
        let patterns = [
            "/", "/a", "/a/", "/api", "/api/v1", "/a/b/c", "/public", "/x-y.z", "/%41", "/A/Pi",
            "/%C3%A9",
        ];
        let paths = [
            "/",
            "/a",
            "/a/",
            "/a//",
            "/ab",
            "/a/b",
            "/a/b/",
            "/a/b/c",
            "/a/b/cd",
            "/a/bc",
            "/api",
            "/api/",
            "/apix",
            "/api/v1",
            "/api/v1/",
            "/api/v10",
            "/api/v1/x",
            "/public",
            "/publicx",
            "/public/",
            "/public/x",
            "/x-y.z",
            "/x-y.z/q",
            "/%41",
            "/%41/",
            "/%41x",
            "//",
            "/b",
            "",
            "/A",
            "/API/v1",
            "/Api/V1/x",
            "/a/pI",
            "/a/pix",
            "/%C3%A9",
            "/%c3%a9/x",
            "/%C3%89",
        ];
        for pattern in patterns {
            for (m, fold) in [
                (Matcher::parse_prefix(pattern).unwrap(), false),
                (Matcher::parse_exact(pattern).unwrap(), false),
                (Matcher::parse_prefix(pattern).unwrap().folded(), true),
                (Matcher::parse_exact(pattern).unwrap().folded(), true),
            ] {
                for path in paths {
                    assert_eq!(
                        m.matches_plain(path, true, fold),
                        m.matches_plain(path, false, fold),
                        "{} {pattern:?} (fold {fold}) against {path:?}",
                        m.key()
                    );
                }
            }
        }
    }

    #[test]
    fn routes_match_without_regard_to_ascii_case_unless_told() {
        let folded = |m: Matcher| m.folded();
        let cases: &[(Matcher, &str, bool, bool)] = &[
            // (matcher, path, matches folded, matches case-sensitive)
            (
                Matcher::parse_prefix("/admin").unwrap(),
                "/ADMIN/x",
                true,
                false,
            ),
            (
                Matcher::parse_prefix("/admin").unwrap(),
                "/Admin",
                true,
                false,
            ),
            (
                Matcher::parse_prefix("/admin").unwrap(),
                "/aDmIn;x/y",
                true,
                false,
            ),
            (
                Matcher::parse_prefix("/admin").unwrap(),
                "/admin/x",
                true,
                true,
            ),
            (
                Matcher::parse_prefix("/Admin").unwrap(),
                "/admin/x",
                true,
                false,
            ),
            (
                Matcher::parse_prefix("/admin").unwrap(),
                "/ADMINX",
                false,
                false,
            ),
            (
                Matcher::parse_exact("/api/Login").unwrap(),
                "/API/LOGIN/",
                true,
                false,
            ),
            (
                Matcher::parse_glob("/files/*/Meta").unwrap(),
                "/FILES/7/meta",
                true,
                false,
            ),
            (
                Matcher::parse_glob("/files/*/meta").unwrap(),
                "/files/7/meta",
                true,
                true,
            ),
            // Only ASCII folds: é and É are different paths.
            (
                Matcher::parse_prefix("/caf%C3%A9").unwrap(),
                "/CAF%C3%A9",
                true,
                false,
            ),
            (
                Matcher::parse_prefix("/caf%C3%A9").unwrap(),
                "/caf%C3%89",
                false,
                false,
            ),
        ];
        for (m, path, want_folded, want_exact) in cases {
            assert_eq!(
                folded(m.clone()).matches(path, true),
                *want_folded,
                "{m:?} folded against {path:?}"
            );
            assert_eq!(
                m.matches(path, false),
                *want_exact,
                "{m:?} against {path:?}"
            );
        }
        // strip_prefix folds with the route and keeps the rest as sent.
        let mut r = route(0, "/stripped", AuthMode::Public, &[]);
        r.matcher = r.matcher.folded();
        r.strip_prefix = Some("/stripped".into());
        r.fold = true;
        assert_eq!(r.forward_path("/STRIPPED/Rest"), "/Rest");
        r.fold = false;
        assert_eq!(r.forward_path("/STRIPPED/Rest"), "/STRIPPED/Rest");
    }

    /// A route from a compact spec: `"/api"` prefix, `"=/x"` exact, `"~/a/*"` glob.
    fn route(index: usize, spec: &str, auth: AuthMode, methods: &[Method]) -> Route {
        let matcher = if let Some(p) = spec.strip_prefix('=') {
            Matcher::parse_exact(p)
        } else if let Some(p) = spec.strip_prefix('~') {
            Matcher::parse_glob(p)
        } else {
            Matcher::parse_prefix(spec)
        }
        .unwrap();
        Route {
            index,
            label: spec.trim_start_matches(['=', '~']).to_owned(),
            matcher,
            upstream: 0,
            auth,
            methods: (!methods.is_empty()).then(|| methods.to_vec()),
            require_roles: Vec::new(),
            require_tenants: Vec::new(),
            require_scopes: Vec::new(),
            require_claims: Vec::new(),
            strip_prefix: None,
            fold: false,
        }
    }

    fn table(specs: &[(&str, AuthMode, &[Method])]) -> RouteTable {
        RouteTable::new(
            specs
                .iter()
                .enumerate()
                .map(|(i, (spec, auth, methods))| route(i, spec, *auth, methods))
                .collect(),
        )
    }

    /// `Some(i)`: found routes[i]; `Some(100 + i)`: 405 naming routes[i]; `None`: 404.
    fn outcome(t: &RouteTable, method: Method, path: &str) -> Option<usize> {
        match t.find(path, &method) {
            RouteMatch::Found(r) => Some(r.index),
            RouteMatch::MethodNotAllowed(r) => Some(100 + r.index),
            RouteMatch::NotFound => None,
        }
    }

    #[test]
    fn patterns_are_normalised() {
        let ok: &[(&str, &str)] = &[
            ("/", "/"),
            ("/api", "/api"),
            ("/api/", "/api"),
            ("//api//v1/", "/api/v1"),
            ("/%7Eu", "/~u"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/café", "/caf%C3%A9"),
            ("/a*", "/a*"),
        ];
        for (pattern, want) in ok {
            assert_eq!(
                normalize_pattern(pattern).as_deref(),
                Ok(*want),
                "{pattern:?}"
            );
        }
        let bad: &[(&str, PatternError)] = &[
            ("", PatternError::NotAbsolute),
            ("api", PatternError::NotAbsolute),
            ("/a/../b", PatternError::DotSegment),
            ("/a/./b", PatternError::DotSegment),
            ("/a/%2e%2E", PatternError::DotSegment),
            ("/a;b", PatternError::Params),
            ("/a/;b", PatternError::Params),
            ("/a%2fb", PatternError::Path(PathError::EncodedSeparator)),
            ("/a/%zz", PatternError::Path(PathError::BadEscape)),
        ];
        for (pattern, want) in bad {
            assert_eq!(
                normalize_pattern(pattern).as_ref(),
                Err(want),
                "{pattern:?}"
            );
        }
        assert_eq!(
            Matcher::parse_glob("/files/*/meta/"),
            Ok(Matcher::Glob(vec![
                Some("files".into()),
                None,
                Some("meta".into())
            ]))
        );
        assert_eq!(
            Matcher::parse_glob("/files/*.json"),
            Err(PatternError::PartialWildcard)
        );
        assert_eq!(Matcher::parse_exact("/x/"), Ok(Matcher::Exact("/x".into())));
    }

    #[test]
    fn matchers() {
        let m = |spec: &str| route(0, spec, AuthMode::Public, &[]).matcher;
        let table: &[(&str, &str, bool)] = &[
            ("/api", "/api", true),
            ("/api", "/api/", true),
            ("/api", "/api/x", true),
            ("/api", "/api/x/y/", true),
            ("/api", "/apix", false),
            ("/api", "/ap", false),
            ("/api", "/", false),
            ("/api", "/x/api", false),
            ("/api", "/api;jsessionid=1", true),
            ("/api", "/api;v=1/x", true),
            ("/api", "/apix;v=1", false),
            ("/api/", "/api", true),
            ("/api/v1", "/api/v1/users", true),
            ("/api/v1", "/api/v2", false),
            ("/", "/", true),
            ("/", "/anything/at/all", true),
            ("=/x", "/x", true),
            ("=/x", "/x/", true),
            ("=/x", "/x;p", true),
            ("=/x", "/x/y", false),
            ("=/x", "/", false),
            ("=/x", "/xy", false),
            ("=/", "/", true),
            ("=/", "/x", false),
            ("~/files/*/meta", "/files/a/meta", true),
            ("~/files/*/meta", "/files/a/meta/", true),
            ("~/files/*/meta", "/files/a;v=1/meta", true),
            ("~/files/*/meta", "/files/meta", false),
            ("~/files/*/meta", "/files/a/b/meta", false),
            ("~/files/*/meta", "/files/a/meta/x", false),
            ("~/files/*/meta", "/files/a/other", false),
            ("~/files/*", "/files", false),
            ("~/files/*", "/files/", false),
            ("~/*", "/x", true),
            ("~/*", "/", false),
        ];
        for (spec, path, want) in table {
            assert_eq!(m(spec).matches(path, false), *want, "{spec:?} on {path:?}");
        }
    }

    #[test]
    fn find_first_match_and_methods() {
        use AuthMode::*;
        let (get, post, head, put) = (Method::GET, Method::POST, Method::HEAD, Method::PUT);
        let t = table(&[
            ("/api", Public, &[Method::GET]),
            ("=/admin", Required, &[Method::POST]),
            ("/", Required, &[]),
        ]);
        let cases: &[(&Method, &str, Option<usize>)] = &[
            (&get, "/api/x", Some(0)),
            (&head, "/api/x", Some(0)),
            // A broader route never takes what the GET-only public route does not list.
            (&post, "/api", Some(100)),
            (&post, "/admin", Some(1)),
            (&get, "/admin", Some(101)),
            (&get, "/apix", Some(2)),
            (&get, "/", Some(2)),
        ];
        for (method, path, want) in cases {
            assert_eq!(
                outcome(&t, (*method).clone(), path),
                *want,
                "{method} {path}"
            );
        }

        let t = table(&[
            ("/api", Public, &[Method::GET]),
            ("/api/admin", Required, &[Method::POST, Method::DELETE]),
        ]);
        let cases: &[(&Method, &str, Option<usize>)] = &[
            (&get, "/api/admin", Some(0)),
            // The first route matching the path decides: the later one is shadowed.
            (&post, "/api/admin", Some(100)),
            (&put, "/api/admin", Some(100)),
            (&put, "/api", Some(100)),
            (&get, "/other", None),
            (&head, "/api", Some(0)),
        ];
        for (method, path, want) in cases {
            assert_eq!(
                outcome(&t, (*method).clone(), path),
                *want,
                "{method} {path}"
            );
        }

        // HEAD alone does not admit GET.
        let t = table(&[("/h", Public, &[Method::HEAD])]);
        assert_eq!(outcome(&t, Method::GET, "/h"), Some(100));
        assert_eq!(outcome(&t, Method::GET, "/x"), None);
        assert_eq!(outcome(&RouteTable::default(), Method::GET, "/"), None);
    }

    #[test]
    fn canonical_bypass_paths_do_not_reach_public_route() {
        let t = table(&[
            ("/public", AuthMode::Public, &[]),
            ("/", AuthMode::Required, &[]),
        ]);
        for raw in [
            "/public/../private",
            "/public/%2e%2e/private",
            "//public/../private",
        ] {
            let canonical = canonicalize(raw, PathRules::default()).unwrap();
            assert_eq!(canonical, "/private");
            assert_eq!(outcome(&t, Method::GET, &canonical), Some(1), "{raw}");
        }
        for raw in [
            "/public/..;/private",
            "/public%2fprivate",
            "/public/%5c..%5cprivate",
        ] {
            assert!(canonicalize(raw, PathRules::default()).is_err(), "{raw}");
        }
    }

    #[test]
    fn forward_path_strips_on_segment_boundaries() {
        let mut r = route(0, "/api", AuthMode::Public, &[]);
        assert_eq!(r.forward_path("/api/x"), "/api/x");
        r.strip_prefix = Some(normalize_pattern("/api/").unwrap());
        let table: &[(&str, &str)] = &[
            ("/api", "/"),
            ("/api/", "/"),
            ("/api/x", "/x"),
            ("/api/x/", "/x/"),
            ("/api;v=1/x", "/x"),
            ("/api;v=1", "/"),
            ("/apix", "/apix"),
            ("/other", "/other"),
            ("/", "/"),
        ];
        for (path, want) in table {
            assert_eq!(r.forward_path(path), *want, "{path}");
        }
        r.strip_prefix = Some("/".into());
        assert_eq!(r.forward_path("/a/b"), "/a/b");
        r.strip_prefix = Some("/a/b".into());
        assert_eq!(r.forward_path("/a/b/c"), "/c");
        assert_eq!(r.forward_path("/a/c"), "/a/c");
    }

    #[test]
    fn warnings_table() {
        use AuthMode::*;
        const ALL: &[Method] = &[];
        const GET: &[Method] = &[Method::GET];
        const POST: &[Method] = &[Method::POST];
        const HEAD: &[Method] = &[Method::HEAD];
        const GET_POST: &[Method] = &[Method::GET, Method::POST];
        type Spec<'a> = &'a [(&'a str, AuthMode, &'a [Method])];
        let cases: &[(Spec<'_>, &[&str])] = &[
            // The contract's example: a public carve-out before a protected catch-all.
            (&[("/public", Public, ALL), ("/", Required, ALL)], &[]),
            (
                &[("/api", Required, ALL), ("/api/x", Required, ALL)],
                &[r#"routes[1] (path "/api/x") is shadowed by routes[0] (path "/api")"#],
            ),
            (
                &[
                    ("/", Required, ALL),
                    ("=/x", Required, ALL),
                    ("~/a/*", Required, ALL),
                ],
                &[
                    r#"routes[1] (exact "/x") is shadowed by routes[0] (path "/")"#,
                    r#"routes[2] (glob "/a/*") is shadowed by routes[0] (path "/")"#,
                ],
            ),
            // Same pattern twice.
            (
                &[("=/x", Required, ALL), ("=/x/", Required, ALL)],
                &[r#"routes[1] (exact "/x/") is shadowed by routes[0] (exact "/x")"#],
            ),
            // A glob covers an exact path and a narrower glob, not a prefix.
            (
                &[
                    ("~/f/*", Required, ALL),
                    ("=/f/a", Required, ALL),
                    ("~/f/*", Required, ALL),
                ],
                &[
                    r#"routes[1] (exact "/f/a") is shadowed by routes[0] (glob "/f/*")"#,
                    r#"routes[2] (glob "/f/*") is shadowed by routes[0] (glob "/f/*")"#,
                ],
            ),
            (&[("~/f/*", Required, ALL), ("/f/a", Required, ALL)], &[]),
            (&[("=/f", Required, ALL), ("/f", Required, ALL)], &[]),
            (&[("/api/x", Required, ALL), ("/api", Required, ALL)], &[]),
            (&[("/api", Required, ALL), ("/apix", Required, ALL)], &[]),
            // Method restrictions: a subset is shadowed, a superset is not; GET covers HEAD.
            (
                &[("/a", Required, GET_POST), ("/a", Required, GET)],
                &[r#"routes[1] (path "/a") is shadowed by routes[0] (path "/a")"#],
            ),
            (
                &[("/a", Required, GET), ("/a", Required, HEAD)],
                &[r#"routes[1] (path "/a") is shadowed by routes[0] (path "/a")"#],
            ),
            (&[("/a", Required, HEAD), ("/a", Required, GET)], &[]),
            (&[("/a", Required, GET), ("/a", Required, ALL)], &[]),
            (&[("/a", Required, GET), ("/a", Required, POST)], &[]),
            // Several earlier routes together.
            (
                &[
                    ("/a", Required, GET),
                    ("/b", Required, ALL),
                    ("/a", Required, POST),
                    ("/a/x", Required, GET_POST),
                ],
                &[r#"routes[3] (path "/a/x") is shadowed by routes[0] (path "/a")"#],
            ),
            // A public prefix before a protected path inside it.
            (
                &[("/api", Public, ALL), ("/api/admin", Required, ALL)],
                &[
                    r#"routes[1] (path "/api/admin") is shadowed by routes[0] (path "/api")"#,
                    r#"routes[0] (path "/api") is public and comes first, so it takes requests to paths of routes[1] (path "/api/admin"), which is required"#,
                ],
            ),
            (
                &[("/api", Public, GET), ("/api/admin", Optional, ALL)],
                &[
                    r#"routes[1] (path "/api/admin") is shadowed by routes[0] (path "/api")"#,
                    r#"routes[0] (path "/api") is public and comes first, so it takes requests to paths of routes[1] (path "/api/admin"), which is optional"#,
                ],
            ),
            // The first route matching the path decides, whatever the methods.
            (
                &[("/api", Public, GET), ("/api/admin", Required, POST)],
                &[
                    r#"routes[1] (path "/api/admin") is shadowed by routes[0] (path "/api")"#,
                    r#"routes[0] (path "/api") is public and comes first, so it takes requests to paths of routes[1] (path "/api/admin"), which is required"#,
                ],
            ),
            // Partial overlap of a glob and a prefix.
            (
                &[("~/a/*/b", Public, ALL), ("/a/x", Required, ALL)],
                &[
                    r#"routes[0] (glob "/a/*/b") is public and comes first, so it takes requests to paths of routes[1] (path "/a/x"), which is required"#,
                ],
            ),
            (&[("~/a/*/b", Public, ALL), ("/a/x/c", Required, ALL)], &[]),
            // A later public route with the same pattern takes the methods a protected one leaves;
            // a broader one does not (unlisted methods are a 405).
            (
                &[("/admin", Required, GET), ("/admin", Public, ALL)],
                &[
                    r#"routes[1] (path "/admin") is public and takes requests to paths of routes[0] (path "/admin"), which is required, for the methods routes[0] (path "/admin") does not list"#,
                ],
            ),
            (&[("/admin", Required, GET), ("/", Public, ALL)], &[]),
            (&[("/admin", Required, ALL), ("/", Public, ALL)], &[]),
            (
                &[("/", Required, POST), ("/docs", Public, GET)],
                &[r#"routes[1] (path "/docs") is shadowed by routes[0] (path "/")"#],
            ),
            // A shadowed public route takes nothing over.
            (
                &[
                    ("/", Required, ALL),
                    ("/x", Public, ALL),
                    ("/x/y", Required, ALL),
                ],
                &[
                    r#"routes[1] (path "/x") is shadowed by routes[0] (path "/")"#,
                    r#"routes[2] (path "/x/y") is shadowed by routes[0] (path "/")"#,
                ],
            ),
        ];
        for (specs, want) in cases {
            assert_eq!(table(specs).warnings(), *want, "{specs:?}");
        }

        let mut t = table(&[("/a", Required, GET)]);
        t.routes[0].methods = Some(Vec::new());
        assert_eq!(
            t.warnings(),
            [r#"routes[0] (path "/a") lists no methods, so it never matches"#]
        );
    }

    #[test]
    fn explain_says_why() {
        use AuthMode::*;
        let t = table(&[
            ("/api", Public, &[Method::GET]),
            ("=/x", Required, &[]),
            ("/", Required, &[]),
        ]);
        let e = t.explain("/api/users", &Method::POST);
        let verdicts: Vec<Verdict> = e.steps.iter().map(|s| s.verdict).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::MethodNotListed,
                Verdict::NotReached,
                Verdict::NotReached
            ]
        );
        assert_eq!(
            e.to_string(),
            "POST /api/users: 405 method_not_allowed: routes[0] (path \"/api\") matches the path \
             but does not list POST\n  routes[0] (path \"/api\"): path matches, method not in [GET]"
        );

        let e = t.explain("/api", &Method::GET);
        assert!(matches!(e.outcome, RouteMatch::Found(r) if r.index == 0));
        let verdicts: Vec<Verdict> = e.steps.iter().map(|s| s.verdict).collect();
        assert_eq!(
            verdicts,
            [Verdict::Taken, Verdict::NotReached, Verdict::NotReached]
        );

        let t = table(&[("/api", Public, &[Method::GET])]);
        assert_eq!(
            t.explain("/api", &Method::PUT).to_string(),
            "PUT /api: 405 method_not_allowed: routes[0] (path \"/api\") matches the path but \
             does not list PUT\n  routes[0] (path \"/api\"): path matches, method not in [GET]"
        );
        assert_eq!(
            t.explain("/b", &Method::GET).to_string(),
            "GET /b: 404 no_route: no route matches the path\n  \
             routes[0] (path \"/api\"): path does not match"
        );
    }
}
