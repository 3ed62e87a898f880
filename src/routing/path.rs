//! Path canonicalisation: the one path that route matching and forwarding both use.
//!
//! Works on bytes, once: split on `/`, decode percent-encoded unreserved characters and
//! sub-delimiters, resolve `.` and `..`, merge `//`, keep every other escape as it came. Anything ambiguous is refused, so
//! the upstream sees exactly the path that was matched and cannot read a different one out of it.
//!
//! The canonical form, precisely:
//! - starts with `/`; no empty segment except a trailing slash (`/a//b` → `/a/b`, `/a/b/` stays);
//! - no `.` or `..` segment: they are resolved as RFC 3986 `remove_dot_segments` does, a final
//!   one leaving a trailing slash (`/a/.` → `/a/`, `/a/b/..` → `/a/`); climbing above the root
//!   (`/..`, `/a/../..`) is refused rather than clamped;
//! - percent-encoded unreserved characters (`ALPHA DIGIT - . _ ~`) are decoded (`/%7Euser` →
//!   `/~user`, `/%2e%2e` is `..`);
//! - so are the other characters a path segment may hold raw, the sub-delimiters and `:` `@`
//!   (`! $ & ' ( ) * + , = : @`) but `;`: `/a%2Bb` → `/a+b`. Inside a path they delimit
//!   nothing, and every server reads the escape and the character alike, so a route written
//!   `/a+b` must take both; kept encoded, `/a%2Bb` missed that route and fell through to the
//!   next (a public catch-all, say) while the upstream served `/a+b`. `%3B` stays encoded: a
//!   raw `;` starts a segment's parameters;
//! - every other escape is kept, with its hex digits in upper case (`%c3%a9` → `%C3%A9`; RFC 3986
//!   §6.2.2.1 makes them equivalent, and one spelling lets a route pattern match either);
//! - raw bytes that RFC 3986 does not allow in a path but hyper lets through (`" < > [ ] ^ `` ` ``
//!   `{ | }`, `?` and `#` if the caller passed them, and non-ASCII bytes) are percent-encoded, so
//!   `{` and `%7B` are one path and the result is always a valid URI path.
//!
//! Refused ([`PathError`], answered 400 bad_request): a path not starting with `/`; an encoded
//! `/` or `\` (`%2F`, `%5C`); an encoded `%` (`%25`) unless [`PathRules::allow_encoded_percent`]
//! (an upstream that decodes twice would read `%252e%252e` as `..`); percent-encoded bytes that
//! do not decode to valid UTF-8, such as the overlong `%c0%ae` that old decoders read as `.`;
//! a raw `\`; a raw byte below `0x21` or `0x7F`, or an encoded one
//! below `%20` or `%7F`; a `%` not followed by two hex digits; a dot or empty segment carrying
//! parameters (`..;x`, `.;x`, `;x`, also `%2e%2e;x` and `..%3Bx`), which servlet containers read
//! as `..`, `.` or an empty segment; a segment other than `.` and `..` whose name (the part
//! before a `;`) ends in `.` or a space (`/admin./x`, `/admin%20/x`: Windows servers and IIS
//! strip them and serve `/admin/x`); and `..` above the root.
//!
//! Canonicalising a canonical path changes nothing, and returns it borrowed: an ordinary path
//! costs one scan and no allocation.

use std::borrow::Cow;

/// Why a path was refused (always answered 400 bad_request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with /")]
    NotAbsolute,
    #[error("encoded / or \\ in the path")]
    EncodedSeparator,
    #[error("backslash in the path")]
    Backslash,
    #[error("NUL or control byte in the path")]
    ControlByte,
    #[error("invalid percent-encoding")]
    BadEscape,
    #[error("the path climbs above the root")]
    AboveRoot,
    #[error("dot or empty segment with parameters")]
    DotSegmentParams,
    #[error("encoded % in the path (%25)")]
    EncodedPercent,
    #[error("percent-encoded bytes that are not valid UTF-8")]
    InvalidUtf8,
    #[error("a segment ends in a dot or a space")]
    TrailingDotOrSpace,
}

