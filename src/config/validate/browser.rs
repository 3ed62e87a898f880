//! `[browser]`: cookie names, the CSRF mode, the login page and the hosts `return_to` may
//! name. Off unless `enabled = true`; then `token.cookie` must be unset or name the access
//! cookie, and a login backend must exist (the cookies are set by a login).

use super::Cx;
use crate::config::{file, Browser, CsrfMode, LoginPage};

impl Cx<'_> {
    pub(super) fn browser(
        &mut self,
        f: &file::BrowserFile,
        login: &file::LoginFile,
        token: &file::TokenFile,
    ) -> Option<Browser> {
        if !f.enabled {
            return None;
        }
        let names = [
            ("browser.access_cookie", &f.access_cookie),
            ("browser.refresh_cookie", &f.refresh_cookie),
            ("browser.csrf_cookie", &f.csrf_cookie),
        ];
        for (i, (key, name)) in names.iter().enumerate() {
            if !is_cookie_name(name) {
                self.problem(*key, format!("{name:?} is not a valid cookie name"));
            } else if let Some((other, _)) = names[..i].iter().find(|(_, n)| n == name) {
                self.problem(*key, format!("{name:?} is already the name of {other}"));
            }
        }
        if !token.cookie.is_empty() && token.cookie != f.access_cookie {
            self.problem(
                "token.cookie",
                format!(
                    "with [browser] on the token is read from browser.access_cookie ({:?}); \
                     leave token.cookie unset or set it to the same name",
                    f.access_cookie
                ),
            );
        }
        if login.backend == file::BackendName::None {
            self.problem(
                "browser.enabled",
                "[browser] needs a login backend (login.backend = \"users_file\" or \"upstream\"): \
                 its cookies are set by a login",
            );
        }
        if f.insecure_cookies {
            self.warn(
                "browser.insecure_cookies",
                "cookies are set without Secure: anyone on the network path can read them; \
                 for plain-HTTP development only",
            );
        }
        let csrf = match f.csrf.as_str() {
            "origin" => CsrfMode::Origin,
            "double_submit" => CsrfMode::DoubleSubmit,
            "off" => {
                self.warn(
                    "browser.csrf",
                    "off: a cross-site form can post to the app with the user's cookie",
                );
                CsrfMode::Off
            }
            other => {
                self.problem(
                    "browser.csrf",
                    format!("{other:?} is not one of \"origin\", \"double_submit\", \"off\""),
                );
                CsrfMode::Origin
            }
        };
        let login_page = match f.login_page.as_str() {
            "builtin" => LoginPage::Builtin,
            p if is_page(p) => LoginPage::At(p.to_owned()),
            p => {
                self.problem(
                    "browser.login_page",
                    format!(
                        "{p:?} is neither \"builtin\" nor a path (\"/login\") or an http(s) URL \
                         of the app's own login page"
                    ),
                );
                LoginPage::Builtin
            }
        };
        let mut allowed_return_hosts = Vec::new();
        for (i, host) in f.allowed_return_hosts.iter().enumerate() {
            if is_host(host) {
                allowed_return_hosts.push(host.to_ascii_lowercase());
            } else {
                self.problem(
                    format!("browser.allowed_return_hosts[{i}]"),
                    format!(
                        "{host:?} is not a host name like \"app.example.com\" or \
                         \"app.example.com:8443\" (no scheme, no path)"
                    ),
                );
            }
        }
        Some(Browser {
            access_cookie: f.access_cookie.clone(),
            refresh_cookie: f.refresh_cookie.clone(),
            csrf_cookie: f.csrf_cookie.clone(),
            secure: !f.insecure_cookies,
            csrf,
            login_page,
            redirect_html: f.redirect_html,
            allowed_return_hosts,
            refresh_path: format!("{}/refresh", login.prefix),
        })
    }
}

