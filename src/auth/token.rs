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
    // Spaces inside the quotes of a cookie (`at=" x "`) are kept by the cookie reader; a
    // token never starts or ends with one, and an upstream trimming them would read another.
    let spaced = |c: &str| {
        c.starts_with(|ch: char| ch.is_ascii_whitespace())
            || c.ends_with(|ch: char| ch.is_ascii_whitespace())
    };
    if from_cookie.is_some_and(spaced) {
        return Err(GatewayError::InvalidToken);
    }
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
///
/// Read byte by byte, as an upstream reads it: a header holding bytes beyond ASCII
/// (`obs-text`, which HTTP lets through) is read too, so that a cookie of ours can neither
/// hide in one (to reach the upstream unread and unstripped) nor make the crumbs of an
/// HTTP/2 request read differently once joined. A value of ours beyond ASCII (no token or
/// CSRF value is) is refused like a second value.
pub(crate) fn cookie_value<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a str>, GatewayError> {
    let mut found: Option<&str> = None;
    for v in headers.get_all(header::COOKIE) {
        for (k, val) in pairs(v.as_bytes()) {
            if k != name.as_bytes() {
                continue;
            }
            let val = trim_quotes(val);
            let val = std::str::from_utf8(val)
                .ok()
                .filter(|v| v.is_ascii())
                .ok_or(NOT_ASCII)?;
            match found {
                Some(prev) if prev != val => return Err(AMBIGUOUS),
                _ => found = Some(val),
            }
        }
    }
    Ok(found.filter(|v| !v.is_empty()))
}

const NOT_ASCII: GatewayError = GatewayError::BadRequest("a cookie of the gateway's is not ASCII");

/// The `name=value` pairs of one `Cookie` value, each trimmed of spaces around its name and
/// value; a part without `=` is no pair of any name.
fn pairs(value: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    value.split(|b| *b == b';').filter_map(|part| {
        let part = part.trim_ascii();
        let eq = part.iter().position(|b| *b == b'=')?;
        Some((part[..eq].trim_ascii(), part[eq + 1..].trim_ascii()))
    })
}

/// A value without the quotes around it (`"abc"` is `abc`).
fn trim_quotes(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| *b != b'"').unwrap_or(v.len());
    let end = v.iter().rposition(|b| *b != b'"').map_or(start, |i| i + 1);
    &v[start..end.max(start)]
}

/// Whether a `Cookie` value names cookie `name` (so that [`strip_cookie`] has work to do).
fn names(value: &[u8], name: &str) -> bool {
    pairs(value).any(|(k, _)| k == name.as_bytes())
}

/// Removes cookie `name` from every `Cookie` header, keeping the others (beyond-ASCII ones
/// too, byte for byte). Nothing is rebuilt (or allocated) when no header names it: the
/// common case on the proxy path.
pub(crate) fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let named = headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| names(v.as_bytes(), name));
    if !named {
        return;
    }
    let values: Vec<Vec<u8>> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| {
            let kept = v
                .as_bytes()
                .split(|b| *b == b';')
                .map(<[u8]>::trim_ascii)
                .filter(|p| !p.is_empty() && !names(p, name));
            let mut out = Vec::with_capacity(v.len());
            for part in kept {
                if !out.is_empty() {
                    out.extend_from_slice(b"; ");
                }
                out.extend_from_slice(part);
            }
            out
        })
        .filter(|v| !v.is_empty())
        .collect();
    headers.remove(header::COOKIE);
    for v in values {
        // Parts of a valid value joined with "; ": valid too.
        if let Ok(v) = HeaderValue::from_bytes(&v) {
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
    fn a_cookie_token_with_spaces_inside_its_quotes_is_an_invalid_token() {
        // Found by fuzz/token_verify: the quotes came off, the spaces inside them stayed.
        for cookie in [
            "at=\"  abc.def.ghi  \"",
            "at=\" abc\"",
            "at=\"abc \"",
            "at=\"\tabc\"",
        ] {
            let h = hm(&[("cookie", cookie)]);
            assert_eq!(
                extract(&h, Some("at")),
                Err(GatewayError::InvalidToken),
                "{cookie}"
            );
        }
        // Quotes alone are fine, and so is a space that is no part of the value.
        let h = hm(&[("cookie", "a=1; at=\"abc.def\" ; b=2")]);
        assert_eq!(extract(&h, Some("at")), Ok(Some("abc.def")));
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
    }

    fn obs(v: &[u8]) -> HeaderValue {
        HeaderValue::from_bytes(v).expect("obs-text is a valid header value")
    }

    /// Found by the `cookie_parse` fuzz target: a `Cookie` header with a byte beyond ASCII
    /// anywhere was skipped whole, so a cookie of ours in it was neither read nor stripped
    /// (the refresh cookie reached the upstream), and HTTP/2 crumbs read differently once
    /// joined.
    #[test]
    fn a_header_beyond_ascii_is_read_and_stripped_byte_by_byte() {
        let mut h = HeaderMap::new();
        h.append("cookie", obs(b"x=caf\xc3\xa9; at=tok; y=\xff"));
        assert_eq!(cookie_value(&h, "at"), Ok(Some("tok")));
        strip_cookie(&mut h, "at");
        let all: Vec<&[u8]> = h
            .get_all("cookie")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(all, [&b"x=caf\xc3\xa9; y=\xff"[..]]);

        // Another value in such a header is a second token; a value of ours beyond ASCII is
        // refused too.
        let h = hm(&[("cookie", "at=tok")]);
        let mut two = h.clone();
        two.append("cookie", obs(b"at=other; x=\xe9"));
        assert_eq!(cookie_value(&two, "at"), Err(AMBIGUOUS));
        let mut bad = HeaderMap::new();
        bad.append("cookie", obs(b"at=t\xc3\xa9"));
        assert_eq!(cookie_value(&bad, "at"), Err(NOT_ASCII));

        // Crumbs read as their join does (the pipeline joins them for an HTTP/1.1 upstream).
        let mut crumbs = HeaderMap::new();
        crumbs.append("cookie", obs(b"x=\xe9"));
        crumbs.append("cookie", obs(b"at=tok"));
        let mut joined = HeaderMap::new();
        joined.append("cookie", obs(b"x=\xe9; at=tok"));
        assert_eq!(cookie_value(&crumbs, "at"), cookie_value(&joined, "at"));
        assert_eq!(cookie_value(&joined, "at"), Ok(Some("tok")));
    }
}
