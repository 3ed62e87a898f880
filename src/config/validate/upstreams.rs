//! `[[upstreams]]`: named upstreams, each with `http://host:port[/base]` targets (tried round
//! robin) and a connect timeout.

use super::{non_canonical, Cx};
use crate::config::{file, Upstream, UpstreamTarget};

impl Cx<'_> {
    pub(super) fn upstreams(&mut self, list: &[file::UpstreamFile]) -> Vec<Upstream> {
        if list.is_empty() {
            self.problem("upstreams", "at least one [[upstreams]] is needed");
        }
        let mut out = Vec::new();
        for (i, u) in list.iter().enumerate() {
            let prefix = format!("upstreams[{i}]");
            if u.name.is_empty() {
                self.problem(format!("{prefix}.name"), "required");
            } else if list[..i].iter().any(|o| o.name == u.name) {
                self.problem(
                    format!("{prefix}.name"),
                    format!("{:?} is used by an earlier upstream", u.name),
                );
            }
            if u.urls.is_empty() {
                self.problem(format!("{prefix}.urls"), "at least one url is needed");
            }
            let mut targets = Vec::new();
            for (j, url) in u.urls.iter().enumerate() {
                match upstream_target(url) {
                    Ok(t) => targets.push(t),
                    Err(why) => self.problem(format!("{prefix}.urls[{j}]"), why),
                }
            }
            out.push(Upstream {
                name: u.name.clone(),
                targets,
                connect_timeout: self
                    .positive(&format!("{prefix}.connect_timeout"), &u.connect_timeout),
            });
        }
        out
    }
}

/// `http://host[:port][/base]` → target; the port defaults to 80.
fn upstream_target(url: &str) -> Result<UpstreamTarget, String> {
    let shape = || format!("{url:?} is not of the form http://host:port[/base]");
    let uri: http::Uri = url.parse().map_err(|_| shape())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{url:?}: https upstreams are not supported yet; use http:// (e.g. to a local TLS sidecar)"
            ))
        }
        _ => return Err(shape()),
    }
    let authority = uri.authority().ok_or_else(shape)?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(shape());
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!(
            "{url:?}: an upstream url takes no query or fragment"
        ));
    }
    let authority = match authority.port_u16() {
        Some(_) => authority.clone(),
        None => format!("{}:80", authority.host())
            .parse()
            .map_err(|_| shape())?,
    };
    let path = uri.path();
    let base_path = path.trim_end_matches('/').to_owned();
    if let Some(why) = non_canonical(&format!("{base_path}/")) {
        return Err(why);
    }
    Ok(UpstreamTarget {
        authority,
        base_path,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn each_rule_reports_its_key_path() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            // [[upstreams]] (MINIMAL's is upstreams[0])
            ("[[upstreams]]\nname = \"app\"\nurls = [\"http://127.0.0.1:1\"]", "upstreams[1].name", "earlier upstream"),
            ("[[upstreams]]\nurls = [\"http://127.0.0.1:1\"]", "upstreams[1].name", "required"),
            ("[[upstreams]]\nname = \"b\"", "upstreams[1].urls", "at least one url"),
            (
                "[[upstreams]]\nname = \"b\"\nurls = [\"https://legacy.example.com\"]",
                "upstreams[1].urls[0]",
                "https upstreams are not supported yet",
            ),
            ("[[upstreams]]\nname = \"b\"\nurls = [\"127.0.0.1:9000\"]", "upstreams[1].urls[0]", "http://host:port"),
            ("[[upstreams]]\nname = \"b\"\nurls = [\"http://u:p@h:1\"]", "upstreams[1].urls[0]", "http://host:port"),
            ("[[upstreams]]\nname = \"b\"\nurls = [\"http://h:1/?x=1\"]", "upstreams[1].urls[0]", "no query"),
            (
                "[[upstreams]]\nname = \"b\"\nurls = [\"http://h:1\"]\nconnect_timeout = \"0s\"",
                "upstreams[1].connect_timeout",
                "more than 0s",
            ),
        ];
        assert_rules(cases);
    }
}
