//! The binary layout of one session record, shared by both stores.
//!
//! Both stores keep *one blob per user*: the concatenation of that user's session records (the
//! memory store in a map entry, Redis in one string key). One blob per user rather than one key
//! per session is what keeps Redis at a few hundred bytes per session: a hash per session plus
//! a per-user index measured ~590 bytes with a 40-byte user agent and ~1,430 with a browser's
//! (a hash with any value over 64 bytes leaves the compact listpack encoding). Layout 1 (times
//! in u32 seconds) measured 390 bytes per session in Redis (`INFO memory`, 100,000 users with
//! one session and a 111-byte Chrome user agent each) and 293 bytes of RSS per session in the
//! memory store (1,000,000 such users); layout 2's figures are in BENCHMARKS.md (the ignored
//! tests `redis_memory_per_session` and `memory_store_rss_per_session`). Token hashes are 16
//! bytes for the same reason (`ids.rs`).
//!
//! Times are Unix **milliseconds** (issue 15: whole seconds turned a 500 ms grace into 0 and
//! let every window run up to a second long) in 48-bit fields: good until the year 10889, and
//! 8 bytes a record more than the u32 seconds of layout 1 where u64 fields would add 16.
//!
//! The Lua scripts in `lua/` patch the fixed header in place at the same offsets (1-based
//! there); the Rust side encodes new records and decodes them. Little-endian throughout.
//!
//! ```text
//! off len field
//!   0   2 total record length (u16)
//!   2   1 state: 0 active, 1 logout, 2 revoked, 3 replaced, 4 theft, 5 expired
//!   3   1 layout version (2)
//!   4   6 created_at        (Unix milliseconds, u48)
//!  10   6 last_seen_at
//!  16   6 rotated_at        (0 before the first rotation)
//!  22   6 expires_at        (active: idle/lifetime expiry; ended: when the tombstone goes)
//!  28   4 generation        (rotations so far, u32)
//!  32  16 session id (random part)
//!  48  16 current refresh-token hash
//!  64  16 parent refresh-token hash (zeros at generation 0)
//!  80   . platform, user_id, user_name, tenant, device: each u8 length + bytes
//!       . ip: u8 kind, then 4 (kind 4: IPv4) or 16 (kind 6: IPv6) raw bytes, or (kind 0) a
//!         u8 length + text, for anything that is not an address in its canonical form
//!       . user_agent: u8 length + bytes
//!       . roles: u8 count, then each u8 length + bytes
//! ```
//! An empty tenant, device or user agent means "none". The login IP is kept as raw bytes
//! because that wins back what the wider times cost: "203.0.113.7" takes 5 bytes rather than
//! 12, and the measured record stays in its allocator size class.
//!
//! **Layout 1** (written by versions before issue 15, still found in Redis after an upgrade)
//! is the same with a 72-byte header: four u32 times in Unix seconds at 4, 8, 12, 16, the
//! generation at 20, then the three 16-byte fields; its ip is plain text (u8 length + bytes). Redis records are versioned rather than
//! guessed at: [`upgrade`] (and `load` in `lua/common.lua`) rewrite a layout-1 record as
//! layout 2 on read, seconds × 1000, and the next write of that user's key stores it so. A
//! time cut to its second is at most the true time, so an upgraded record's windows can only
//! be shorter than configured, never longer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use super::ids::{format_sid, SidBytes, TokenHash};
use super::{EndReason, Millis, NewSession, Session, SessionCheck, SessionState, StoreError};

pub(crate) const HEADER: usize = 80;
pub(crate) const LEN: usize = 0;
pub(crate) const STATE: usize = 2;
pub(crate) const VERSION: usize = 3;
pub(crate) const CREATED: usize = 4;
pub(crate) const SEEN: usize = 10;
pub(crate) const ROTATED: usize = 16;
pub(crate) const EXPIRES: usize = 22;
pub(crate) const GENERATION: usize = 28;
pub(crate) const SID: usize = 32;
pub(crate) const CURRENT: usize = 48;
pub(crate) const PARENT: usize = 64;

/// The layout written now.
pub(crate) const LAYOUT: u8 = 2;
/// Layout 1: u32 Unix seconds, 72-byte header (read and upgraded, never written).
const LAYOUT_SECONDS: u8 = 1;
const HEADER_V1: usize = 72;

