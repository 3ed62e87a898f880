//! Cookie parsing and stripping (`src/auth/token.rs`): `Cookie` headers made of names that
//! are or resemble the gateway's cookie, values with quotes, spaces, `=` and bytes beyond
//! ASCII (`obs-text`, which HTTP lets through), split across crumbs.
//!
//! Every header is also read here byte by byte, as an upstream would read it: pairs split on
//! `;`, spaces around them trimmed, name before the first `=`.
//! - after stripping cookie `at`, no header holds a pair named `at`, and every other pair is
//!   still there, in order;
//! - the value read for `at` is one that some header holds under that name (quotes trimmed),
//!   non-empty, and no header holds another value under it (else the request is refused);
//! - joining crumbs into one header (as the pipeline does for HTTP/2) changes neither answer.

#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const NAME: &str = "at";

const NAMES: &[&str] = &[
    "at", "AT", " at", "at ", "\"at\"", "ata", "x", "a t", "", "at;",
];
const VALUES: &[&[u8]] = &[
    b"tok",
    b"\"tok\"",
    b" tok ",
    b"other",
    b"",
    b"a=b",
    b"\xc3\xa9",
    b"tok\xff",
    b"\"",
    b"t ok",
];

#[derive(Arbitrary, Debug)]
enum Part {
    Pair(u8, u8),
    Raw(Vec<u8>),
    RawPair(u8, Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Cookie {
    parts: Vec<Part>,
    sep: u8,
}

fuzz_target!(|headers: Vec<Cookie>| {
    let mut h = HeaderMap::new();
    for c in headers.iter().take(4) {
        let sep: &[u8] = match c.sep % 3 {
            0 => b"; ",
            1 => b";",
            _ => b" ;  ",
        };
        let mut bytes = Vec::new();
        for (i, p) in c.parts.iter().take(8).enumerate() {
            if i > 0 {
                bytes.extend_from_slice(sep);
            }
            match p {
                Part::Pair(n, v) => {
                    bytes.extend_from_slice(NAMES[usize::from(*n) % NAMES.len()].as_bytes());
                    bytes.push(b'=');
                    bytes.extend_from_slice(VALUES[usize::from(*v) % VALUES.len()]);
                }
                Part::Raw(raw) => bytes.extend_from_slice(raw),
                Part::RawPair(n, v) => {
                    bytes.extend_from_slice(NAMES[usize::from(*n) % NAMES.len()].as_bytes());
                    bytes.push(b'=');
                    bytes.extend_from_slice(v);
                }
            }
        }
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            h.append(http::header::COOKIE, v);
        }
    }

    let read = authgate::fuzzing::cookie_value(&h, NAME).map(|v| v.map(str::to_owned));
    let values: Vec<&[u8]> = pairs(&h)
        .into_iter()
        .filter(|(k, _)| *k == NAME.as_bytes())
        .map(|(_, v)| unquote(v))
        .collect();
    match &read {
        Ok(Some(v)) => {
            assert!(!v.is_empty());
            assert!(
                values.iter().all(|x| *x == v.as_bytes()),
                "read {v:?} but the headers also hold {values:?}"
            );
        }
        Ok(None) => assert!(
            values.iter().all(|x| x.is_empty()),
            "read nothing but the headers hold {values:?}"
        ),
        Err(_) => {}
    }

    // The crumbs joined (HTTP/2 → HTTP/1.1) are read alike.
    let crumbs: Vec<&[u8]> = h
        .get_all(http::header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if crumbs.len() > 1 {
        let mut joined = HeaderMap::new();
        joined.insert(
            http::header::COOKIE,
            HeaderValue::from_bytes(&crumbs.join(&b"; "[..])).expect("valid crumbs join validly"),
        );
        let again = authgate::fuzzing::cookie_value(&joined, NAME).map(|v| v.map(str::to_owned));
        assert_eq!(again.is_ok(), read.is_ok(), "{h:?}");
        if let (Ok(a), Ok(b)) = (&again, &read) {
            assert_eq!(a, b, "joined crumbs read differently: {h:?}");
        }
    }

    let kept: Vec<(Vec<u8>, Vec<u8>)> = pairs(&h)
        .into_iter()
        .filter(|(k, _)| *k != NAME.as_bytes())
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    let mut stripped = h.clone();
    authgate::fuzzing::strip_cookie(&mut stripped, NAME);
    let after: Vec<(Vec<u8>, Vec<u8>)> = pairs(&stripped)
        .into_iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert!(
        after.iter().all(|(k, _)| k != NAME.as_bytes()),
        "cookie {NAME} survived stripping: {stripped:?}"
    );
    assert_eq!(after, kept, "other cookies lost: {h:?} → {stripped:?}");
});

/// Every `(name, value)` pair of every `Cookie` header, read byte by byte; a part without `=`
/// is a value without a name (as browsers read it), empty parts are skipped.
fn pairs(h: &HeaderMap) -> Vec<(&[u8], &[u8])> {
    h.get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|b| *b == b'=') {
            Some(i) => (p[..i].trim_ascii(), p[i + 1..].trim_ascii()),
            None => (&b""[..], p),
        })
        .collect()
}

fn unquote(v: &[u8]) -> &[u8] {
    let mut v = v;
    while let [b'"', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b'"'] = v {
        v = rest;
    }
    v
}
