//! `authgate explain METHOD URL`: what the gateway would do with a request, phase by phase,
//! using the same canonicaliser and route table as the live pipeline, and whether it would be
//! forwarded or refused (the command's exit code). No token goes with the request, so a
//! required route counts as refused.

use std::fmt::Write;

use http::Method;

use crate::config::{Config, SessionMode};
use crate::routing::path;
use crate::routing::table::{AuthMode, Route, RouteMatch};

/// What would become of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Sent to the upstream.
    Forwarded,
    /// Answered by the gateway's own endpoints under `login.prefix`.
    Endpoint,
    /// Refused by the gateway (400, 404, 405, or 401 for want of a token).
    Refused,
}

/// A human-readable account of how `method url` would be handled, and its verdict.
pub fn explain(cfg: &Config, method: &str, url: &str) -> (String, Verdict) {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let verdict = explain_into(&mut out, cfg, method, url).unwrap_or(Verdict::Refused);
    (out, verdict)
}

type Written<T> = Result<T, std::fmt::Error>;

fn explain_into(out: &mut String, cfg: &Config, method: &str, url: &str) -> Written<Verdict> {
    writeln!(out, "request:    {method} {url}")?;
    let (raw_path, query) = split_target(url);
    let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        writeln!(out, "refused:    400 bad_request (not an HTTP method)")?;
        return Ok(Verdict::Refused);
    };
    if raw_path == cfg.login.prefix || raw_path.starts_with(&format!("{}/", cfg.login.prefix)) {
        writeln!(
            out,
            "endpoint:   the gateway's own endpoint under login.prefix {:?}; not proxied",
            cfg.login.prefix
        )?;
        return Ok(Verdict::Endpoint);
    }
    let canonical = match path::canonicalize(raw_path, cfg.server.path_rules) {
        Ok(c) => c,
        Err(e) => {
            writeln!(out, "refused:    400 bad_request ({e})")?;
            return Ok(Verdict::Refused);
        }
    };
    writeln!(out, "canonical:  {canonical}")?;
    if let Some(q) = query {
        writeln!(
            out,
            "query:      {q} (never used for matching; forwarded as is)"
        )?;
    }
    let Some(route) = matched_route(out, cfg, &canonical, &method)? else {
        return Ok(Verdict::Refused);
    };
    writeln!(out, "route:      {route}")?;
    upstream(out, cfg, route, &canonical, query)?;
    let verdict = auth(out, cfg, route)?;
    requirements(out, route)?;
    Ok(verdict)
}

/// The path and query of a URL or of a bare request target; the fragment is dropped.
fn split_target(url: &str) -> (&str, Option<&str>) {
    let target = match url.find("://") {
        Some(i) => url[i + 3..].find('/').map_or("/", |j| &url[i + 3 + j..]),
        None => url,
    };
    let target = target.split('#').next().unwrap_or(target);
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

/// The route table's reasoning, and the route that takes the request (none: refused).
fn matched_route<'c>(
    out: &mut String,
    cfg: &'c Config,
    canonical: &str,
    method: &Method,
) -> Written<Option<&'c Route>> {
    let why = cfg.routes.explain(canonical, method);
    for line in why.to_string().lines().skip(1) {
        writeln!(out, "            {}", line.trim_start())?;
    }
    match why.outcome {
        RouteMatch::Found(r) => Ok(Some(r)),
        RouteMatch::MethodNotAllowed(r) => {
            writeln!(
                out,
                "route:      {r} matches the path but does not list {method}"
            )?;
            writeln!(out, "refused:    405 method_not_allowed")?;
            Ok(None)
        }
        RouteMatch::NotFound => {
            writeln!(
                out,
                "route:      none of the {} routes matches",
                cfg.routes.routes().len()
            )?;
            writeln!(out, "refused:    404 no_route")?;
            Ok(None)
        }
    }
}

/// Where the request would go, and with which path.
fn upstream(
    out: &mut String,
    cfg: &Config,
    route: &Route,
    canonical: &str,
    query: Option<&str>,
) -> Written<()> {
    let up = &cfg.upstreams[route.upstream];
    let urls: Vec<String> = up
        .targets
        .iter()
        .map(|t| format!("http://{}{}", t.authority, t.base_path))
        .collect();
    writeln!(
        out,
        "upstream:   {} ({}) receives {}{}",
        up.name,
        urls.join(", "),
        route.forward_path(canonical),
        query.map(|q| format!("?{q}")).unwrap_or_default()
    )
}

/// What the route's `auth` mode asks of the request; without a token, required is refused.
fn auth(out: &mut String, cfg: &Config, route: &Route) -> Written<Verdict> {
    match route.auth {
        AuthMode::Public => {
            writeln!(out, "auth:       public: forwarded without a token; identity headers from the client are removed")?;
            Ok(Verdict::Forwarded)
        }
        AuthMode::Optional => {
            writeln!(out, "auth:       optional: a valid token adds identity headers; a missing or bad one is ignored")?;
            Ok(Verdict::Forwarded)
        }
        AuthMode::Required => {
            let session = match cfg.session.mode {
                SessionMode::Stateful => ", then its session must be active",
                SessionMode::Stateless => "",
            };
            writeln!(
                out,
                "auth:       required: a valid access token (Authorization: Bearer{}){session}",
                cfg.token
                    .cookie
                    .as_ref()
                    .map(|c| format!(" or cookie {c:?}"))
                    .unwrap_or_default()
            )?;
            let issuers: Vec<&str> = cfg.token.keys.issuers().iter().map(|i| i.name()).collect();
            if !issuers.is_empty() {
                writeln!(
                    out,
                    "            or a token of {issuers:?} (never session-checked or refreshed; 503 issuer_unavailable until its keys arrive)"
                )?;
            }
            writeln!(out, "refused:    without a token 401 missing_token; bad token 401 invalid_token; expired 401 token_expired")?;
            Ok(Verdict::Refused)
        }
    }
}

/// The route's role and tenant requirements.
fn requirements(out: &mut String, route: &Route) -> Written<()> {
    if !route.require_roles.is_empty() {
        writeln!(
            out,
            "requires:   one of the roles {:?}, else 403 forbidden",
            route.require_roles
        )?;
    }
    if !route.require_tenants.is_empty() {
        writeln!(
            out,
            "requires:   one of the tenants {:?}, else 403 forbidden",
            route.require_tenants
        )?;
    }
    if !route.require_scopes.is_empty() {
        writeln!(
            out,
            "requires:   every scope of {:?} (token `scope` or `scp`), else 403 forbidden",
            route.require_scopes
        )?;
    }
    for (claim, want) in &route.require_claims {
        writeln!(
            out,
            "requires:   claim {claim} equal to {want}, else 403 forbidden"
        )?;
    }
    Ok(())
}
