//! Validation: a parsed [`file::GatewayFile`] into a [`Config`], one file per section of
//! `gateway.toml` (`server.rs`, `token.rs`, `session.rs`, `platforms.rs`, `login.rs`,
//! `identity.rs`, `cors.rs`, `upstreams.rs`, `routes.rs`, `notify.rs`), each an `impl Cx` block. [`Cx`]
//! carries where relative paths start, how env vars are read and what went wrong; every check
//! records its problem with its key path and goes on, so a config with three mistakes shows all
//! three. This file holds the checks several sections share (durations, counts, addresses,
//! header names, canonical paths).

mod browser;
mod cors;
mod identity;
mod issuers;
mod login;
mod notify;
mod platforms;
mod routes;
mod server;
mod session;
mod token;
mod upstreams;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;

use super::{duration, file, Config, Problem};

/// What validating one parsed file found: the config (`None` when some part could not be
/// built; only used when there are no problems), every problem, and the warnings.
pub(super) struct Validated {
    pub(super) config: Option<Config>,
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<String>,
}

/// Validates every section of `f`; relative paths are taken from `base_dir`, env vars are
/// read through `env`.
pub(super) fn validate(
    f: &file::GatewayFile,
    source: PathBuf,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Validated {
    let mut cx = Cx {
        base_dir,
        env,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let config = cx.config(f, source);
    Validated {
        config,
        problems: cx.problems,
        warnings: cx.warnings,
    }
}

/// Validation state: where relative paths start, how env vars are read, what went wrong.
struct Cx<'a> {
    base_dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

/// Stands in for a header name that did not validate (the config is refused anyway).
const PLACEHOLDER_HEADER: HeaderName = HeaderName::from_static("x-invalid");

/// Stands in for an address that did not validate (the config is refused anyway).
const PLACEHOLDER_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

impl Cx<'_> {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, key: &str, message: impl std::fmt::Display) {
        self.warnings.push(format!("{key}: {message}"));
    }

    /// Every section, in file order. `None` when some part could not be built at all (the
    /// problems say why); a `Some` is only used when there are no problems.
    fn config(&mut self, f: &file::GatewayFile, source: PathBuf) -> Option<Config> {
        let server = self.server(&f.server);
        let no_login = f.login.backend == file::BackendName::None;
        let token = self.token(&f.token, no_login);
        let session = self.session(&f.session);
        let platforms = self.platforms(&f.platforms);
        let login = self.login(&f.login);
        if let Some(t) = &token {
            self.sessions_possible(t, &session, no_login);
        }
        let identity = self.identity(&f.identity, &f.token.refresh_header);
        let cors = self.cors(&f.cors);
        let browser = self.browser(&f.browser, &f.login, &f.token);
        let upstreams = self.upstreams(&f.upstreams);
        let routes = self.routes(&f.routes, &f.upstreams, f.server.route_case_sensitive);
        let notify = self.notify(&f.notify, &upstreams);
        let mut token = token?;
        if let Some(b) = &browser {
            // The access cookie is where a browser's token rides: read it like token.cookie.
            token.cookie = Some(b.access_cookie.clone());
        }
        let reads_claims = !identity.claims.is_empty()
            || routes
                .routes()
                .iter()
                .any(|r| !r.require_claims.is_empty() || !r.require_scopes.is_empty());
        token.keys.keep_payload(reads_claims);
        Some(Config {
            source,
            server,
            token,
            session,
            platforms,
            login,
            identity,
            cors,
            browser,
            log: super::Log {
                access: f.log.access,
            },
            notify,
            upstreams,
            routes,
        })
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    fn read(&mut self, key: &str, path: &Path) -> Option<Vec<u8>> {
        let resolved = self.resolve(path);
        match std::fs::read(&resolved) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.problem(key, format!("cannot read {}: {e}", resolved.display()));
                None
            }
        }
    }

    fn duration(&mut self, key: &str, text: &str) -> Duration {
        duration::parse(text).unwrap_or_else(|why| {
            self.problem(
                key,
                format!("{text:?} is not a duration: {why}; write e.g. \"500ms\", \"30s\", \"1h30m\", \"2m 30s\", \"30d\""),
            );
            Duration::ZERO
        })
    }

    /// A duration the session store keeps (48-bit Unix milliseconds, `session/record.rs`):
    /// refused, not saturated, beyond [`crate::clock::MAX_STORE_SPAN`].
    fn store_span(&mut self, key: &str, d: Duration) -> Duration {
        let max = crate::clock::MAX_STORE_SPAN;
        if d > max {
            self.problem(
                key,
                format!(
                    "{} is longer than the session store can represent (at most {})",
                    duration::format(d),
                    duration::format(max)
                ),
            );
        }
        d
    }

    /// A duration that ends up in a whole-seconds field (a token's `exp`, the verifier's
    /// leeway, `Access-Control-Max-Age`): refused unless a whole number of seconds, rather
    /// than cut.
    fn whole_seconds(&mut self, key: &str, d: Duration, why: &str) -> Duration {
        if d.subsec_nanos() != 0 {
            self.problem(
                key,
                format!(
                    "{} is not a whole number of seconds, which {why} needs",
                    duration::format(d)
                ),
            );
        }
        d
    }

    /// A duration that must be more than zero.
    fn positive(&mut self, key: &str, text: &str) -> Duration {
        let before = self.problems.len();
        let d = self.duration(key, text);
        if d.is_zero() && self.problems.len() == before {
            self.problem(key, "must be more than 0s");
        }
        d
    }

    fn socket_addr(&mut self, key: &str, text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            self.problem(
                key,
                format!("{text:?} is not an IP:port address such as \"127.0.0.1:8080\" or \"[::1]:8080\""),
            );
            PLACEHOLDER_ADDR
        })
    }

    fn header_name(&mut self, key: &str, text: &str) -> HeaderName {
        HeaderName::from_bytes(text.as_bytes()).unwrap_or_else(|_| {
            self.problem(key, format!("{text:?} is not a valid header name"));
            PLACEHOLDER_HEADER
        })
    }

    /// At least 1 and at most `u32::MAX`.
    fn count(&mut self, key: &str, n: i64) -> u32 {
        match u32::try_from(n) {
            Ok(n) if n >= 1 => n,
            _ => {
                self.problem(
                    key,
                    format!("must be a whole number from 1 to {}", u32::MAX),
                );
                1
            }
        }
    }
}

