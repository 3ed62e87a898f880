//! The entry points of the fuzz targets (`fuzz/`): thin wrappers that reach the crate's own
//! parsers and matchers from outside it, so that a target calls exactly what a request does.
//! Not part of the API (hidden from the docs, changed at will); nothing here is used by the
//! gateway itself.
//!
//! What is reached: the path canonicaliser, the route table (built from patterns the way the
//! config builds it), token extraction and verification, the request header stripping of the
//! pipeline's strip phase, the cookie reader and stripper, and the JWKS parser. Config
//! parsing needs no wrapper: [`crate::config::load_str`] is public.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, Method};
use jsonwebtoken::Algorithm;

use crate::config::Identity;
use crate::routing::path::PathRules;
use crate::routing::table::{Matcher, RouteMatch, RouteTable};
use crate::routing::{AuthMode, Route};
use crate::tokens::{Claims, KeyRing};

/// [`crate::routing::canonicalize`]: the canonical path, or why it was refused.
pub fn canonicalize(path: &str, allow_encoded_percent: bool) -> Result<Cow<'_, str>, String> {
    let rules = PathRules {
        allow_encoded_percent,
    };
    crate::routing::canonicalize(path, rules).map_err(|e| e.to_string())
}

/// Which key a route's pattern is under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// `path`: a prefix on segment boundaries.
    Prefix,
    /// `exact`.
    Exact,
    /// `glob`: `*` is one segment.
    Glob,
}

/// One route as a config would give it.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub kind: PatternKind,
    pub pattern: String,
    pub public: bool,
    /// `None`: every method.
    pub methods: Option<Vec<Method>>,
    pub strip_prefix: Option<String>,
}

/// What a route table decides for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// `routes[index]` takes it.
    Route {
        index: usize,
        public: bool,
    },
    /// `routes[index]` matched the path, but no route with its pattern takes the method.
    MethodNotAllowed(usize),
    NotFound,
}

/// A route table built from [`RouteSpec`]s.
pub struct Routes {
    table: RouteTable,
}

/// A route's normalised pattern: its segments, `None` standing for a glob's `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub kind: PatternKind,
    pub segments: Vec<Option<String>>,
}

impl Routes {
    /// The table, or the first refused pattern's error (`fold`: case-blind matching, the
    /// default `server.route_case_sensitive = false`).
    pub fn new(specs: &[RouteSpec], fold: bool) -> Result<Self, String> {
        let mut routes = Vec::with_capacity(specs.len());
        for (index, spec) in specs.iter().enumerate() {
            let matcher = match spec.kind {
                PatternKind::Prefix => Matcher::parse_prefix(&spec.pattern),
                PatternKind::Exact => Matcher::parse_exact(&spec.pattern),
                PatternKind::Glob => Matcher::parse_glob(&spec.pattern),
            }
            .map_err(|e| e.to_string())?;
            let strip_prefix = match &spec.strip_prefix {
                Some(p) => {
                    Some(crate::routing::table::normalize_pattern(p).map_err(|e| e.to_string())?)
                }
                None => None,
            };
            let (matcher, strip_prefix) = if fold {
                (
                    matcher.folded(),
                    strip_prefix.map(|p| p.to_ascii_lowercase()),
                )
            } else {
                (matcher, strip_prefix)
            };
            routes.push(Route {
                index,
                label: spec.pattern.clone(),
                matcher,
                upstream: 0,
                auth: if spec.public {
                    AuthMode::Public
                } else {
                    AuthMode::Required
                },
                methods: spec.methods.clone(),
                require_roles: Vec::new(),
                require_tenants: Vec::new(),
                require_scopes: Vec::new(),
                require_claims: Vec::new(),
                strip_prefix,
                fold,
            });
        }
        Ok(Self {
            table: RouteTable::new(routes),
        })
    }

    /// What the table decides for a canonical `path`.
    pub fn find(&self, path: &str, method: &Method) -> Decision {
        match self.table.find(path, method) {
            RouteMatch::Found(r) => Decision::Route {
                index: r.index,
                public: r.auth == AuthMode::Public,
            },
            RouteMatch::MethodNotAllowed(r) => Decision::MethodNotAllowed(r.index),
            RouteMatch::NotFound => Decision::NotFound,
        }
    }

