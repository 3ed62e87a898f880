//! CORS: the gateway answers preflights itself when `[cors]` is on, and puts the CORS headers
//! for an allowed origin on every answer, its own errors included, so a browser app can read
//! a 401 and the `refresh-token` header. With `[cors]` off nothing here applies: an OPTIONS
//! request, preflight-shaped or not, is authenticated like any other method.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use super::{Flow, RequestCtx};
use crate::body::{empty, Body};
use crate::config::Cors;

/// Phase 3: with `[cors]` on, a preflight is answered here and never forwarded; with it off,
/// OPTIONS is an ordinary method and the route's `auth` applies (a preflight-shaped request is
/// never a way past authentication).
pub(super) fn preflight(cx: &RequestCtx<'_, '_>, parts: &Parts) -> Flow {
    let cors = &cx.cfg().cors;
    if cors.enabled() && is_preflight(&parts.method, &parts.headers) {
        Flow::Answer(cors.preflight(&parts.headers))
    } else {
        Flow::Continue
    }
}

/// Whether the request is a CORS preflight (with `[cors]` on, answered without a token).
pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl Cors {
    pub(crate) fn enabled(&self) -> bool {
        !self.allowed_origins.is_empty()
    }

    /// The value for `Access-Control-Allow-Origin` if the request's origin is allowed.
    pub(crate) fn allow_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        if !self.enabled() {
            return None;
        }
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        if self.allowed_origins.iter().any(|o| o == text) {
            Some(origin.clone())
        } else if self.allowed_origins.iter().any(|o| o == "*") && !self.allow_credentials {
            Some(HeaderValue::from_static("*"))
        } else {
            None
        }
    }

    /// The gateway's own answer to a preflight.
    pub(crate) fn preflight(&self, req_headers: &HeaderMap) -> Response<Body> {
        let mut resp = Response::new(empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = self.allow_origin(req_headers) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                self.allowed_headers.clone(),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(self.max_age.as_secs()),
            );
            if self.allow_credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
        resp
    }

    /// Adds the CORS headers for an allowed origin to any answer, unless the upstream set its own.
    pub(crate) fn decorate(
        &self,
        origin: Option<HeaderValue>,
        h: &mut HeaderMap,
        expose: Option<&HeaderValue>,
    ) {
        let Some(origin) = origin else { return };
        if h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            return;
        }
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        if self.allow_credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(e) = expose {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cors(origins: &[&str], creds: bool) -> Cors {
        Cors {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_headers: HeaderValue::from_static("Authorization, Content-Type"),
            allow_credentials: creds,
            max_age: Duration::from_secs(600),
        }
    }

    fn origin(o: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_static(o));
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        h
    }

    #[test]
    fn allowed_and_refused_origins() {
        let c = cors(&["https://app.example.com"], true);
        assert_eq!(
            c.allow_origin(&origin("https://app.example.com")).unwrap(),
            "https://app.example.com"
        );
        assert!(c
            .allow_origin(&origin("https://evil.example.com"))
            .is_none());
        let star = cors(&["*"], false);
        assert_eq!(
            star.allow_origin(&origin("https://x.example")).unwrap(),
            "*"
        );
        assert!(cors(&[], false)
            .allow_origin(&origin("https://x.example"))
            .is_none());
    }

    #[test]
    fn preflight_answer() {
        let c = cors(&["https://app.example.com"], true);
        let r = c.preflight(&origin("https://app.example.com"));
        assert_eq!(r.status(), 204);
        assert_eq!(r.headers()[header::ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(
            r.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
            "true"
        );
        let r = c.preflight(&origin("https://evil.example.com"));
        assert!(!r
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }
}