pub(crate) const STATE_ACTIVE: u8 = 0;
/// Smallest possible record: header, seven empty text fields, no roles.
const MIN_LEN: usize = HEADER + 9;
/// The ip field's kinds.
const IP_TEXT: u8 = 0;
const IP_V4: u8 = 4;
const IP_V6: u8 = 6;
/// Display-only fields are cut to this many bytes (at a character boundary).
const MAX_FIELD: usize = 255;

/// The largest time a 48-bit field holds; later times are stored as it (the year 10889).
pub(crate) const MAX_TIME: u64 = (1 << 48) - 1;

pub(crate) fn reason_code(r: EndReason) -> u8 {
    match r {
        EndReason::Logout => 1,
        EndReason::Revoked => 2,
        EndReason::Replaced => 3,
        EndReason::Theft => 4,
        EndReason::Expired => 5,
    }
}

pub(crate) fn reason_of(code: u8) -> Option<EndReason> {
    Some(match code {
        1 => EndReason::Logout,
        2 => EndReason::Revoked,
        3 => EndReason::Replaced,
        4 => EndReason::Theft,
        5 => EndReason::Expired,
        _ => return None,
    })
}

pub(crate) fn corrupt() -> StoreError {
    StoreError::Backend("corrupt session record".into())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The login IP as raw bytes when it reads back as the same text, else as text.
fn push_ip(out: &mut Vec<u8>, ip: &str) {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) if a.to_string() == ip => {
            out.push(IP_V4);
            out.extend_from_slice(&a.octets());
        }
        Ok(IpAddr::V6(a)) if a.to_string() == ip => {
            out.push(IP_V6);
            out.extend_from_slice(&a.octets());
        }
        _ => {
            out.push(IP_TEXT);
            push_text(out, truncate(ip, MAX_FIELD));
        }
    }
}