/// The configurable part of canonicalisation (`[server]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathRules {
    /// `server.allow_encoded_percent`: keep `%25` instead of refusing the path.
    pub allow_encoded_percent: bool,
}

/// Canonicalises the path part of a request target (no query).
///
/// Returns the input borrowed when it already is canonical. See the module docs for the form.
pub(crate) fn canonicalize(path: &str, rules: PathRules) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // `None` while the output equals `path[..start]`, `start` being the `/` that opens the
    // segment at hand: the common case never allocates.
    let mut out: Option<String> = None;
    let mut start = 0;
    loop {
        // Where this segment's `/` goes in the output.
        let mark = out.as_ref().map_or(start, String::len);
        if let Some(o) = out.as_mut() {
            o.push('/');
        }
        let (end, kind) = segment(path, start, rules, &mut out)?;
        let last = end == path.len();
        if kind != Segment::Name && !(last && kind == Segment::Empty && out.is_none()) {
            resolve(path, start, mark, kind, last, &mut out)?;
        }
        if last {
            break;
        }
        start = end;
    }
    Ok(match out {
        None => Cow::Borrowed(path),
        Some(o) => Cow::Owned(o),
    })
}

/// Reads the segment after the `/` at `start`, writing it to `out` once the output differs
/// from the input (allocating it then); its end (the next `/` or the end of the path) and
/// its kind.
#[inline]
fn segment(
    path: &str,
    start: usize,
    rules: PathRules,
    out: &mut Option<String>,
) -> Result<(usize, Segment), PathError> {
    let bytes = path.as_bytes();
    let mut kind = SegmentScan::default();
    let mut i = start + 1;
    // Whether an escape of a byte beyond ASCII came in this segment: only then can the
    // decoded segment fail to be UTF-8 (raw bytes come from a `str`).
    let mut high_escape = false;
    while i < bytes.len() && bytes[i] != b'/' {
        let (unit, next) = read_unit(bytes, i, rules)?;
        high_escape |= matches!(unit, Unit::Escape { byte: 0x80.., .. });
        kind.feed(unit)?;
        match out.as_mut() {
            Some(o) => unit.write(o),
            None if unit.is_unchanged() => {}
            None => {
                let mut o = String::with_capacity(path.len() + 8);
                // Every byte before `i` was unchanged, hence ASCII (a non-ASCII byte is
                // always re-encoded), so `i` is a char boundary and the slice cannot panic.
                o.push_str(&path[..i]);
                unit.write(&mut o);
                *out = Some(o);
            }
        }
        i = next;
    }
    if high_escape && !decodes_to_utf8(&bytes[start + 1..i]) {
        return Err(PathError::InvalidUtf8);
    }
    if kind.ends_in_dot_or_space() {
        return Err(PathError::TrailingDotOrSpace);
    }
    Ok((i, kind.finish()))
}

/// Takes back the text of a segment that is merged away (empty, `.`) or resolved (`..`,
/// with the segment before it); `mark` is where its `/` went in the output.
fn resolve(
    path: &str,
    start: usize,
    mark: usize,
    kind: Segment,
    last: bool,
    out: &mut Option<String>,
) -> Result<(), PathError> {
    let o = match out.as_mut() {
        Some(o) => {
            o.truncate(mark);
            o
        }
        // `start` is the index of a `/`, so a char boundary: the slice cannot panic.
        None => out.insert(path[..start].to_owned()),
    };
    if kind == Segment::DotDot {
        // The output is `/s1/.../sk` here: drop `/sk`, or fail if there is none.
        let k = o.rfind('/').ok_or(PathError::AboveRoot)?;
        o.truncate(k);
    }
    if last {
        // A final empty, `.` or `..` segment leaves a trailing slash (RFC 3986).
        o.push('/');
    }
    Ok(())
}

