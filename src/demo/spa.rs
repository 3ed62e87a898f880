//! The demo's single-page app under [`PATH`] (`/spa/`): a static page that logs in, calls the
//! echo upstream, lists the sessions and logs out with the JavaScript client of `clients/js`,
//! and shows why the gateway logged it out. The echo upstream serves it on a public route, as
//! an app's own static files would be; the library file is embedded as it is in the
//! repository, so the page always runs the client that ships.
//!
//! No inline script or style: the page's `Content-Security-Policy` allows scripts, styles and
//! requests from its own origin only.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{full, Body};

/// The route (public) the page lives under.
pub(crate) const PATH: &str = "/spa";

const INDEX_HTML: &str = include_str!("spa/index.html");
const APP_JS: &str = include_str!("spa/app.js");
const STYLE_CSS: &str = include_str!("spa/style.css");
/// The client library itself, as `clients/js` ships it.
const AUTHGATE_JS: &str = include_str!("../../clients/js/index.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The answer for `path` when it is the page's, else `None` (the echo answers).
pub(crate) fn answer(path: &str) -> Option<Response<Body>> {
    let rest = path.strip_prefix(PATH)?;
    let (body, content_type) = match rest {
        "" => return Some(moved()),
        "/" | "/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/authgate.js" => (AUTHGATE_JS, "text/javascript; charset=utf-8"),
        "/style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ if rest.starts_with('/') => return Some(not_found()),
        // `/spaces`: not under the page's path.
        _ => return None,
    };
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(resp)
}

/// `/spa` → `/spa/`, so the page's relative URLs resolve under it.
fn moved() -> Response<Body> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/spa/"));
    resp
}

fn not_found() -> Response<Body> {
    let mut resp = Response::new(full("not found\n"));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_page_and_its_files_under_its_path_only() {
        for (path, status, kind) in [
            ("/spa/", 200, Some("text/html; charset=utf-8")),
            ("/spa/index.html", 200, Some("text/html; charset=utf-8")),
            (
                "/spa/authgate.js",
                200,
                Some("text/javascript; charset=utf-8"),
            ),
            ("/spa/app.js", 200, Some("text/javascript; charset=utf-8")),
            ("/spa/style.css", 200, Some("text/css; charset=utf-8")),
            ("/spa", 301, None),
            ("/spa/nope.js", 404, None),
        ] {
            let resp = answer(path).unwrap_or_else(|| panic!("{path}: not the page's"));
            assert_eq!(resp.status(), status, "{path}");
            let got = resp.headers().get(header::CONTENT_TYPE);
            assert_eq!(got.and_then(|v| v.to_str().ok()), kind, "{path}");
            if status == 200 {
                let csp = &resp.headers()[header::CONTENT_SECURITY_POLICY];
                assert!(
                    csp.to_str().unwrap().contains("script-src 'self'"),
                    "{path}"
                );
            }
        }
        for path in ["/", "/spaces", "/api/spa/", "/public/spa/"] {
            assert!(answer(path).is_none(), "{path}");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_and_imports_the_shipped_library() {
        assert!(!INDEX_HTML.contains("<script>"), "inline script");
        for handler in [
            "onclick", "onsubmit", "onload", "onchange", "oninput", "onerror",
        ] {
            assert!(
                !INDEX_HTML.contains(handler),
                "inline event handler {handler}"
            );
        }
        assert!(INDEX_HTML.contains(r#"<script type="module" src="app.js"></script>"#));
        assert!(APP_JS.contains("from './authgate.js'"));
        assert!(AUTHGATE_JS.contains("export function createClient"));
    }
}