fn push_text(out: &mut Vec<u8>, s: &str) {
    // Callers have already checked or cut `s` to at most 255 bytes.
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// The field limits of a record: user id and platform 1 to 255 bytes, user name, tenant and
/// each of at most 255 roles at most 255 bytes.
fn check_fields(new: &NewSession) -> Result<(), StoreError> {
    let fits = |s: &str| s.len() <= MAX_FIELD;
    if new.user_id.is_empty() || !fits(&new.user_id) {
        return Err(StoreError::InvalidInput("user id must be 1 to 255 bytes"));
    }
    if new.platform.is_empty() || !fits(&new.platform) {
        return Err(StoreError::InvalidInput("platform must be 1 to 255 bytes"));
    }
    if !fits(&new.user_name) || !new.tenant.as_deref().is_none_or(fits) {
        return Err(StoreError::InvalidInput(
            "user name and tenant must be at most 255 bytes",
        ));
    }
    if new.roles.len() > MAX_FIELD || !new.roles.iter().all(|r| fits(r)) {
        return Err(StoreError::InvalidInput(
            "at most 255 roles of at most 255 bytes each",
        ));
    }
    Ok(())
}

/// The encoded size of a new record (its capacity: one allocation).
fn encoded_len(new: &NewSession) -> usize {
    HEADER
        + 8
        + new.platform.len()
        + new.user_id.len()
        + new.user_name.len()
        + new.tenant.as_deref().map_or(0, str::len)
        + new.device.as_deref().map_or(0, str::len).min(MAX_FIELD)
        + new.ip.len().min(MAX_FIELD)
        + new.user_agent.as_deref().map_or(0, str::len).min(MAX_FIELD)
        + new.roles.iter().map(|r| r.len() + 1).sum::<usize>()
}

/// Encodes a new, active session record.
pub(crate) fn encode(
    new: &NewSession,
    sid: &SidBytes,
    current: &TokenHash,
    now: Millis,
    expires_at: Millis,
) -> Result<Vec<u8>, StoreError> {
    check_fields(new)?;
    let mut out = Vec::with_capacity(encoded_len(new));
    out.extend_from_slice(&[0, 0, STATE_ACTIVE, LAYOUT]);
    for t in [now, now, Millis::ZERO, expires_at] {
        out.extend_from_slice(&t48(t));
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(sid);
    out.extend_from_slice(current);
    out.extend_from_slice(&[0; 16]);
    push_text(&mut out, &new.platform);
    push_text(&mut out, &new.user_id);
    push_text(&mut out, &new.user_name);
    push_text(&mut out, new.tenant.as_deref().unwrap_or(""));
    push_text(
        &mut out,
        truncate(new.device.as_deref().unwrap_or(""), MAX_FIELD),
    );
    push_ip(&mut out, &new.ip);
    push_text(
        &mut out,
        truncate(new.user_agent.as_deref().unwrap_or(""), MAX_FIELD),
    );
    out.push(new.roles.len() as u8);
    for r in &new.roles {
        push_text(&mut out, r);
    }
    let len = u16::try_from(out.len())
        .map_err(|_| StoreError::InvalidInput("session data too large (roles)"))?;
    out[LEN..LEN + 2].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

pub(crate) fn get_u32(e: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([e[off], e[off + 1], e[off + 2], e[off + 3]])
}

pub(crate) fn set_u32(e: &mut [u8], off: usize, v: u32) {
    e[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// A time as its 6 stored bytes (saturating at [`MAX_TIME`]).
fn t48(t: Millis) -> [u8; 6] {
    let b = t.0.min(MAX_TIME).to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

pub(crate) fn get_time(e: &[u8], off: usize) -> Millis {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(&e[off..off + 6]);
    Millis(u64::from_le_bytes(b))
}

pub(crate) fn set_time(e: &mut [u8], off: usize, t: Millis) {
    e[off..off + 6].copy_from_slice(&t48(t));
}

/// A validated view of one record (at least [`HEADER`] bytes long).
#[derive(Clone, Copy)]
pub(crate) struct Entry<'a>(pub(crate) &'a [u8]);

impl<'a> Entry<'a> {
    pub(crate) fn state(&self) -> u8 {
        self.0[STATE]
    }
    pub(crate) fn created(&self) -> Millis {
        get_time(self.0, CREATED)
    }
    pub(crate) fn rotated(&self) -> Millis {
        get_time(self.0, ROTATED)
    }
    pub(crate) fn seen(&self) -> Millis {
        get_time(self.0, SEEN)
    }
    pub(crate) fn expires(&self) -> Millis {
        get_time(self.0, EXPIRES)
    }
    pub(crate) fn generation(&self) -> u32 {
        get_u32(self.0, GENERATION)
    }
    pub(crate) fn sid(&self) -> &'a [u8] {
        &self.0[SID..SID + 16]
    }
    pub(crate) fn current(&self) -> &'a [u8] {
        &self.0[CURRENT..CURRENT + 16]
    }
    pub(crate) fn parent(&self) -> &'a [u8] {
        &self.0[PARENT..PARENT + 16]
    }
    /// Active and not yet past its expiry.
    pub(crate) fn is_live(&self, now: Millis) -> bool {
        self.state() == STATE_ACTIVE && self.expires() > now
    }

    fn text(&self) -> TextReader<'a> {
        TextReader {
            buf: self.0,
            pos: HEADER,
        }
    }

    pub(crate) fn platform(&self) -> &'a [u8] {
        self.text().next().unwrap_or_default()
    }

    pub(crate) fn user_id(&self) -> &'a [u8] {
        let mut t = self.text();
        t.next();
        t.next().unwrap_or_default()
    }

    /// What the hot path needs: active, ended (why), or gone.
    pub(crate) fn check(&self, now: Millis) -> SessionCheck {
        let expired = self.expires() <= now;
        match (self.state(), expired) {
            (STATE_ACTIVE, false) => SessionCheck::Active,
            (STATE_ACTIVE, true) => SessionCheck::Lapsed,
            // A tombstone past its own expiry is as good as gone.
            (_, true) => SessionCheck::Unknown,
            (code, false) => reason_of(code).map_or(SessionCheck::Unknown, SessionCheck::Ended),
        }
    }

    pub(crate) fn to_session(self) -> Result<Session, StoreError> {
        let mut t = self.text();
        fn field(t: &mut TextReader<'_>) -> Result<String, StoreError> {
            let b = t.next().ok_or_else(corrupt)?;
            String::from_utf8(b.to_vec()).map_err(|_| corrupt())
        }
        let platform = field(&mut t)?;
        let user_id = field(&mut t)?;
        let user_name = field(&mut t)?;
        let tenant = field(&mut t)?;
        let device = field(&mut t)?;
        let ip = t.ip().ok_or_else(corrupt)?;
        let user_agent = field(&mut t)?;
        let count = t.byte().ok_or_else(corrupt)?;
        let mut roles = Vec::with_capacity(count.into());
        for _ in 0..count {
            let b = t.next().ok_or_else(corrupt)?;
            roles.push(String::from_utf8(b.to_vec()).map_err(|_| corrupt())?);
        }
        let some = |s: String| (!s.is_empty()).then_some(s);
        let mut sid = [0u8; 16];
        sid.copy_from_slice(self.sid());
        Ok(Session {
            id: format_sid(&user_id, &sid),
            user_id,
            user_name,
            tenant: some(tenant),
            roles,
            platform,
            device: some(device),
            ip,
            user_agent: some(user_agent),
            created_at: self.created(),
            last_seen_at: self.seen(),
            rotated_at: self.rotated(),
            generation: self.generation(),
            expires_at: self.expires(),
            state: match self.state() {
                STATE_ACTIVE => SessionState::Active,
                code => SessionState::Ended(reason_of(code).ok_or_else(corrupt)?),
            },
        })
    }
}