/// One input unit: a byte, or a `%XX` escape, and how it is written out.
#[derive(Debug, Clone, Copy)]
enum Unit {
    /// A byte kept as it came.
    Same(u8),
    /// An escape of an unreserved character or a sub-delimiter, written decoded.
    Decoded(u8),
    /// An escape kept; `as_came` when its hex digits were already upper case.
    Escape { byte: u8, as_came: bool },
    /// A raw byte that must be written percent-encoded.
    Encode(u8),
}

impl Unit {
    fn is_unchanged(self) -> bool {
        matches!(self, Unit::Same(_) | Unit::Escape { as_came: true, .. })
    }

    /// The byte this unit stands for, and whether it stays encoded.
    fn value(self) -> (u8, bool) {
        match self {
            Unit::Same(b) | Unit::Decoded(b) => (b, false),
            Unit::Escape { byte, .. } | Unit::Encode(byte) => (byte, true),
        }
    }

    fn write(self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        match self.value() {
            // `Same` and `Decoded` bytes are ASCII (see `read_unit`), so one char each.
            (b, false) => out.push(char::from(b)),
            (b, true) => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
        }
    }
}

/// Whether one segment's bytes, percent-decoded, are valid UTF-8 (rare: only segments with
/// escapes beyond ASCII are looked at, and their escapes are already known to be well formed).
fn decodes_to_utf8(segment: &[u8]) -> bool {
    let decoded: Cow<'_, [u8]> = percent_encoding::percent_decode(segment).into();
    std::str::from_utf8(&decoded).is_ok()
}

