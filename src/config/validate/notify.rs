//! `[notify]`: the receivers of session events (`http://host[:port]/path` or
//! `upstream://<name>/path` for an `[[upstreams]]` entry), the signing secret (`secret_env`,
//! by default `AUTHGATE_NOTIFY_SECRET`, or `secret_file`; at least 32 bytes), which events,
//! the per-attempt timeout, the queue bound and the retries. Off while `urls` is empty: then
//! nothing else is read (no secret needed).

use std::path::Path;

use super::Cx;
use crate::config::{file, Notify, NotifyTarget, Upstream};

/// More retries than this only keeps a dead receiver's events queued longer.
const MAX_RETRIES: i64 = 10;

impl Cx<'_> {
    pub(super) fn notify(&mut self, f: &file::NotifyFile, upstreams: &[Upstream]) -> Notify {
        let mut out = Notify::off();
        if f.urls.is_empty() {
            return out;
        }
        for (i, url) in f.urls.iter().enumerate() {
            match notify_target(url, upstreams) {
                Ok(t) => out.targets.push(t),
                Err(why) => self.problem(format!("notify.urls[{i}]"), why),
            }
        }
        if f.secret_env.is_some() && f.secret_file.is_some() {
            self.problem(
                "notify.secret_file",
                "set either secret_env or secret_file, not both",
            );
        }
        let env = match (&f.secret_env, &f.secret_file) {
            (_, Some(_)) => None,
            (Some(name), None) => Some(name.as_str()),
            (None, None) => Some(file::DEFAULT_NOTIFY_SECRET_ENV),
        };
        let path: Option<&Path> = f.secret_file.as_deref();
        if let Some(secret) = self.secret("notify", env, path) {
            out.secret = secret.into();
        }
        if f.events.is_empty() {
            self.problem(
                "notify.events",
                "at least one event is needed: \"session_ended\", \"login\"",
            );
        }
        for (i, e) in f.events.iter().enumerate() {
            match e.as_str() {
                "session_ended" => out.session_ended = true,
                "login" => out.login = true,
                other => self.problem(
                    format!("notify.events[{i}]"),
                    format!("{other:?} is not an event; use \"session_ended\" or \"login\""),
                ),
            }
        }
        out.timeout = self.positive("notify.timeout", &f.timeout);
        out.max_queue = self.count("notify.max_queue", f.max_queue) as usize;
        out.retries = match f.retries {
            n @ 0..=MAX_RETRIES => n as u32,
            _ => {
                self.problem(
                    "notify.retries",
                    format!("must be a whole number from 0 to {MAX_RETRIES}"),
                );
                0
            }
        };
        out
    }
}

