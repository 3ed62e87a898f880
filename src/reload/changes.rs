//! What a reload changed, for its one log line: routes and upstreams added, removed or
//! changed, keys rotated (the signing kid, verify keys, issuers), users added and removed,
//! the access log turned on or off, and the keys whose new values wait for a restart.

use std::collections::BTreeSet;
use std::fmt;

use crate::config::{Config, Server};
use crate::routing::Route;

/// The differences between two snapshots that an operator asks about after a reload.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    items: Vec<String>,
    /// Keys whose new value takes effect only after a restart.
    pub(crate) restart: Vec<&'static str>,
}

impl Changes {
    pub(crate) fn between(old: &Config, new: &Config) -> Self {
        let mut c = Changes::default();
        c.routes(old, new);
        c.set(
            "upstreams",
            old.upstreams.iter().map(|u| u.name.as_str()),
            new.upstreams.iter().map(|u| u.name.as_str()),
        );
        c.keys(old, new);
        c.users(old, new);
        if old.log.access != new.log.access {
            let now = if new.log.access { "on" } else { "off" };
            c.items.push(format!("access log {now}"));
        }
        c.restart = restart_only(old, new);
        c
    }

    /// Routes by pattern: added, removed, and changed (same pattern, other rules).
    fn routes(&mut self, old: &Config, new: &Config) {
        let (a, b) = (old.routes.routes(), new.routes.routes());
        self.set(
            "routes",
            a.iter().map(|r| r.label.as_str()),
            b.iter().map(|r| r.label.as_str()),
        );
        let changed: Vec<&str> = b
            .iter()
            .filter_map(|r| {
                let before = a.iter().find(|o| o.label == r.label)?;
                (rules(before, old) != rules(r, new)).then_some(r.label.as_str())
            })
            .collect();
        if !changed.is_empty() {
            self.items
                .push(format!("routes changed: {}", changed.join(", ")));
        }
    }

    /// `what +added, -removed` for two lists of names.
    fn set<'a>(
        &mut self,
        what: &str,
        old: impl Iterator<Item = &'a str>,
        new: impl Iterator<Item = &'a str>,
    ) {
        let (old, new): (BTreeSet<&str>, BTreeSet<&str>) = (old.collect(), new.collect());
        let mut parts: Vec<String> = new.difference(&old).map(|n| format!("+{n}")).collect();
        parts.extend(old.difference(&new).map(|n| format!("-{n}")));
        if !parts.is_empty() {
            self.items.push(format!("{what} {}", parts.join(", ")));
        }
    }

    fn keys(&mut self, old: &Config, new: &Config) {
        let (a, b) = (&old.token.keys, &new.token.keys);
        if a.signing_kid() != b.signing_kid() {
            let kid = |k: Option<&str>| k.unwrap_or("none").to_owned();
            self.items.push(format!(
                "signing key {} -> {}",
                kid(a.signing_kid()),
                kid(b.signing_kid())
            ));
        }
        self.set(
            "verify keys",
            a.verify_kids().into_iter(),
            b.verify_kids().into_iter(),
        );
        self.set(
            "issuers",
            a.issuers().iter().map(|i| i.name()),
            b.issuers().iter().map(|i| i.name()),
        );
    }

    fn users(&mut self, old: &Config, new: &Config) {
        let (a, b) = (super::file_user_ids(old), super::file_user_ids(new));
        let added = b.difference(&a).count();
        let removed = a.difference(&b).count();
        if added + removed > 0 {
            self.items.push(format!("users +{added}, -{removed}"));
        }
    }
}

/// What decides a route beyond its pattern, comparable across snapshots (never logged).
fn rules(r: &Route, c: &Config) -> String {
    let upstream = c.upstreams.get(r.upstream).map_or("", |u| u.name.as_str());
    format!(
        "{:?} {upstream} {:?} {:?} {:?} {:?} {:?} {:?}",
        r.auth,
        r.methods,
        r.require_roles,
        r.require_tenants,
        r.require_scopes,
        r.require_claims,
        r.strip_prefix
    )
}

/// The keys fixed at start whose values differ.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.server, &new.server);
    let (sa, sb) = (&old.session, &new.session);
    let tls = |s: &Server| s.tls.as_ref().map(|t| (t.cert.clone(), t.key.clone()));
    [
        ("server.listen", a.listen != b.listen),
        ("server.admin_listen", a.admin_listen != b.admin_listen),
        ("server.tls_cert_file/tls_key_file", tls(a) != tls(b)),
        (
            "server.max_connections",
            a.max_connections != b.max_connections,
        ),
        (
            "server.header_timeout",
            a.header_timeout != b.header_timeout,
        ),
        ("server.idle_timeout", a.idle_timeout != b.idle_timeout),
        ("server.send_timeout", a.send_timeout != b.send_timeout),
        (
            "server.shutdown_grace",
            a.shutdown_grace != b.shutdown_grace,
        ),
        ("session.store", sa.store != sb.store),
        ("session.redis_url", sa.redis_url != sb.redis_url),
        (
            "session.redis_cluster",
            sa.redis_cluster != sb.redis_cluster,
        ),
        (
            "session.redis_sentinel",
            sa.redis_sentinel != sb.redis_sentinel,
        ),
        ("session.key_prefix", sa.key_prefix != sb.key_prefix),
    ]
    .into_iter()
    .filter_map(|(key, differs)| differs.then_some(key))
    .collect()
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.items.is_empty() {
            f.write_str("no route, upstream, key or user changed")
        } else {
            f.write_str(&self.items.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str, routes: &str) -> Config {
        let text = format!(
            "[session]\nmode = \"stateless\"\n[login]\nbackend = \"none\"\n{extra}\n\
             [[upstreams]]\nname = \"app\"\nurls = [\"http://127.0.0.1:9000\"]\n{routes}"
        );
        let env = |name: &str| name.starts_with('S').then(|| "s".repeat(32));
        match crate::config::load_str(&text, &std::env::temp_dir(), &env) {
            Ok(l) => l.config,
            Err(e) => panic!("{e}"),
        }
    }

    const TOKEN: &str = "[token]\nsecret_env = \"S1\"\nkid = \"k1\"\n";

    #[test]
    fn a_reload_names_what_changed_and_what_waits_for_a_restart() {
        let old = config(
            TOKEN,
            "[[routes]]\npath = \"/a\"\nupstream = \"app\"\n\
             [[routes]]\npath = \"/b\"\nupstream = \"app\"\nauth = \"public\"\n",
        );
        let same = Changes::between(&old, &old);
        assert_eq!(same.to_string(), "no route, upstream, key or user changed");
        assert!(same.restart.is_empty());

        let new = config(
            "[server]\nlisten = \"127.0.0.1:18080\"\n[token]\nsecret_env = \"S2\"\nkid = \"k2\"\n\
             [[token.verify_keys]]\nkid = \"k1\"\nalgorithm = \"HS256\"\nsecret_env = \"S1\"\n\
             [log]\naccess = false\n",
            "[[routes]]\npath = \"/b\"\nupstream = \"app\"\nauth = \"required\"\n\
             [[routes]]\npath = \"/c\"\nupstream = \"app\"\n",
        );
        let c = Changes::between(&old, &new);
        assert_eq!(
            c.to_string(),
            "routes +/c, -/a; routes changed: /b; signing key k1 -> k2; verify keys +k1; \
             access log off"
        );
        assert_eq!(c.restart, ["server.listen"]);
    }
}