    /// `routes[index]`'s pattern as the table holds it (normalised, lower case if folded).
    pub fn pattern(&self, index: usize) -> Pattern {
        match &self.table.routes()[index].matcher {
            Matcher::Prefix(p) => Pattern {
                kind: PatternKind::Prefix,
                segments: split(p),
            },
            Matcher::Exact(p) => Pattern {
                kind: PatternKind::Exact,
                segments: split(p),
            },
            Matcher::Glob(g) => Pattern {
                kind: PatternKind::Glob,
                segments: g.clone(),
            },
        }
    }

    /// The path `routes[index]` forwards for the canonical `path` (`strip_prefix` removed).
    pub fn forward_path<'p>(&self, index: usize, path: &'p str) -> &'p str {
        self.table.routes()[index].forward_path(path)
    }
}

fn split(p: &str) -> Vec<Option<String>> {
    p.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| Some(s.to_owned()))
        .collect()
}

/// The access token a request presents ([`crate::auth::token::extract`]); `Err` is the
/// refusal (ambiguous, or a `Bearer` value that is no token).
pub fn extract_token<'a>(
    headers: &'a HeaderMap,
    cookie: Option<&str>,
) -> Result<Option<&'a str>, String> {
    crate::auth::token::extract(headers, cookie).map_err(|e| format!("{e:?}"))
}

/// [`KeyRing`]'s verification at `now` (Unix seconds), as a request's authentication does it.
pub fn verify(ring: &KeyRing, token: &str, now: u64) -> Result<Arc<Claims>, String> {
    ring.verify_shared(token, now).map_err(|e| e.to_string())
}

/// The pipeline's strip phase on a request's headers: cookie crumbs joined, every spelling of
/// an identity header removed, then the hop-by-hop headers. Whether it is a WebSocket upgrade.
pub fn strip_request_headers(headers: &mut HeaderMap, identity: &Identity) -> bool {
    crate::pipeline::strip_client_headers(headers, identity)
}

/// Whether `name` is a spelling of one of the identity headers.
pub fn is_identity_header(identity: &Identity, name: &str) -> bool {
    identity.is_identity(name.as_bytes())
}

/// The value of cookie `name` across every `Cookie` header; `Err` when two disagree.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    crate::auth::token::cookie_value(headers, name).map_err(|e| format!("{e:?}"))
}

/// Removes cookie `name` from every `Cookie` header, as before forwarding.
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    crate::auth::token::strip_cookie(headers, name)
}

/// One usable key of a JWKS document: its kid and the algorithms it verifies (`RS256`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksKey {
    pub kid: String,
    pub algorithms: Vec<String>,
}

/// [`crate::tokens::fetch::parse_jwks`] for an issuer that accepts `algorithms` (names such
/// as `ES256`; unknown ones are left out): the usable keys (by kid), or why there are none.
pub fn parse_jwks(body: &[u8], algorithms: &[&str]) -> Result<Vec<JwksKey>, String> {
    use std::str::FromStr;

    use crate::tokens::fetch::{parse_jwks, JwksError};
    let algorithms: Vec<Algorithm> = algorithms
        .iter()
        .filter_map(|a| Algorithm::from_str(a).ok())
        .collect();
    match parse_jwks(body, &algorithms) {
        Ok(fetched) => Ok(fetched
            .keys
            .into_iter()
            .map(|(kid, key)| JwksKey {
                kid,
                algorithms: key.algs.iter().map(|a| format!("{a:?}")).collect(),
            })
            .collect()),
        Err(JwksError::Malformed(why) | JwksError::NoUsableKeys(why)) => Err(why),
    }
}

/// Most keys a JWKS document may hold ([`crate::tokens::fetch::MAX_KEYS`]).
pub const MAX_JWKS_KEYS: usize = crate::tokens::fetch::MAX_KEYS;