/// RFC 6265 cookie-name: an RFC 7230 token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A login page of the app's own: a path of visible ASCII, or an http(s) URL.
fn is_page(p: &str) -> bool {
    let visible = !p.is_empty() && p.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'\\');
    let path = p.starts_with('/') && !p.starts_with("//");
    let url = ["http://", "https://"].iter().any(|s| {
        p.strip_prefix(s)
            .is_some_and(|rest| is_host(rest.split(['/', '?']).next().unwrap_or("")))
    });
    visible && (path || url)
}

/// `host` or `host:port`: letters, digits, `-` and `.` (or an IPv6 literal in brackets).
fn is_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, _)) if !host.ends_with(']') && host.contains(':') => (h, None),
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && !host.starts_with(['.', '-'])
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    port_ok && host_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn each_rule_reports_its_key_path() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("[browser]\nenabled = true\naccess_cookie = \"a b\"", "browser.access_cookie", "not a valid cookie name"),
            ("[browser]\nenabled = true\nrefresh_cookie = \"\"", "browser.refresh_cookie", "not a valid cookie name"),
            ("[browser]\nenabled = true\ncsrf_cookie = \"authgate_access\"", "browser.csrf_cookie", "already the name of browser.access_cookie"),
            ("[token]\ncookie = \"other\"\n[browser]\nenabled = true", "token.cookie", "leave token.cookie unset"),
            ("[login]\nbackend = \"none\"\n[session]\nmode = \"stateless\"\n[browser]\nenabled = true", "browser.enabled", "needs a login backend"),
            ("[browser]\nenabled = true\ncsrf = \"strict\"", "browser.csrf", "not one of"),
            ("[browser]\nenabled = true\nlogin_page = \"login.html\"", "browser.login_page", "neither \"builtin\""),
            ("[browser]\nenabled = true\nlogin_page = \"//evil.example/login\"", "browser.login_page", "neither \"builtin\""),
            ("[browser]\nenabled = true\nallowed_return_hosts = [\"https://app.example.com\"]", "browser.allowed_return_hosts[0]", "not a host name"),
            ("[browser]\nenabled = true\nallowed_return_hosts = [\"app.example.com/x\"]", "browser.allowed_return_hosts[0]", "not a host name"),
        ];
        assert_rules(cases);
    }

    #[test]
    fn a_config_with_browser_on_reads_the_access_cookie() {
        let cfg = ok(&format!(
            "[browser]\nenabled = true\ninsecure_cookies = true\nallowed_return_hosts = [\"App.Example.com:8443\"]\n{MINIMAL}"
        ))
        .config;
        let b = cfg.browser.as_ref().expect("browser on");
        assert_eq!(cfg.token.cookie.as_deref(), Some("authgate_access"));
        assert!(!b.secure);
        assert_eq!(b.csrf, CsrfMode::Origin);
        assert_eq!(b.login_page, LoginPage::Builtin);
        assert_eq!(b.refresh_path, "/auth/refresh");
        assert_eq!(b.allowed_return_hosts, ["app.example.com:8443"]);
        let off = ok(MINIMAL).config;
        assert!(off.browser.is_none());
        assert_eq!(off.token.cookie, None);
    }

    #[test]
    fn pages_and_hosts() {
        for (p, want) in [
            ("/login", true),
            ("https://sso.example.com/login?x=1", true),
            ("http://localhost:3000/login", true),
            ("//evil.example", false),
            ("/\\evil", false),
            ("javascript:alert(1)", false),
            ("https://", false),
            ("/a b", false),
        ] {
            assert_eq!(is_page(p), want, "{p:?}");
        }
        for (h, want) in [
            ("app.example.com", true),
            ("localhost:3000", true),
            ("[::1]:8443", true),
            ("app.example.com:", false),
            ("app.example.com:99999", false),
            ("a/b", false),
            ("", false),
        ] {
            assert_eq!(is_host(h), want, "{h:?}");
        }
    }
}
