//! `authgate explain METHOD URL`: what the gateway would do with a request, phase by phase,
//! using the same canonicaliser and route table as the live pipeline, and whether it would be
//! forwarded or refused (the command's exit code). No token goes with the request, so a
//! required route counts as refused.

use std::fmt::Write;

use http::Method;

use crate::config::{Config, SessionMode};
use crate::routing::path;
use crate::routing::table::{AuthMode, RouteMatch};

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

fn explain_into(
    out: &mut String,
    cfg: &Config,
    method: &str,
    url: &str,
) -> Result<Verdict, std::fmt::Error> {
    use Verdict::*;
    writeln!(out, "request:    {method} {url}")?;
    let target = match url.find("://") {
        Some(i) => url[i + 3..].find('/').map_or("/", |j| &url[i + 3 + j..]),
        None => url,
    };
    let target = target.split('#').next().unwrap_or(target);
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        writeln!(out, "refused:    400 bad_request (not an HTTP method)")?;
        return Ok(Refused);
    };
    if raw_path == cfg.login.prefix || raw_path.starts_with(&format!("{}/", cfg.login.prefix)) {
        writeln!(
            out,
            "endpoint:   the gateway's own endpoint under login.prefix {:?}; not proxied",
            cfg.login.prefix
        )?;
        return Ok(Endpoint);
    }
    let canonical = match path::canonicalize(raw_path, cfg.server.path_rules) {
        Ok(c) => c,
        Err(e) => {
            writeln!(out, "refused:    400 bad_request ({e})")?;
            return Ok(Refused);
        }
    };
    writeln!(out, "canonical:  {canonical}")?;
    if let Some(q) = query {
        writeln!(
            out,
            "query:      {q} (never used for matching; forwarded as is)"
        )?;
    }
    let why = cfg.routes.explain(&canonical, &method);
    for line in why.to_string().lines().skip(1) {
        writeln!(out, "            {}", line.trim_start())?;
    }
    let route = match why.outcome {
        RouteMatch::Found(r) => r,
        RouteMatch::MethodNotAllowed(r) => {
            writeln!(
                out,
                "route:      {r} matches the path but does not list {method}"
            )?;
            writeln!(out, "refused:    405 method_not_allowed")?;
            return Ok(Refused);
        }
        RouteMatch::NotFound => {
            writeln!(
                out,
                "route:      none of the {} routes matches",
                cfg.routes.routes().len()
            )?;
            writeln!(out, "refused:    404 no_route")?;
            return Ok(Refused);
        }
    };
    writeln!(out, "route:      {route}")?;
    let up = &cfg.upstreams[route.upstream];
    let urls: Vec<String> = up
        .targets
        .iter()
        .map(|t| format!("http://{}{}", t.authority, t.base_path))
        .collect();
    let fwd = route.forward_path(&canonical);
    writeln!(
        out,
        "upstream:   {} ({}) receives {}{}",
        up.name,
        urls.join(", "),
        fwd,
        query.map(|q| format!("?{q}")).unwrap_or_default()
    )?;
    let verdict = match route.auth {
        AuthMode::Public => {
            writeln!(out, "auth:       public: forwarded without a token; identity headers from the client are removed")?;
            Forwarded
        }
        AuthMode::Optional => {
            writeln!(out, "auth:       optional: a valid token adds identity headers; a missing or bad one is ignored")?;
            Forwarded
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
            writeln!(out, "refused:    without a token 401 missing_token; bad token 401 invalid_token; expired 401 token_expired")?;
            Refused
        }
    };
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
    Ok(verdict)
}
