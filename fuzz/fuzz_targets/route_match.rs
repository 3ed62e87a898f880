//! The route table (`src/routing/table.rs`) against a reference matcher, on tables and paths
//! built from tricky pieces (case, `;` parameters, escapes, dot segments, trailing slashes).
//!
//! For every request path `p` that canonicalises to `c`:
//! - the table decides as the reference does: the first route whose pattern takes `c`
//!   (segments compared by name, the part before a `;`, without regard to ASCII case when
//!   folding), then only routes with that same pattern for the method, else 405, else 404;
//! - a route that takes `c` has `c` inside its pattern as an upstream reads it (percent-decoded
//!   once): in particular a public route never takes a path whose decoded form is outside it;
//! - the path forwarded (`strip_prefix` removed) is canonical itself and inside what was
//!   matched: no dot segment, `//` or encoded separator appears by the stripping.

#![no_main]

use authgate::fuzzing::{canonicalize, Decision, PatternKind, RouteSpec, Routes};
use http::Method;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// Pieces that paths and patterns are made of.
const PIECES: &[&str] = &[
    "api",
    "API",
    "Api",
    "admin",
    "ADMIN",
    "public",
    "a",
    "b",
    "x",
    "%61",
    "%41",
    "%2e",
    "%2E",
    "%2e%2e",
    ".",
    "..",
    "*",
    "%2A",
    "%2a",
    "~u",
    "%7Eu",
    "%7e",
    "a;b",
    ";p",
    "admin;x=1",
    "%3B",
    "%2F",
    "%2f",
    "%5C",
    "%25",
    "%C3%A9",
    "%c3%a9",
    "\u{e9}",
    "a.",
    "a ",
    "%20",
    "a%20b",
    "+",
    "%2B",
    "",
    "admin.",
    "..;",
    ".%2e",
    "%00",
    "\\",
    "?",
    "#",
    "{",
    "%7B",
];

#[derive(Arbitrary, Debug)]
enum Piece {
    Known(u8),
    Raw(String),
}

impl Piece {
    fn text(&self) -> &str {
        match self {
            Piece::Known(i) => PIECES[usize::from(*i) % PIECES.len()],
            Piece::Raw(s) => s,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct RouteIn {
    kind: u8,
    segments: Vec<Piece>,
    trailing_slash: bool,
    public: bool,
    methods: Option<u16>,
    strip: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    routes: Vec<RouteIn>,
    fold: bool,
    path: Vec<Piece>,
    path_trailing_slash: bool,
    method: u8,
}

const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
    Method::PATCH,
    Method::CONNECT,
    Method::TRACE,
];

fn join(pieces: &[Piece], trailing: bool) -> String {
    let mut s = String::new();
    for p in pieces {
        s.push('/');
        s.push_str(p.text());
    }
    if trailing || s.is_empty() {
        s.push('/');
    }
    s
}

fuzz_target!(|input: Input| {
    if input.routes.len() > 12 {
        return;
    }
    let specs: Vec<RouteSpec> = input
        .routes
        .iter()
        .map(|r| {
            let pattern = join(&r.segments, r.trailing_slash);
            let kind = match r.kind % 3 {
                0 => PatternKind::Prefix,
                1 => PatternKind::Exact,
                _ => PatternKind::Glob,
            };
            let methods = r.methods.map(|mask| {
                METHODS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, m)| m.clone())
                    .collect()
            });
            // A strip_prefix of the pattern's first segments (a prefix route's own, say).
            let strip_prefix = r.strip.map(|n| {
                let n = usize::from(n) % (r.segments.len() + 1);
                join(&r.segments[..n], false)
            });
            RouteSpec {
                kind,
                pattern,
                public: r.public,
                methods,
                strip_prefix,
            }
        })
        .collect();
    let Ok(routes) = Routes::new(&specs, input.fold) else {
        return;
    };
    let path = join(&input.path, input.path_trailing_slash);
    let Ok(c) = canonicalize(&path, false) else {
        return;
    };
    let method = &METHODS[usize::from(input.method) % METHODS.len()];
    let got = routes.find(&c, method);

    let names = names(&c);
    let patterns: Vec<_> = (0..specs.len()).map(|i| routes.pattern(i)).collect();
    let takes = |i: usize| reference_match(&patterns[i], &names, input.fold);
    let want = match (0..specs.len()).find(|&i| takes(i)) {
        None => Decision::NotFound,
        Some(first) => (first..specs.len())
            .filter(|&j| patterns[j] == patterns[first])
            .find(|&j| allows(&specs[j].methods, method))
            .map_or(Decision::MethodNotAllowed(first), |j| Decision::Route {
                index: j,
                public: specs[j].public,
            }),
    };
    assert_eq!(
        got, want,
        "path {path:?} → {c:?} {method}; routes {specs:#?}"
    );

    if let Decision::Route { index, public } = got {
        // Inside the pattern as the upstream reads both, decoded.
        let decoded: Vec<Vec<u8>> = names.iter().map(|n| decode(n.as_bytes())).collect();
        let pattern = &patterns[index];
        let inside = match pattern.kind {
            PatternKind::Prefix => decoded.len() >= pattern.segments.len(),
            _ => decoded.len() == pattern.segments.len(),
        } && pattern
            .segments
            .iter()
            .zip(&decoded)
            .all(|(want, seg)| match want {
                None => !seg.is_empty(),
                Some(w) => same(&decode(w.as_bytes()), seg, input.fold),
            });
        assert!(
            inside,
            "{} route {index} ({:?}) takes {c:?}, which is outside it",
            if public { "public" } else { "protected" },
            specs[index].pattern
        );
        // The forwarded path: still canonical, and the tail of the matched one.
        let forwarded = routes.forward_path(index, &c);
        assert!(
            forwarded == "/" || c.ends_with(forwarded),
            "{forwarded:?} is not the tail of {c:?}"
        );
        match canonicalize(forwarded, false) {
            Ok(again) => assert_eq!(again, forwarded, "forwarded path is not canonical"),
            Err(e) => panic!("forwarded path {forwarded:?} of {c:?} is refused: {e}"),
        }
    }
});

/// The names (parts before a `;`) of a canonical path's segments, a trailing slash ignored.
fn names(c: &str) -> Vec<&str> {
    let inner = c.strip_prefix('/').unwrap_or(c);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        return Vec::new();
    }
    inner
        .split('/')
        .map(|s| s.split(';').next().unwrap_or(""))
        .collect()
}

fn same(a: &[u8], b: &[u8], fold: bool) -> bool {
    if fold {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn reference_match(p: &authgate::fuzzing::Pattern, names: &[&str], fold: bool) -> bool {
    let len_ok = match p.kind {
        PatternKind::Prefix => names.len() >= p.segments.len(),
        _ => names.len() == p.segments.len(),
    };
    len_ok
        && p.segments.iter().zip(names).all(|(want, name)| match want {
            None => !name.is_empty(),
            Some(w) => same(w.as_bytes(), name.as_bytes(), fold),
        })
}

fn allows(methods: &Option<Vec<Method>>, m: &Method) -> bool {
    match methods {
        None => *m != Method::CONNECT && *m != Method::TRACE,
        Some(list) => list.contains(m) || (*m == Method::HEAD && list.contains(&Method::GET)),
    }
}

fn decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() && s[i + 1..i + 3].iter().all(u8::is_ascii_hexdigit) {
            out.push(hex(s[i + 1]) << 4 | hex(s[i + 2]));
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

fn hex(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}