/// `http://host[:port]/path[?query]` (port 80 by default) or `upstream://<name>/path` (the
/// targets of that `[[upstreams]]` entry, round robin, each with its base path).
fn notify_target(url: &str, upstreams: &[Upstream]) -> Result<NotifyTarget, String> {
    let shape =
        || format!("{url:?} is not of the form http://host:port/path or upstream://<name>/path");
    if url.contains('#') {
        return Err(format!("{url:?}: a notify url takes no fragment"));
    }
    if let Some(rest) = url.strip_prefix("upstream://") {
        let (name, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let Some(u) = upstreams.iter().find(|u| u.name == name) else {
            let names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            return Err(format!(
                "{url:?} names no [[upstreams]] entry {name:?} (there are: {})",
                names.join(", ")
            ));
        };
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        // One path for every target: they share a base path or the upstream has one target.
        let base = u.targets.first().map_or("", |t| t.base_path.as_str());
        if u.targets.iter().any(|t| t.base_path != base) {
            return Err(format!(
                "{url:?}: the urls of upstream {name:?} have different base paths; name one url instead"
            ));
        }
        return Ok(NotifyTarget {
            url: url.to_owned(),
            authorities: u.targets.iter().map(|t| t.authority.clone()).collect(),
            path: format!("{base}{path}").parse().map_err(|_| shape())?,
        });
    }
    let uri: http::Uri = url.parse().map_err(|_| shape())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{url:?}: https receivers are not supported yet; use http:// (e.g. to a local TLS sidecar)"
            ))
        }
        _ => return Err(shape()),
    }
    let authority = uri.authority().ok_or_else(shape)?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(shape());
    }
    let authority = match authority.port_u16() {
        Some(_) => authority.clone(),
        None => format!("{}:80", authority.host())
            .parse()
            .map_err(|_| shape())?,
    };
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    Ok(NotifyTarget {
        url: url.to_owned(),
        authorities: vec![authority],
        path,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::UpstreamTarget;

    fn upstream(name: &str, urls: &[(&str, &str)]) -> Upstream {
        Upstream {
            name: name.into(),
            targets: urls
                .iter()
                .map(|(a, base)| UpstreamTarget {
                    authority: a.parse().unwrap(),
                    base_path: (*base).into(),
                })
                .collect(),
            connect_timeout: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn urls_and_upstream_names() {
        let ups = [
            upstream("legacy", &[("10.0.0.1:9000", ""), ("10.0.0.2:9000", "")]),
            upstream("based", &[("10.0.0.3:80", "/app")]),
            upstream("mixed", &[("10.0.0.4:80", "/a"), ("10.0.0.5:80", "/b")]),
        ];
        let ok = |url: &str| notify_target(url, &ups).unwrap();
        let t = ok("http://127.0.0.1:9000/hooks/session?x=1");
        assert_eq!(t.authorities, ["127.0.0.1:9000"]);
        assert_eq!(t.path, "/hooks/session?x=1");
        let t = ok("http://hooks.internal");
        assert_eq!(t.authorities, ["hooks.internal:80"]);
        assert_eq!(t.path, "/");
        let t = ok("upstream://legacy/hooks/session");
        assert_eq!(t.authorities, ["10.0.0.1:9000", "10.0.0.2:9000"]);
        assert_eq!(t.path, "/hooks/session");
        assert_eq!(ok("upstream://based/hook").path, "/app/hook");
        assert_eq!(ok("upstream://legacy").path, "/");
        for (bad, says) in [
            ("https://x/h", "https receivers are not supported"),
            ("ftp://x/h", "is not of the form"),
            ("http://u@x/h", "is not of the form"),
            ("http://x/h#f", "no fragment"),
            ("upstream://nope/h", "names no [[upstreams]] entry \"nope\""),
            ("upstream://mixed/h", "different base paths"),
            ("/just/a/path", "is not of the form"),
        ] {
            let e = notify_target(bad, &ups).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    fn check(f: &file::NotifyFile, env: &[(&str, &str)]) -> (Notify, Vec<String>) {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut cx = Cx {
            base_dir: Path::new("/nonexistent"),
            env: &lookup,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let n = cx.notify(f, &[upstream("legacy", &[("127.0.0.1:1", "")])]);
        (n, cx.problems.iter().map(|p| p.to_string()).collect())
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn off_without_urls_needs_no_secret() {
        let (n, problems) = check(&file::NotifyFile::default(), &[]);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(n.targets.is_empty());
    }

    #[test]
    fn a_full_section() {
        let f = file::NotifyFile {
            urls: vec!["http://127.0.0.1:9/h".into(), "upstream://legacy/h".into()],
            events: vec!["session_ended".into(), "login".into()],
            timeout: "300ms".into(),
            max_queue: 5,
            retries: 3,
            ..Default::default()
        };
        let (n, problems) = check(&f, &[("AUTHGATE_NOTIFY_SECRET", SECRET)]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(n.targets.len(), 2);
        assert_eq!(&*n.secret, SECRET.as_bytes());
        assert!(n.session_ended && n.login);
        assert_eq!(n.timeout, std::time::Duration::from_millis(300));
        assert_eq!((n.max_queue, n.retries), (5, 3));
        let (n, _) = check(
            &file::NotifyFile {
                events: vec!["login".into()],
                ..f
            },
            &[("AUTHGATE_NOTIFY_SECRET", SECRET)],
        );
        assert!(n.login && !n.session_ended);
    }

    #[test]
    fn every_problem_with_its_key() {
        let urls = vec!["http://127.0.0.1:9/h".into()];
        type Case = (
            file::NotifyFile,
            Vec<(&'static str, &'static str)>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                file::NotifyFile {
                    urls: urls.clone(),
                    ..Default::default()
                },
                vec![],
                "notify.secret_env: environment variable AUTHGATE_NOTIFY_SECRET is not set",
            ),
            (
                file::NotifyFile {
                    urls: urls.clone(),
                    secret_env: Some("MINE".into()),
                    ..Default::default()
                },
                vec![("MINE", "short")],
                "notify.secret_env: the secret in MINE is 5 bytes; at least 32 are needed",
            ),
            (
                file::NotifyFile {
                    urls: urls.clone(),
                    secret_file: Some(PathBuf::from("missing.key")),
                    ..Default::default()
                },
                vec![],
                "notify.secret_file: cannot read /nonexistent/missing.key",
            ),
            (
                file::NotifyFile {
                    urls: urls.clone(),
                    secret_env: Some("A".into()),
                    secret_file: Some(PathBuf::from("k")),
                    ..Default::default()
                },
                vec![("A", SECRET)],
                "notify.secret_file: set either secret_env or secret_file, not both",
            ),
            (
                file::NotifyFile {
                    urls: urls.clone(),
                    events: vec!["logout".into()],
                    ..Default::default()
                },
                vec![("AUTHGATE_NOTIFY_SECRET", SECRET)],
                "notify.events[0]: \"logout\" is not an event",
            ),
            (
                file::NotifyFile {
                    urls: urls.clone(),
                    events: vec![],
                    ..Default::default()
                },
                vec![("AUTHGATE_NOTIFY_SECRET", SECRET)],
                "notify.events: at least one event is needed",
            ),
            (
                file::NotifyFile {
                    urls: urls.clone(),
                    timeout: "0s".into(),
                    ..Default::default()
                },
                vec![("AUTHGATE_NOTIFY_SECRET", SECRET)],
                "notify.timeout: must be more than 0s",
            ),
            (
                file::NotifyFile {
                    urls: urls.clone(),
                    max_queue: 0,
                    ..Default::default()
                },
                vec![("AUTHGATE_NOTIFY_SECRET", SECRET)],
                "notify.max_queue: must be a whole number from 1",
            ),
            (
                file::NotifyFile {
                    urls: urls.clone(),
                    retries: 11,
                    ..Default::default()
                },
                vec![("AUTHGATE_NOTIFY_SECRET", SECRET)],
                "notify.retries: must be a whole number from 0 to 10",
            ),
            (
                file::NotifyFile {
                    urls: vec!["upstream://nope/x".into()],
                    ..Default::default()
                },
                vec![("AUTHGATE_NOTIFY_SECRET", SECRET)],
                "notify.urls[0]: \"upstream://nope/x\" names no [[upstreams]] entry",
            ),
        ];
        for (f, env, want) in cases {
            let (_, problems) = check(&f, &env);
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "want {want:?}, got {problems:?}"
            );
            assert!(
                !problems.iter().any(|p| p.contains(SECRET)),
                "a problem shows the secret: {problems:?}"
            );
        }
    }
}