struct TextReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> TextReader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn next(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.byte()?);
        self.take(n)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }

    /// The ip field (see the layout).
    fn ip(&mut self) -> Option<String> {
        Some(match self.byte()? {
            IP_V4 => {
                let b: [u8; 4] = self.take(4)?.try_into().ok()?;
                Ipv4Addr::from(b).to_string()
            }
            IP_V6 => {
                let b: [u8; 16] = self.take(16)?.try_into().ok()?;
                Ipv6Addr::from(b).to_string()
            }
            IP_TEXT => String::from_utf8(self.next()?.to_vec()).ok()?,
            _ => return None,
        })
    }
}

/// The byte ranges of the records in a user's blob, in order.
pub(crate) fn ranges(doc: &[u8]) -> Result<Vec<Range<usize>>, StoreError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < doc.len() {
        let r = record_at(doc, pos)?;
        pos = r.end;
        out.push(r);
    }
    Ok(out)
}

/// The record that starts at `pos`, checked for a sane length and our layout.
fn record_at(doc: &[u8], pos: usize) -> Result<Range<usize>, StoreError> {
    let len = doc
        .get(pos..pos + 2)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        .ok_or_else(corrupt)?;
    if len < MIN_LEN || pos + len > doc.len() || doc[pos + VERSION] != LAYOUT {
        return Err(corrupt());
    }
    Ok(pos..pos + len)
}

/// Finds one session of `user_id` in a blob (the memory store may hold several users' records
/// in one blob when their id hashes collide, so the user id is compared too).
pub(crate) fn find(
    doc: &[u8],
    user_id: &str,
    sid: &SidBytes,
) -> Result<Option<Range<usize>>, StoreError> {
    let mut pos = 0;
    while pos < doc.len() {
        let r = record_at(doc, pos)?;
        let e = Entry(&doc[r.clone()]);
        if e.sid() == sid && e.user_id() == user_id.as_bytes() {
            return Ok(Some(r));
        }
        pos = r.end;
    }
    Ok(None)
}

/// The live sessions of `user_id` in a blob as of `now`, oldest first.
pub(crate) fn live_sessions(
    doc: &[u8],
    user_id: &str,
    now: Millis,
) -> Result<Vec<Session>, StoreError> {
    let mut out = Vec::new();
    for r in ranges(doc)? {
        let e = Entry(&doc[r]);
        if e.user_id() == user_id.as_bytes() && e.is_live(now) {
            out.push(e.to_session()?);
        }
    }
    out.sort_by_key(|s| s.created_at);
    Ok(out)
}

/// One session of `user_id` in a blob, whatever its state.
pub(crate) fn session(
    doc: &[u8],
    user_id: &str,
    sid: &SidBytes,
) -> Result<Option<Session>, StoreError> {
    match find(doc, user_id, sid)? {
        Some(r) => Entry(&doc[r]).to_session().map(Some),
        None => Ok(None),
    }
}

