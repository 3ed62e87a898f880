//! `[[routes]]`: each route's one pattern (`path`, `exact` or `glob`, canonical as request
//! paths are), its upstream, auth mode, methods, role and tenant requirements and
//! `strip_prefix`; then case folding (`server.route_case_sensitive`) and the warning about
//! routes that differ only by case.

use super::{non_canonical, Cx};
use crate::claims::ClaimPath;
use crate::config::file;
use crate::routing::table::{AuthMode, Matcher, Route, RouteTable};

impl Cx<'_> {
    pub(super) fn routes(
        &mut self,
        list: &[file::RouteFile],
        upstreams: &[file::UpstreamFile],
        case_sensitive: bool,
    ) -> RouteTable {
        if list.is_empty() {
            self.problem("routes", "at least one [[routes]] is needed");
        }
        let mut out = Vec::new();
        for (i, r) in list.iter().enumerate() {
            out.push(self.route(i, r, upstreams));
        }
        if !case_sensitive {
            fold_case(&mut out);
        }
        self.warn_case_twins(&out, case_sensitive);
        RouteTable::new(out)
    }

    /// `routes[i]`, with every problem under `routes[i]`.
    fn route(&mut self, i: usize, r: &file::RouteFile, upstreams: &[file::UpstreamFile]) -> Route {
        let prefix = format!("routes[{i}]");
        let (label, matcher) = self.route_pattern(&prefix, r);
        let upstream = self.route_upstream(&prefix, r, upstreams);
        let auth = match r.auth {
            file::AuthName::Public => AuthMode::Public,
            file::AuthName::Required => AuthMode::Required,
            file::AuthName::Optional => AuthMode::Optional,
        };
        let methods = r
            .methods
            .as_ref()
            .map(|methods| self.route_methods(&prefix, methods));
        self.route_requirements(&prefix, r, auth);
        let require_claims = self.route_claims(&prefix, r);
        let strip_prefix = r.strip_prefix.as_ref().map(|s| {
            let key = format!("{prefix}.strip_prefix");
            if !s.starts_with('/') {
                self.problem(key, format!("{s:?} must start with `/`"));
            } else if let Some(why) = non_canonical(s) {
                self.problem(key, why);
            }
            normalise_prefix(s)
        });
        Route {
            index: i,
            label,
            matcher,
            upstream,
            auth,
            methods,
            require_roles: r.require_roles.clone(),
            require_tenants: r.require_tenants.clone(),
            require_scopes: r.require_scopes.clone(),
            require_claims,
            strip_prefix,
            fold: false,
        }
    }

    /// Exactly one of `path`, `exact`, `glob`: the pattern as written and its matcher.
    fn route_pattern(&mut self, prefix: &str, r: &file::RouteFile) -> (String, Matcher) {
        let given: Vec<(&str, &String)> =
            [("path", &r.path), ("exact", &r.exact), ("glob", &r.glob)]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
                .collect();
        match given.as_slice() {
            [] => {
                self.problem(prefix, "needs one of path, exact, glob");
                (String::new(), Matcher::Exact(String::new()))
            }
            [(kind, pattern)] => {
                let key = format!("{prefix}.{kind}");
                let matcher = self.matcher(&key, kind, pattern);
                ((*pattern).clone(), matcher)
            }
            _ => {
                self.problem(prefix, "set only one of path, exact, glob");
                (String::new(), Matcher::Exact(String::new()))
            }
        }
    }

    /// The index of the upstream named, 0 (with a problem) when there is none.
    fn route_upstream(
        &mut self,
        prefix: &str,
        r: &file::RouteFile,
        upstreams: &[file::UpstreamFile],
    ) -> usize {
        match &r.upstream {
            None => {
                self.problem(format!("{prefix}.upstream"), "required");
                0
            }
            Some(name) => match upstreams.iter().position(|u| &u.name == name) {
                Some(index) => index,
                None => {
                    self.problem(
                        format!("{prefix}.upstream"),
                        format!("no upstream named {name:?}"),
                    );
                    0
                }
            },
        }
    }

    /// `methods`: not empty, each an HTTP method (any case), repeats dropped.
    fn route_methods(&mut self, prefix: &str, methods: &[String]) -> Vec<http::Method> {
        if methods.is_empty() {
            self.problem(
                format!("{prefix}.methods"),
                "empty; leave methods out to allow every method",
            );
        }
        let mut out: Vec<http::Method> = Vec::new();
        for (j, m) in methods.iter().enumerate() {
            match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) if !m.as_str().is_empty() => {
                    if !out.contains(&m) {
                        out.push(m);
                    }
                }
                _ => self.problem(
                    format!("{prefix}.methods[{j}]"),
                    format!("{m:?} is not an HTTP method"),
                ),
            }
        }
        out
    }

    /// `require_roles` and `require_tenants`: only where they can be enforced, no empty value.
    fn route_requirements(&mut self, prefix: &str, r: &file::RouteFile, auth: AuthMode) {
        let claims: Vec<String> = r.require_claims.keys().cloned().collect();
        for (field, values) in [
            ("require_roles", &r.require_roles),
            ("require_tenants", &r.require_tenants),
            ("require_scopes", &r.require_scopes),
            ("require_claims", &claims),
        ] {
            if auth != AuthMode::Required && !values.is_empty() {
                let why = if auth == AuthMode::Public {
                    "this one is public"
                } else {
                    "on an optional route it could not be enforced: a request without a \
                     token passes anonymously"
                };
                self.problem(
                    format!("{prefix}.{field}"),
                    format!("only for routes with auth = \"required\"; {why}"),
                );
            }
            for (j, v) in values.iter().enumerate() {
                if v.is_empty() {
                    self.problem(format!("{prefix}.{field}[{j}]"), "must not be empty");
                }
            }
        }
    }

    /// `require_claims`: each key a claim name or pointer, each value a string, number or
    /// boolean (what a claim can be compared with for equality).
    fn route_claims(
        &mut self,
        prefix: &str,
        r: &file::RouteFile,
    ) -> Vec<(ClaimPath, serde_json::Value)> {
        let mut out = Vec::new();
        for (name, want) in &r.require_claims {
            let key = format!("{prefix}.require_claims.{name:?}");
            let path = match ClaimPath::parse(name) {
                Ok(p) => p,
                Err(why) => {
                    self.problem(key, format!("{name:?} is {why}"));
                    continue;
                }
            };
            let value = match want {
                toml::Value::String(s) => serde_json::Value::from(s.clone()),
                toml::Value::Integer(n) => serde_json::Value::from(*n),
                toml::Value::Float(f) => serde_json::Value::from(*f),
                toml::Value::Boolean(b) => serde_json::Value::from(*b),
                other => {
                    self.problem(
                        key,
                        format!(
                            "a {} cannot be compared; give a string, number or boolean",
                            other.type_str()
                        ),
                    );
                    continue;
                }
            };
            out.push((path, value));
        }
        out
    }

    /// Routes whose patterns differ only by case: the same path when matching folds case,
    /// and a trap for case-blind upstreams when it does not.
    fn warn_case_twins(&mut self, out: &[Route], case_sensitive: bool) {
        for (j, b) in out.iter().enumerate() {
            if let Some(a) = out[..j]
                .iter()
                .find(|a| a.label != b.label && a.label.eq_ignore_ascii_case(&b.label))
            {
                let how = if case_sensitive {
                    "with route_case_sensitive = true they are different routes, while a \
                     case-blind upstream (IIS, ASP.NET, Express) serves them as one path"
                } else {
                    "routes match without regard to case, so they are the same path"
                };
                self.warn(
                    &format!("routes[{}]", b.index),
                    format!("{:?} differs from {a} only by case: {how}", b.label),
                );
            }
        }
    }

    fn matcher(&mut self, key: &str, kind: &str, pattern: &str) -> Matcher {
        let mut reported = true;
        if !pattern.starts_with('/') {
            self.problem(key, format!("{pattern:?} must start with `/`"));
        } else if let Some(why) = non_canonical(pattern) {
            self.problem(key, why);
        } else if kind == "glob" && pattern.split('/').any(|s| s.contains('*') && s != "*") {
            self.problem(
                key,
                format!("{pattern:?}: `*` must be a whole segment, as in \"/files/*/meta\""),
            );
        } else if kind != "glob" && pattern.contains('*') {
            self.problem(
                key,
                format!("{pattern:?}: `*` is literal in {kind}; use glob = ... for wildcards"),
            );
        } else {
            reported = false;
        }
        // The route module's own constructors normalise exactly as request paths are
        // canonicalised, so a pattern always means what matching will do with it.
        let parsed = match kind {
            "glob" => Matcher::parse_glob(pattern),
            "exact" => Matcher::parse_exact(pattern),
            _ => Matcher::parse_prefix(pattern),
        };
        match parsed {
            Ok(m) => m,
            Err(e) => {
                if !reported {
                    self.problem(key, format!("{pattern:?}: {e}"));
                }
                Matcher::Prefix("/".to_owned())
            }
        }
    }
}