/// Why a route pattern or prefix could never equal a canonical request path, if it could not.
fn non_canonical(p: &str) -> Option<String> {
    if p.bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\' || b == b'?' || b == b'#')
    {
        return Some(format!(
            "{p:?} contains a space, control character, `\\`, `?` or `#`"
        ));
    }
    let body = p.strip_prefix('/').unwrap_or(p);
    let body = body.strip_suffix('/').unwrap_or(body);
    if body.split('/').any(|s| s == "." || s == "..")
        || (!body.is_empty() && body.split('/').any(str::is_empty))
    {
        return Some(format!("{p:?} is not canonical (no `//`, `.` or `..` segments); requests are matched after canonicalisation"));
    }
    // The rest of canonicalisation: escapes (`%7E`, `%2B`, lower-case hex) and raw bytes that
    // requests never keep as they are, so such a pattern would never match.
    let rules = crate::routing::path::PathRules {
        allow_encoded_percent: true,
    };
    match crate::routing::path::canonicalize(p, rules) {
        Ok(c) if c == p => None,
        Ok(c) => Some(format!(
            "{p:?} is not canonical; requests are matched after canonicalisation, so write it as {c:?}"
        )),
        Err(e) => Some(format!("{p:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_patterns() {
        for (p, ok) in [
            ("/", true),
            ("/a/b/", true),
            ("/a//b", false),
            ("/./a", false),
            ("/a/..", false),
            ("/a b", false),
            ("/a+b/~u/:@", true),
            ("/a%2Bb", false),
            ("/%7Eu", false),
            ("/caf%c3%a9", false),
            ("/caf%C3%A9", true),
            ("/a%2Fb", false),
            ("/a%3Bb", true),
        ] {
            assert_eq!(non_canonical(p).is_none(), ok, "{p:?}");
        }
    }
}