/// Reads the unit at `bytes[i]`, returning it and the index after it.
fn read_unit(bytes: &[u8], i: usize, rules: PathRules) -> Result<(Unit, usize), PathError> {
    let b = bytes[i];
    let unit = match b {
        b'%' => {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadEscape);
            };
            let byte = (hi << 4) | lo;
            return Ok((
                match byte {
                    0x00..=0x1f | 0x7f => return Err(PathError::ControlByte),
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b'%' if !rules.allow_encoded_percent => return Err(PathError::EncodedPercent),
                    _ if is_decoded(byte) => Unit::Decoded(byte),
                    _ => Unit::Escape {
                        byte,
                        as_came: !bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase),
                    },
                },
                i + 3,
            ));
        }
        b'\\' => return Err(PathError::Backslash),
        0x00..=0x20 | 0x7f => return Err(PathError::ControlByte),
        b'"' | b'<' | b'>' | b'[' | b']' | b'^' | b'`' | b'{' | b'|' | b'}' | b'?' | b'#' => {
            Unit::Encode(b)
        }
        0x80..=0xff => Unit::Encode(b),
        _ => Unit::Same(b),
    };
    Ok((unit, i + 1))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The characters whose escapes are decoded: RFC 3986 `pchar` but `;` (`unreserved`,
/// `sub-delims` without `;`, `:` and `@`).
fn is_decoded(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

/// What a whole segment turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Empty,
    Dot,
    DotDot,
    Name,
}

/// Classifies a segment as its units go by: counts leading dots until something else shows up.
#[derive(Debug, Default)]
struct SegmentScan {
    /// Leading (decoded) dots so far; `None` once the segment is known to be a name.
    dots: Option<usize>,
    started: bool,
    /// The last byte of the segment's name (before a raw `;`), decoded.
    last: Option<u8>,
    /// A raw `;` came: the rest are parameters.
    params: bool,
}

impl SegmentScan {
    fn feed(&mut self, unit: Unit) -> Result<(), PathError> {
        if !self.params {
            match unit {
                Unit::Same(b';') => self.params = true,
                _ => self.last = Some(unit.value().0),
            }
        }
        let dots = if self.started {
            self.dots
        } else {
            self.started = true;
            Some(0)
        };
        self.dots = match (dots, unit.value()) {
            (Some(n), (b'.', false)) => Some(n + 1),
            // `;` raw or encoded right after nothing, `.` or `..`: parameters on a segment that
            // servlet containers strip and then treat as empty or a dot segment.
            (Some(0..=2), (b';', _)) => return Err(PathError::DotSegmentParams),
            _ => None,
        };
        Ok(())
    }

    /// A name (not `.` or `..`) ending in `.` or a space, which Windows servers strip.
    fn ends_in_dot_or_space(&self) -> bool {
        let dot_segment = self.started && matches!(self.dots, Some(1 | 2)) && !self.params;
        matches!(self.last, Some(b'.' | b' ')) && !dot_segment
    }

    fn finish(self) -> Segment {
        match (self.started, self.dots) {
            (false, _) => Segment::Empty,
            (true, Some(1)) => Segment::Dot,
            (true, Some(2)) => Segment::DotDot,
            _ => Segment::Name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STRICT: PathRules = PathRules {
        allow_encoded_percent: false,
    };
    const PERCENT: PathRules = PathRules {
        allow_encoded_percent: true,
    };

    fn canon(path: &str) -> Result<String, PathError> {
        canonicalize(path, STRICT).map(Cow::into_owned)
    }

    #[test]
    fn bypass_attempts_are_resolved_or_refused() {
        use PathError::*;
        let table: &[(&str, Result<&str, PathError>)] = &[
            ("/public/../private", Ok("/private")),
            ("/public/%2e%2e/private", Ok("/private")),
            ("/public/%2E%2e/private", Ok("/private")),
            ("/public/.%2e/private", Ok("/private")),
            ("/public/%2e./private", Ok("/private")),
            ("/public/%2e/private", Ok("/public/private")),
            ("//public/../private", Ok("/private")),
            ("/public/..;/private", Err(DotSegmentParams)),
            ("/public/..;x/private", Err(DotSegmentParams)),
            ("/public/.;x/private", Err(DotSegmentParams)),
            ("/public/%2e%2e;/private", Err(DotSegmentParams)),
            ("/public/..%3b/private", Err(DotSegmentParams)),
            ("/public/;x/private", Err(DotSegmentParams)),
            ("/public/..;", Err(DotSegmentParams)),
            ("/a/.%3b", Err(DotSegmentParams)),
            ("/%3B", Err(DotSegmentParams)),
            ("/;", Err(DotSegmentParams)),
            ("/public%2fprivate", Err(EncodedSeparator)),
            ("/public%2Fprivate", Err(EncodedSeparator)),
            ("/public/%5c..%5cprivate", Err(EncodedSeparator)),
            ("/public/%5C..%5Cprivate", Err(EncodedSeparator)),
            ("/public\\..\\private", Err(Backslash)),
            ("/..", Err(AboveRoot)),
            ("/../a", Err(AboveRoot)),
            ("/a/../..", Err(AboveRoot)),
            ("/a/../../b", Err(AboveRoot)),
            ("/%2e%2e", Err(AboveRoot)),
            ("/a/%zz", Err(BadEscape)),
            ("/a/%", Err(BadEscape)),
            ("/a/%4", Err(BadEscape)),
            ("/a/%4/b", Err(BadEscape)),
            ("/a/%/4", Err(BadEscape)),
            ("/a/%é", Err(BadEscape)),
            ("/a%00b", Err(ControlByte)),
            ("/a%0ab", Err(ControlByte)),
            ("/a%1Fb", Err(ControlByte)),
            ("/a%7fb", Err(ControlByte)),
            ("/a\0b", Err(ControlByte)),
            ("/a\nb", Err(ControlByte)),
            ("/a b", Err(ControlByte)),
            ("/a\x7fb", Err(ControlByte)),
            ("", Err(NotAbsolute)),
            ("*", Err(NotAbsolute)),
            ("a/b", Err(NotAbsolute)),
            ("%2Fa", Err(NotAbsolute)),
            // Double encoding: an upstream that decodes twice reads these as `..`.
            ("/public/%252e%252e/private", Err(EncodedPercent)),
            ("/public/%25%32%65%25%32%65/private", Err(EncodedPercent)),
            ("/public/%252E./private", Err(EncodedPercent)),
            ("/x/%25", Err(EncodedPercent)),
            ("/public%252fprivate", Err(EncodedPercent)),
            // Overlong and other invalid UTF-8: old decoders read %c0%ae as `.`.
            ("/public/%c0%ae%c0%ae/private", Err(InvalidUtf8)),
            ("/public/%C0%AE./private", Err(InvalidUtf8)),
            ("/public/%e0%80%ae/private", Err(InvalidUtf8)),
            ("/public/%c0%af/private", Err(InvalidUtf8)),
            ("/a/%c3", Err(InvalidUtf8)),
            ("/a/%c3/%a9", Err(InvalidUtf8)),
            ("/a/%a9", Err(InvalidUtf8)),
            ("/a/%ed%a0%80", Err(InvalidUtf8)),
            ("/a/%f4%90%80%80", Err(InvalidUtf8)),
            ("/a/%ff", Err(InvalidUtf8)),
            ("/a/é%a9", Err(InvalidUtf8)),
            // Windows servers strip a trailing dot or space: /admin./x is /admin/x to IIS.
            ("/admin./x", Err(TrailingDotOrSpace)),
            ("/admin../x", Err(TrailingDotOrSpace)),
            ("/admin%2e/x", Err(TrailingDotOrSpace)),
            ("/admin%20/x", Err(TrailingDotOrSpace)),
            ("/admin.%20/x", Err(TrailingDotOrSpace)),
            ("/admin%20.", Err(TrailingDotOrSpace)),
            ("/admin.;x/y", Err(TrailingDotOrSpace)),
            ("/admin%20;jsessionid=1", Err(TrailingDotOrSpace)),
            ("/...", Err(TrailingDotOrSpace)),
            ("/.../x", Err(TrailingDotOrSpace)),
            ("/a..", Err(TrailingDotOrSpace)),
            ("/x/file.", Err(TrailingDotOrSpace)),
        ];
        for (input, want) in table {
            assert_eq!(canon(input).as_deref(), want.as_deref(), "input {input:?}");
        }
    }

    #[test]
    fn benign_paths() {
        let table: &[(&str, &str)] = &[
            ("/", "/"),
            ("/api/users/42", "/api/users/42"),
            ("/a//b", "/a/b"),
            ("/a///b//", "/a/b/"),
            ("//", "/"),
            ("/%7Euser", "/~user"),
            ("/%7euser", "/~user"),
            ("/%41%62%2D%5f%30", "/Ab-_0"),
            ("/a%20b", "/a%20b"),
            ("/a/./b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("/a/.", "/a/"),
            ("/a/./", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/..", "/"),
            ("/a/../", "/"),
            ("/.", "/"),
            ("/./", "/"),
            ("/a/b/../c/./d", "/a/c/d"),
            ("/..a/.b/a..b", "/..a/.b/a..b"),
            ("/a.b/c.d", "/a.b/c.d"),
            ("/a%20b/c", "/a%20b/c"),
            ("/a;x./b", "/a;x./b"),
            ("/a;x%20", "/a;x%20"),
            ("/file.json", "/file.json"),
            ("/a;x/b", "/a;x/b"),
            ("/a/b;jsessionid=1", "/a/b;jsessionid=1"),
            ("/public;x/../private", "/private"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/café", "/caf%C3%A9"),
            ("/a%3ab%2A", "/a:b*"),
            ("/a%2Bb", "/a+b"),
            ("/%21%24%26%27%28%29%2a%2B%2C%3D%3A%40", "/!$&'()*+,=:@"),
            ("/a%3Bb", "/a%3Bb"),
            ("/a%3bx/b", "/a%3Bx/b"),
            ("/a%3F%23", "/a%3F%23"),
            ("/{\"a\":1}", "/%7B%22a%22:1%7D"),
            ("/a[0]|b^c`d<e>", "/a%5B0%5D%7Cb%5Ec%60d%3Ce%3E"),
            ("/a?b#c", "/a%3Fb%23c"),
            ("/!$&'()*+,=:@-._~", "/!$&'()*+,=:@-._~"),
        ];
        for (input, want) in table {
            assert_eq!(canon(input).as_deref(), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn encoded_percent_is_kept_when_allowed() {
        let table: &[(&str, &str)] = &[
            ("/x/%25", "/x/%25"),
            ("/x/%252e%252e", "/x/%252e%252e"),
            ("/x/%2541", "/x/%2541"),
            ("/100%25/off", "/100%25/off"),
        ];
        for (input, want) in table {
            assert_eq!(
                canonicalize(input, PERCENT).as_deref(),
                Ok(*want),
                "input {input:?}"
            );
        }
        // The other rules stay: UTF-8 is still checked with %25 allowed.
        assert_eq!(
            canonicalize("/%25/%c0%ae", PERCENT),
            Err(PathError::InvalidUtf8)
        );
    }

    #[test]
    fn valid_utf8_escapes_are_kept() {
        for path in ["/%E2%82%AC", "/%F0%9F%98%80/x", "/caf%C3%A9/%C3%A9t%C3%A9"] {
            assert_eq!(canon(path).as_deref(), Ok(path), "{path:?}");
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for path in [
            "/",
            "/api/users/42",
            "/a/b/",
            "/a%20b",
            "/%C3%A9",
            "/a;x/b",
            "/.a",
        ] {
            assert!(
                matches!(canonicalize(path, STRICT), Ok(Cow::Borrowed(p)) if p == path),
                "{path:?} should come back borrowed"
            );
        }
        for path in ["/a//b", "/%7e", "/%c3%a9", "/a/.", "/é"] {
            assert!(
                matches!(canonicalize(path, STRICT), Ok(Cow::Owned(_))),
                "{path:?} should be rewritten"
            );
        }
    }

    /// Pieces that exercise every rule, glued into paths by the property tests.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "/", "/", "/", ".", "..", "%2e", "%2E", "a", "B", "~", "-", ";", "x;y", "%41", "%7e",
            "%7E", "%20", "%c3%a9", "%C3", "%A9", "%c0%ae", "%25", "%3b", "%2f", "%5C", "\\",
            "%zz", "%", "%00", "é", "{", "?", "*", ":", "@",
        ])
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 0..16).prop_map(|pieces| format!("/{}", pieces.concat()))
    }

    fn check_canonical(path: &str) -> Result<(), TestCaseError> {
        for rules in [STRICT, PERCENT] {
            check_canonical_with(path, rules)?;
        }
        Ok(())
    }

    fn check_canonical_with(path: &str, rules: PathRules) -> Result<(), TestCaseError> {
        if let Ok(c) = canonicalize(path, rules) {
            prop_assert!(
                matches!(canonicalize(&c, rules), Ok(Cow::Borrowed(again)) if again == c),
                "not idempotent: {path:?} -> {c:?} -> {:?}",
                canonicalize(&c, rules)
            );
            prop_assert!(
                rules.allow_encoded_percent || !c.contains("%25"),
                "{path:?} -> {c:?} keeps %25"
            );
            prop_assert!(c.starts_with('/'));
            for bad in ["/../", "/./", "//"] {
                prop_assert!(!c.contains(bad), "{path:?} -> {c:?} contains {bad:?}");
            }
            prop_assert!(
                !c.ends_with("/..") && !c.ends_with("/."),
                "{path:?} -> {c:?}"
            );
            prop_assert!(
                c.bytes().all(|b| b.is_ascii_graphic() && b != b'\\'),
                "{path:?} -> {c:?} has a byte outside printable ASCII"
            );
            for escape in c.split('%').skip(1) {
                let hex = escape.get(..2).unwrap_or_default();
                prop_assert!(
                    hex.len() == 2
                        && hex
                            .bytes()
                            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
                    "{path:?} -> {c:?}: escape %{hex} not upper-case hex"
                );
                let byte = u8::from_str_radix(hex, 16).unwrap_or(b'a');
                prop_assert!(!is_decoded(byte), "{path:?} -> {c:?}: %{hex} left encoded");
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn canonical_output_is_a_fixed_point(path in path_strategy()) {
            check_canonical(&path)?;
        }

        #[test]
        fn arbitrary_input_never_panics(path in any::<String>().prop_map(|s| format!("/{s}"))) {
            check_canonical(&path)?;
        }
    }
}