/// `route_case_sensitive = false`: patterns and prefixes lowercased, requests folded to match.
fn fold_case(routes: &mut [Route]) {
    for r in routes {
        r.matcher = std::mem::replace(&mut r.matcher, Matcher::Exact(String::new())).folded();
        r.strip_prefix = r.strip_prefix.take().map(|p| p.to_ascii_lowercase());
        r.fold = true;
    }
}

/// Drops a trailing slash unless the prefix is `/`.
fn normalise_prefix(p: &str) -> String {
    match p.strip_suffix('/') {
        Some(rest) if !rest.is_empty() => rest.to_owned(),
        _ => p.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn each_rule_reports_its_key_path() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            // [[routes]] (MINIMAL's is routes[0])
            ("[[routes]]\nupstream = \"app\"", "routes[1]", "needs one of path, exact, glob"),
            ("[[routes]]\npath = \"/a\"\nexact = \"/a\"\nupstream = \"app\"", "routes[1]", "only one of"),
            ("[[routes]]\npath = \"api\"\nupstream = \"app\"", "routes[1].path", "start with `/`"),
            ("[[routes]]\nexact = \"x\"\nupstream = \"app\"", "routes[1].exact", "start with `/`"),
            ("[[routes]]\npath = \"/a/../b\"\nupstream = \"app\"", "routes[1].path", "not canonical"),
            ("[[routes]]\npath = \"/a?b\"\nupstream = \"app\"", "routes[1].path", "`?`"),
            ("[[routes]]\npath = \"/api/*\"\nupstream = \"app\"", "routes[1].path", "use glob"),
            ("[[routes]]\nglob = \"/files/*.txt\"\nupstream = \"app\"", "routes[1].glob", "whole segment"),
            ("[[routes]]\npath = \"/a\"\nupstream = \"legacy\"", "routes[1].upstream", "no upstream named \"legacy\""),
            ("[[routes]]\npath = \"/a\"", "routes[1].upstream", "required"),
            ("[[routes]]\npath = \"/a\"\nupstream = \"app\"\nauth = \"maybe\"", "routes[1].auth", "unknown value"),
            (
                "[[routes]]\npath = \"/a\"\nupstream = \"app\"\nmethods = [\"GET\", \"NOT A METHOD\"]",
                "routes[1].methods[1]",
                "not an HTTP method",
            ),
            ("[[routes]]\npath = \"/a\"\nupstream = \"app\"\nmethods = []", "routes[1].methods", "empty"),
            (
                "[[routes]]\npath = \"/a\"\nupstream = \"app\"\nauth = \"public\"\nrequire_roles = [\"admin\"]",
                "routes[1].require_roles",
                "this one is public",
            ),
            (
                "[[routes]]\npath = \"/a\"\nupstream = \"app\"\nauth = \"optional\"\nrequire_roles = [\"admin\"]",
                "routes[1].require_roles",
                "could not be enforced",
            ),
            (
                "[[routes]]\npath = \"/a\"\nupstream = \"app\"\nauth = \"optional\"\nrequire_tenants = [\"acme\"]",
                "routes[1].require_tenants",
                "anonymously",
            ),
            (
                "[[routes]]\npath = \"/a\"\nupstream = \"app\"\nauth = \"public\"\nrequire_tenants = [\"acme\"]",
                "routes[1].require_tenants",
                "this one is public",
            ),
            (
                "[[routes]]\npath = \"/a\"\nupstream = \"app\"\nrequire_roles = [\"\"]",
                "routes[1].require_roles[0]",
                "must not be empty",
            ),
            ("[[routes]]\npath = \"/a\"\nupstream = \"app\"\nstrip_prefix = \"a\"", "routes[1].strip_prefix", "start with `/`"),
            ("[[routes]]\npath = \"/a\"\nupstream = \"app\"\npth = \"/b\"", "routes[1].pth", "unknown key"),
        ];
        assert_rules(cases);
    }

    #[test]
    fn routes_that_differ_only_by_case_are_warned_about() {
        let routes = "[[upstreams]]\nname = \"app\"\nurls = [\"http://127.0.0.1:9000\"]\n\
            [[routes]]\npath = \"/admin\"\nupstream = \"app\"\nrequire_roles = [\"admin\"]\n\
            [[routes]]\npath = \"/Admin\"\nupstream = \"app\"\nauth = \"public\"\n\
            [[routes]]\npath = \"/\"\nupstream = \"app\"\n";
        for (server, needle) in [
            ("", "they are the same path"),
            (
                "[server]\nroute_case_sensitive = true\n",
                "case-blind upstream",
            ),
        ] {
            let loaded = ok(&format!("{server}{routes}"));
            let w: Vec<_> = loaded
                .warnings
                .iter()
                .filter(|w| w.starts_with("routes[1]:") && w.contains("only by case"))
                .collect();
            assert_eq!(w.len(), 1, "{:?}", loaded.warnings);
            assert!(w[0].contains(needle), "{w:?}");
            let r = &loaded.config.routes.routes()[1];
            assert_eq!(r.fold, server.is_empty());
        }
        // Case-blind: the later one is the same pattern, so it is shadowed too.
        let loaded = ok(routes);
        assert!(
            loaded.warnings.iter().any(|w| w.contains("shadowed")),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn prefixes_are_normalised() {
        for (p, want) in [("/", "/"), ("/api/", "/api"), ("/api", "/api")] {
            assert_eq!(normalise_prefix(p), want);
        }
    }
}