/// A user's blob with every layout-1 record (seconds, written before issue 15) rewritten as
/// layout 2 (milliseconds); the blob itself when there is none, which is the usual case.
/// `lua/common.lua`'s `load` does the same inside the scripts.
pub(crate) fn upgrade(doc: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    let mut pos = 0;
    let mut old = false;
    while pos < doc.len() {
        let (len, version) = doc
            .get(pos..pos + 4)
            .map(|b| (usize::from(u16::from_le_bytes([b[0], b[1]])), b[3]))
            .ok_or_else(corrupt)?;
        if pos + len > doc.len() || len < 4 {
            return Err(corrupt());
        }
        old |= version == LAYOUT_SECONDS;
        pos += len;
    }
    if !old {
        return Ok(doc);
    }
    let mut out = Vec::with_capacity(doc.len() + 64);
    let mut pos = 0;
    while pos < doc.len() {
        let len = usize::from(u16::from_le_bytes([doc[pos], doc[pos + 1]]));
        let rec = &doc[pos..pos + len];
        pos += len;
        if rec[VERSION] != LAYOUT_SECONDS {
            out.extend_from_slice(rec);
            continue;
        }
        if len < HEADER_V1 + 8 {
            return Err(corrupt());
        }
        let new_len = u16::try_from(len + HEADER - HEADER_V1 + 1).map_err(|_| corrupt())?;
        out.extend_from_slice(&new_len.to_le_bytes());
        out.extend_from_slice(&[rec[STATE], LAYOUT]);
        for off in [4, 8, 12, 16] {
            let secs = u64::from(get_u32(rec, off));
            out.extend_from_slice(&t48(Millis::from_secs(secs)));
        }
        // Generation, the session id, both hashes and the text fields are unchanged, except
        // that the ip (the sixth text field) gets its kind byte: text.
        let mut ip_at = HEADER_V1;
        for _ in 0..5 {
            ip_at += 1 + usize::from(*rec.get(ip_at).ok_or_else(corrupt)?);
        }
        if ip_at >= len {
            return Err(corrupt());
        }
        out.extend_from_slice(&rec[20..ip_at]);
        out.push(IP_TEXT);
        out.extend_from_slice(&rec[ip_at..]);
    }
    Ok(out)
}

