//! The path canonicaliser (`src/routing/path.rs`) on any path.
//!
//! Properties of every canonical path `c` of an input `p`:
//! - canonicalising `c` again gives `c` itself, borrowed (idempotent, no allocation);
//! - `c` is an absolute, ASCII, valid URI path: no `//`, no `.` or `..` segment, no `\`, no
//!   control byte, no `?` or `#`; every `%` starts an escape with two upper-case hex digits,
//!   none of an unreserved character or a sub-delimiter but `;` (nor `:`, `@`), of `/` or
//!   `\`, of a control byte, nor (unless
//!   `allow_encoded_percent`) of `%`;
//! - an upstream that percent-decodes `c` once reads the same segments: none holds a `/` or a
//!   `\`, none is `.` or `..`, no name ends in `.` or a space; and without
//!   `allow_encoded_percent` no `%` is left for a second decoding to act on;
//! - `c` means what `p` means: `p` decoded and its dot segments resolved (RFC 3986) gives the
//!   same segments as `c` decoded.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let allow_encoded_percent = flags & 1 == 1;
    let path = String::from_utf8_lossy(rest);
    check(&path, allow_encoded_percent);
});

fn check(path: &str, allow: bool) {
    let Ok(c) = authgate::fuzzing::canonicalize(path, allow) else {
        return;
    };
    let c: &str = &c;
    match authgate::fuzzing::canonicalize(c, allow) {
        Ok(std::borrow::Cow::Borrowed(again)) => assert_eq!(again, c, "not idempotent"),
        Ok(std::borrow::Cow::Owned(again)) => {
            panic!("canonical {c:?} canonicalised again to {again:?} (allocated)")
        }
        Err(e) => panic!("canonical {c:?} of {path:?} is refused: {e}"),
    }
    assert!(c.starts_with('/'), "{c:?}");
    assert!(c.is_ascii(), "{c:?}");
    assert!(!c.contains("//"), "{c:?}");
    for b in c.bytes() {
        assert!(b > 0x20 && b != 0x7f, "control byte in {c:?}");
        assert!(!b"\\?#\"<>[]^`{|}".contains(&b), "{:?} in {c:?}", b as char);
    }
    let bytes = c.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).expect("an escape with two digits");
            assert!(
                hex.iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                "escape {:?} in {c:?}",
                String::from_utf8_lossy(hex)
            );
            let v = self::hex(hex[0]) << 4 | self::hex(hex[1]);
            assert!(
                !decoded(v),
                "{:?} left encoded in {c:?}",
                v as char
            );
            assert!(v != b'/' && v != b'\\', "encoded separator in {c:?}");
            assert!(v >= 0x20 && v != 0x7f, "encoded control byte in {c:?}");
            assert!(allow || v != b'%', "%25 in {c:?}");
            i += 3;
        } else {
            i += 1;
        }
    }
    let segments = inner_segments(c);
    for seg in &segments {
        assert!(!seg.is_empty(), "empty segment in {c:?}");
        let decoded = decode(seg.as_bytes());
        assert!(
            !decoded.contains(&b'/') && !decoded.contains(&b'\\'),
            "{seg:?} decodes to a separator"
        );
        assert!(
            decoded != b"." && decoded != b"..",
            "{seg:?} decodes to a dot segment in {c:?}"
        );
        let name = seg.split(';').next().unwrap_or("");
        let name = decode(name.as_bytes());
        if !name.is_empty() && name != b"." && name != b".." {
            assert!(
                !name.ends_with(b".") && !name.ends_with(b" "),
                "{seg:?} in {c:?} ends in a dot or a space"
            );
        }
        assert!(
            !matches!(name.as_slice(), b"." | b".." | b""),
            "dot or empty segment with parameters {seg:?} in {c:?}"
        );
        if !allow {
            assert!(!decoded.contains(&b'%'), "{seg:?} decodes to a %");
        }
    }
    // Means what the input means: decode, then resolve the dot segments.
    let mut want: Vec<Vec<u8>> = Vec::new();
    for seg in path.split('/').skip(1) {
        match decode(seg.as_bytes()).as_slice() {
            b"" | b"." => {}
            b".." => {
                assert!(
                    want.pop().is_some(),
                    "{path:?} climbs above the root but got {c:?}"
                );
            }
            other => want.push(other.to_vec()),
        }
    }
    let got: Vec<Vec<u8>> = segments.iter().map(|s| decode(s.as_bytes())).collect();
    assert_eq!(got, want, "{path:?} → {c:?} does not mean the same");
}

/// `/a/b/` → `a`, `b`.
fn inner_segments(c: &str) -> Vec<&str> {
    let inner = c.strip_prefix('/').unwrap_or(c);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        Vec::new()
    } else {
        inner.split('/').collect()
    }
}

/// RFC 3986 `pchar` but `;`: what a canonical path never holds encoded.
fn decoded(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b)
}

/// Percent-decodes every valid escape once, as an upstream would.
fn decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() && s[i + 1..i + 3].iter().all(u8::is_ascii_hexdigit) {
            out.push(hex(s[i + 1]) << 4 | hex(s[i + 2]));
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
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
