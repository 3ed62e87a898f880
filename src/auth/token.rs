//! Finding the access token in a request: `Authorization: Bearer`, else the configured cookie.
//!
//! Ambiguity is refused rather than resolved: two `Authorization` headers, two different
//! token cookies, or a header and a cookie that disagree are a 400, so a proxy in front and
//! the gateway can never read different tokens out of one request.

use http::header::{self, HeaderMap, HeaderValue};

use crate::error::GatewayError;

const AMBIGUOUS: GatewayError =
    GatewayError::BadRequest("the request carries more than one access token");

/// The token the request presents, if any.
pub(crate) fn extract<'a>(
    headers: &'a HeaderMap,
    cookie: Option<&str>,
) -> Result<Option<&'a str>, GatewayError> {
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    let bearer = match (auth.next(), auth.next()) {
        (Some(_), Some(_)) => return Err(AMBIGUOUS),
        (Some(v), None) => bearer(v)?,
        _ => None,
    };
    let from_cookie = match cookie {
        Some(name) => cookie_value(headers, name)?,
        None => None,
    };
    match (bearer, from_cookie) {
        (Some(b), Some(c)) if b != c => Err(AMBIGUOUS),
        (Some(b), _) => Ok(Some(b)),
        (None, c) => Ok(c),
    }
}

/// The credentials of a `Bearer` Authorization value; other schemes are not ours.
fn bearer(v: &HeaderValue) -> Result<Option<&str>, GatewayError> {
    // ASCII only, as `to_str` would have it, but checked a word at a time (`to_str`'s byte
    // by byte check was most of this phase's cost). Beyond ASCII, `trim` below would take
    // Unicode spaces for padding, and the gateway and the upstream would read different
    // tokens out of one header.
    let bytes = v.as_bytes();
    if !bytes.is_ascii() {
        return Err(GatewayError::InvalidToken);
    }
    let s = std::str::from_utf8(bytes).map_err(|_| GatewayError::InvalidToken)?;
    let Some((scheme, rest)) = s.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(GatewayError::InvalidToken);
    }
    Ok(Some(token))
}

/// The value of cookie `name` across every `Cookie` header; two different values are a 400.
pub(crate) fn cookie_value<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a str>, GatewayError> {
    let mut found: Option<&str> = None;
    for v in headers.get_all(header::COOKIE) {
        let Some(s) = ascii(v) else { continue };
        for pair in s.split(';') {
            let Some((k, val)) = pair.trim().split_once('=') else {
                continue;
            };
            if k.trim() == name {
                let val = val.trim().trim_matches('"');
                match found {
                    Some(prev) if prev != val => return Err(AMBIGUOUS),
                    _ => found = Some(val),
                }
            }
        }
    }
    Ok(found.filter(|v| !v.is_empty()))
}

/// A header value as text when it is ASCII, as `to_str` would have it, but checked a word at
/// a time: a `HeaderValue` holds no control bytes but tab, so ASCII is visible ASCII here.
/// (`to_str`'s byte-by-byte check was a measurable part of a cookie request's cost.)
fn ascii(v: &HeaderValue) -> Option<&str> {
    let bytes = v.as_bytes();
    if bytes.is_ascii() {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

/// Whether a `Cookie` header names cookie `name` (so that [`strip_cookie`] has work to do).
fn names(value: &str, name: &str) -> bool {
    value
        .split(';')
        .any(|p| p.split_once('=').is_some_and(|(k, _)| k.trim() == name))
}

/// Removes cookie `name` from every `Cookie` header, keeping the others. Nothing is
/// rebuilt (or allocated) when no header names it: the common case on the proxy path.
pub(crate) fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let named = headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| ascii(v).is_some_and(|s| names(s, name)));
    if !named {
        return;
    }
    let values: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(ascii)
        .map(|s| {
            s.split(';')
                .map(str::trim)
                .filter(|p| p.split_once('=').is_none_or(|(k, _)| k.trim() != name))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty())
        .collect();
    headers.remove(header::COOKIE);
    for v in values {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.append(header::COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_bearer_value_beyond_ascii_is_an_invalid_token() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer ab\xffcd").unwrap(),
        );
        assert_eq!(extract(&h, None), Err(GatewayError::InvalidToken));
        // UTF-8 beyond ASCII too, wherever it is: inside, as padding, as the separator.
        for value in [
            "Bearer ab\u{e9}cd",
            "Bearer abcd\u{a0}",
            "Bearer \u{2003}abcd\u{3000}",
            "Bearer\u{a0}abcd",
        ] {
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
            assert_eq!(
                extract(&h, None),
                Err(GatewayError::InvalidToken),
                "{value:?}"
            );
        }
    }

    #[test]
    fn extract_table() {
        let bad = Err(AMBIGUOUS);
        type Case<'a> = (
            HeaderMap,
            Option<&'a str>,
            Result<Option<&'a str>, GatewayError>,
        );
        let cases: Vec<Case<'_>> = vec![
            (hm(&[]), None, Ok(None)),
            (
                hm(&[("authorization", "Bearer abc")]),
                None,
                Ok(Some("abc")),
            ),
            (
                hm(&[("authorization", "bearer   abc ")]),
                None,
                Ok(Some("abc")),
            ),
            (
                hm(&[("authorization", "Basic dXNlcjpwYXNz")]),
                None,
                Ok(None),
            ),
            (
                hm(&[("authorization", "Bearer ")]),
                None,
                Err(GatewayError::InvalidToken),
            ),
            (
                hm(&[("authorization", "Bearer a"), ("authorization", "Bearer a")]),
                None,
                bad.clone(),
            ),
            (
                hm(&[("cookie", "x=1; at=tok; y=2")]),
                Some("at"),
                Ok(Some("tok")),
            ),
            (hm(&[("cookie", "at=tok")]), None, Ok(None)),
            (
                hm(&[("cookie", "at=one"), ("cookie", "at=two")]),
                Some("at"),
                bad.clone(),
            ),
            (
                hm(&[("authorization", "Bearer a"), ("cookie", "at=b")]),
                Some("at"),
                bad.clone(),
            ),
            (
                hm(&[("authorization", "Bearer a"), ("cookie", "at=a")]),
                Some("at"),
                Ok(Some("a")),
            ),
        ];
        for (i, (h, cookie, want)) in cases.into_iter().enumerate() {
            assert_eq!(extract(&h, cookie), want, "case {i}");
        }
    }

    #[test]
    fn strip_cookie_keeps_others() {
        let mut h = hm(&[("cookie", "x=1; at=tok; y=2"), ("cookie", "at=tok")]);
        strip_cookie(&mut h, "at");
        let all: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(all, vec!["x=1; y=2"]);
    }

    #[test]
    fn strip_cookie_leaves_headers_without_it_as_they_came() {
        // Not rebuilt: the spacing and the order of the headers stay, a value that only
        // contains the name is no cookie of that name.
        let mut h = hm(&[("cookie", "x=1;y=at"), ("cookie", "ata=2 ;  z=3")]);
        strip_cookie(&mut h, "at");
        let all: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(all, vec!["x=1;y=at", "ata=2 ;  z=3"]);
        // A non-ASCII header is never read for cookies, so never taken for one of ours.
        let mut h = HeaderMap::new();
        h.append(
            "cookie",
            HeaderValue::from_bytes(b"at=\xc3\xa9").expect("obs-text"),
        );
        assert_eq!(cookie_value(&h, "at"), Ok(None));
    }
}