/// A layout-2 record written back as layout 1 (times cut to seconds, the ip as text), as a
/// version before issue 15 would have stored it: for the upgrade tests.
#[cfg(test)]
pub(crate) fn as_layout_1(rec: &[u8]) -> Vec<u8> {
    let mut body = rec[GENERATION..SID + 48].to_vec();
    let mut t = TextReader {
        buf: rec,
        pos: HEADER,
    };
    for _ in 0..5 {
        push_text(&mut body, std::str::from_utf8(t.next().unwrap()).unwrap());
    }
    push_text(&mut body, &t.ip().unwrap());
    body.extend_from_slice(&rec[t.pos..]);
    let len = u16::try_from(4 + 16 + body.len()).expect("short record");
    let mut out = Vec::with_capacity(rec.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[rec[STATE], LAYOUT_SECONDS]);
    for off in [CREATED, SEEN, ROTATED, EXPIRES] {
        let secs = u32::try_from(get_time(rec, off).as_secs()).expect("a u32 second");
        out.extend_from_slice(&secs.to_le_bytes());
    }
    out.extend_from_slice(&body);
    assert_eq!(out.len(), usize::from(len));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_session() -> NewSession {
        NewSession {
            user_id: "1001".into(),
            user_name: "alice".into(),
            tenant: Some("acme".into()),
            roles: vec!["admin".into(), "ops".into()],
            platform: "web".into(),
            device: None,
            ip: "203.0.113.7".into(),
            user_agent: Some("é".repeat(200)),
        }
    }

    #[test]
    fn round_trip() {
        let e = encode(
            &new_session(),
            &[3; 16],
            &[4; 16],
            Millis(1000),
            Millis(2000),
        )
        .unwrap();
        assert_eq!(ranges(&e).unwrap(), vec![0..e.len()]);
        let v = Entry(&e);
        assert_eq!(v.platform(), b"web");
        assert_eq!(v.user_id(), b"1001");
        assert_eq!(v.check(Millis(1999)), SessionCheck::Active);
        assert_eq!(v.check(Millis(2000)), SessionCheck::Lapsed);
        let s = v.to_session().unwrap();
        assert_eq!(s.user_name, "alice");
        assert_eq!(s.tenant.as_deref(), Some("acme"));
        assert_eq!(s.device, None);
        assert_eq!(s.roles, ["admin", "ops"]);
        // Cut at a character boundary: 127 two-byte characters.
        assert_eq!(s.user_agent.unwrap().len(), 254);
        assert_eq!(
            (s.created_at, s.expires_at, s.generation),
            (Millis(1000), Millis(2000), 0)
        );
        let mut two = e.clone();
        two.extend_from_slice(&e);
        assert_eq!(find(&two, "1001", &[3; 16]).unwrap(), Some(0..e.len()));
        assert_eq!(find(&two, "1002", &[3; 16]).unwrap(), None);
        assert!(ranges(&two[..two.len() - 1]).is_err());
    }

    #[test]
    fn rejects_oversized_identity() {
        let mut n = new_session();
        n.user_id = "x".repeat(256);
        assert!(encode(&n, &[0; 16], &[0; 16], Millis(0), Millis(1)).is_err());
        let mut n = new_session();
        n.roles = vec!["r".repeat(255); 255];
        assert!(encode(&n, &[0; 16], &[0; 16], Millis(0), Millis(1)).is_err());
    }

    #[test]
    fn times_are_milliseconds_and_saturate_at_48_bits() {
        let e = encode(
            &new_session(),
            &[3; 16],
            &[4; 16],
            Millis(1_700_000_000_123),
            Millis(u64::MAX),
        )
        .unwrap();
        let v = Entry(&e);
        assert_eq!(v.created(), Millis(1_700_000_000_123));
        assert_eq!(v.seen(), Millis(1_700_000_000_123));
        assert_eq!(v.rotated(), Millis::ZERO);
        assert_eq!(v.expires(), Millis(MAX_TIME));
        assert_eq!(e[VERSION], LAYOUT);
    }

    #[test]
    fn the_longest_configurable_span_fits_after_the_year_2500() {
        let year_2500 = Millis::from_secs((2500 - 1970) * 31_557_600);
        assert!((year_2500 + crate::clock::MAX_STORE_SPAN).0 <= MAX_TIME);
    }

    #[test]
    fn layout_1_records_are_upgraded_seconds_to_milliseconds() {
        let a = encode(
            &new_session(),
            &[3; 16],
            &[4; 16],
            Millis(1_700_000_000_999),
            Millis(1_700_003_600_999),
        )
        .unwrap();
        let mut b = encode(
            &new_session(),
            &[5; 16],
            &[6; 16],
            Millis(7_000),
            Millis(9_000),
        )
        .unwrap();
        set_time(&mut b, ROTATED, Millis(8_000));
        set_u32(&mut b, GENERATION, 3);
        b[STATE] = reason_code(EndReason::Theft);
        // An old record, a new one and another old one in one blob.
        let mut doc = as_layout_1(&a);
        assert!(ranges(&doc).is_err(), "layout 1 is never read as it is");
        doc.extend_from_slice(&b);
        doc.extend_from_slice(&as_layout_1(&b));
        let up = upgrade(doc).unwrap();
        let r = ranges(&up).unwrap();
        assert_eq!(r.len(), 3);
        let (x, y, z) = (
            Entry(&up[r[0].clone()]),
            Entry(&up[r[1].clone()]),
            Entry(&up[r[2].clone()]),
        );
        // Cut to the second, then × 1000: never later than the true time.
        assert_eq!(x.created(), Millis(1_700_000_000_000));
        assert_eq!(x.expires(), Millis(1_700_003_600_000));
        assert_eq!(
            x.to_session().unwrap().user_agent,
            new_session().user_agent.map(|u| { u[..254].to_owned() })
        );
        assert_eq!(y.0, &b[..]);
        assert_eq!(
            (z.rotated(), z.generation(), z.sid()),
            (Millis(8_000), 3, &[5u8; 16][..])
        );
        assert_eq!(
            z.check(Millis(8_999)),
            SessionCheck::Ended(EndReason::Theft)
        );
        assert_eq!(z.current(), &[6; 16]);
        assert_eq!(x.to_session().unwrap().ip, "203.0.113.7");
        // A blob without old records comes back as it was.
        assert_eq!(upgrade(b.clone()).unwrap(), b);
        assert!(upgrade(b[..b.len() - 1].to_vec()).is_err());
    }

    #[test]
    fn the_ip_is_kept_as_raw_bytes_when_it_reads_back_the_same() {
        for (ip, kind, bytes) in [
            ("203.0.113.7", IP_V4, 5),
            ("2001:db8::1", IP_V6, 17),
            ("::ffff:203.0.113.7", IP_V6, 17),
            // Not canonical, or not an address: kept as text, exactly.
            ("203.000.113.7", IP_TEXT, 15),
            ("2001:DB8::1", IP_TEXT, 13),
            ("unknown", IP_TEXT, 9),
            ("", IP_TEXT, 2),
        ] {
            let mut n = new_session();
            n.ip = ip.into();
            let e = encode(&n, &[1; 16], &[2; 16], Millis(1), Millis(2)).unwrap();
            let s = Entry(&e).to_session().unwrap();
            assert_eq!(s.ip, ip);
            let mut plain = new_session();
            plain.ip = String::new();
            let base = encode(&plain, &[1; 16], &[2; 16], Millis(1), Millis(2)).unwrap();
            assert_eq!(e.len() - base.len() + 2, bytes, "{ip}");
            let mut t = Entry(&e).text();
            for _ in 0..5 {
                t.next();
            }
            assert_eq!(t.byte(), Some(kind), "{ip}");
        }
    }
}
