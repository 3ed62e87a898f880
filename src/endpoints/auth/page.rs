//! `GET {prefix}/login` with `[browser]` on and `login_page = "builtin"`: the gateway's own
//! login form.
//!
//! No script at all, and a `Content-Security-Policy` that allows none: the one style block is
//! allowed by its hash. The page cannot be framed (`X-Frame-Options: DENY`,
//! `frame-ancestors 'none'`), forms post only to the gateway (`form-action 'self'`), and
//! nothing from the query is written into it unescaped: `?error=` picks one of a fixed set of
//! messages, and `?return_to=` is made safe, then HTML-escaped into a hidden field.

use std::sync::LazyLock;

use base64::Engine;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::app::Live;
use crate::auth::browser;
use crate::body::{full, Body};
use crate::config::Browser;

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0}\
main{max-width:22rem;margin:10vh auto;background:#fff;padding:2rem;border-radius:8px;\
box-shadow:0 1px 4px rgba(0,0,0,.15)}h1{font-size:1.4rem;margin-top:0}\
label{display:block;margin:.8rem 0 .3rem}input{width:100%;box-sizing:border-box;\
padding:.5rem;font-size:1rem}button{margin-top:1.2rem;width:100%;padding:.6rem;\
font-size:1rem}.error{color:#a40000;background:#fdecec;padding:.6rem;border-radius:4px}\
img{display:block;margin-top:.8rem;max-width:100%}";

/// The page's CSP: nothing but itself, its hashed style and `data:` images (the captcha).
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, STYLE.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(hash.as_ref());
    let csp = format!(
        "default-src 'none'; style-src 'sha256-{b64}'; img-src data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    HeaderValue::from_str(&csp).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// A picture challenge to show on the page.
pub(super) struct CaptchaField {
    pub id: String,
    /// `data:image/png;base64,...`
    pub image: String,
}

/// The text shown for `?error=CODE`; an unknown code gets the general one.
fn message(code: &str) -> &'static str {
    match code {
        "invalid_credentials" => "Wrong username or password.",
        "account_locked" => "Too many failed attempts. Try again later.",
        "captcha_required" => "Please type the characters in the picture.",
        "invalid_captcha" => "The characters did not match the picture. Try this one.",
        "token_theft_detected" => {
            "Your session was ended to protect your account. Please log in again."
        }
        "session_revoked" | "session_replaced" => "Your session has ended. Please log in again.",
        "store_unavailable" | "upstream_unavailable" | "upstream_timeout" => {
            "The service is unavailable right now. Try again in a moment."
        }
        "bad_request" => "The login form was not filled in correctly.",
        "rate_limited" => "Too many attempts from your network. Try again later.",
        _ => "The login did not succeed. Please try again.",
    }
}

/// HTML text and attribute escaping.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page for `return_to` (already made safe) and `error` (a code), with the captcha when
/// one is required.
pub(super) fn render(
    live: &Live,
    return_to: &str,
    error: Option<&str>,
    captcha: Option<&CaptchaField>,
) -> String {
    let action = escape(&format!("{}/login", live.config.login.prefix));
    let error = error.map_or_else(String::new, |code| {
        format!(
            "<p class=\"error\" role=\"alert\">{}</p>\n",
            escape(message(code))
        )
    });
    let captcha = captcha.map_or_else(String::new, |c| {
        format!(
            "<label for=\"captcha\">Characters in the picture</label>\n\
             <img src=\"{}\" alt=\"A picture of characters to type\" width=\"260\" height=\"96\">\n\
             <input type=\"hidden\" name=\"captcha_id\" value=\"{}\">\n\
             <input id=\"captcha\" name=\"captcha\" autocomplete=\"off\" required>\n",
            escape(&c.image),
            escape(&c.id)
        )
    });
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Log in</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>Log in</h1>\n{error}\
         <form method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"return_to\" value=\"{}\">\n\
         <label for=\"username\">Username</label>\n\
         <input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus>\n\
         <label for=\"password\">Password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\n\
         {captcha}<button type=\"submit\">Log in</button>\n</form>\n</main>\n</body>\n</html>\n",
        escape(return_to)
    )
}

/// The page as an answer: never cached, never framed, no script.
pub(super) fn answer(html: String) -> Response<Body> {
    let mut r = Response::new(full(html));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

/// `return_to` and `error` of the page's query.
pub(super) fn query(b: &Browser, query: Option<&str>) -> (String, Option<String>) {
    let q = query.unwrap_or("");
    let return_to = super::refresh::url_query_value(q, "return_to").map_or_else(
        || "/".to_owned(),
        |r| browser::safe_return_to(&r, &b.allowed_return_hosts),
    );
    let error = super::refresh::url_query_value(q, "error").filter(|e| !e.is_empty());
    (return_to, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_from_the_query_is_written_unescaped() {
        assert_eq!(
            escape("\"><script>x</script>"),
            "&quot;&gt;&lt;script&gt;x&lt;/script&gt;"
        );
        assert_eq!(message("<script>"), message("unknown"));
        assert_eq!(
            message("invalid_credentials"),
            "Wrong username or password."
        );
    }

    #[test]
    fn the_policy_allows_the_style_by_its_hash_and_no_script() {
        let csp = CSP.to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
        assert!(!csp.contains("script-src"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    }
}
