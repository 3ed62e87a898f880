//! Audit events: one JSON line per event on stderr with `"audit": true`, whatever the log
//! format, so they can be picked out of the stream (`jq 'select(.audit)'`).
//!
//! Never a password or a whole token: only ids. Every line carries the `request_id` of the
//! request it happened in (from its log scope; `null` for an event of no request, such as a
//! user removed by a SIGHUP reload). `login_failed`, `account_locked` and `captcha_failed`
//! carry the attempted `username`.

use std::net::IpAddr;

use crate::clock::unix_now as now;

/// The audit events of the contract (§8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Login,
    LoginFailed,
    AccountLocked,
    Refresh,
    TokenTheftDetected,
    SessionReplaced,
    Logout,
    LogoutAll,
    SessionRevoked,
    AdminRevoke,
    /// An admin cleared a username's lock-out (`DELETE /admin/lockouts/{username}`); carries
    /// the `username`. Not in the contract's first list (adding events is allowed).
    AdminUnlock,
    /// A login refused by the captcha (none, not live, or a wrong answer); carries the
    /// attempted `username` and the `reason` (`captcha_required` or `invalid_captcha`).
    CaptchaFailed,
}

impl Event {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Event::Login => "login",
            Event::LoginFailed => "login_failed",
            Event::AccountLocked => "account_locked",
            Event::Refresh => "refresh",
            Event::TokenTheftDetected => "token_theft_detected",
            Event::SessionReplaced => "session_replaced",
            Event::Logout => "logout",
            Event::LogoutAll => "logout_all",
            Event::SessionRevoked => "session_revoked",
            Event::AdminRevoke => "admin_revoke",
            Event::AdminUnlock => "admin_unlock",
            Event::CaptchaFailed => "captcha_failed",
        }
    }
}

/// Who and what an event is about; absent fields are written as `null`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub user_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub platform: Option<&'a str>,
    pub ip: Option<IpAddr>,
}

/// The line for one event.
pub(crate) fn line(event: Event, s: &Subject<'_>, ts: u64) -> String {
    value(event, s, ts).to_string()
}

fn value(event: Event, s: &Subject<'_>, ts: u64) -> serde_json::Value {
    let request_id = crate::logs::scope::request_id();
    serde_json::json!({
        "audit": true,
        "event": event.as_str(),
        "ts": ts,
        "user_id": s.user_id,
        "session_id": s.session_id,
        "platform": s.platform,
        "ip": s.ip.map(|ip| ip.to_string()),
        "request_id": request_id,
    })
}

/// Writes one audit event to stderr.
pub(crate) fn record(event: Event, s: Subject<'_>) {
    write(&line(event, &s, now()));
}

/// Writes one audit event about a username (not a user id: the account may not exist, and
/// lock-out is keyed by what was typed) to stderr, with a `username` field (`null` when the
/// login body named none).
pub(crate) fn record_for_username(event: Event, s: Subject<'_>, username: Option<&str>) {
    write(&line_for_username(event, &s, username, now()));
}

/// The line for one event with a `username` field.
pub(crate) fn line_for_username(
    event: Event,
    s: &Subject<'_>,
    username: Option<&str>,
    ts: u64,
) -> String {
    let mut v = value(event, s, ts);
    v["username"] = username.into();
    v.to_string()
}

/// Writes one audit event about a login attempt to stderr: the attempted `username` (null
/// when the body named none) and why it was refused.
pub(crate) fn record_attempt(event: Event, s: Subject<'_>, username: Option<&str>, reason: &str) {
    write(&line_for_attempt(event, &s, username, reason, now()));
}

/// The line for one event about a login attempt, with `username` and `reason` fields.
pub(crate) fn line_for_attempt(
    event: Event,
    s: &Subject<'_>,
    username: Option<&str>,
    reason: &str,
    ts: u64,
) -> String {
    let mut v = value(event, s, ts);
    v["username"] = username.into();
    v["reason"] = reason.into();
    v.to_string()
}

fn write(l: &str) {
    let mut line = Vec::with_capacity(l.len() + 1);
    line.extend_from_slice(l.as_bytes());
    line.push(b'\n');
    crate::logs::write(&line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_every_field() {
        let l = line(
            Event::TokenTheftDetected,
            &Subject {
                user_id: Some("1001"),
                session_id: Some("s"),
                platform: Some("web"),
                ip: Some("192.0.2.1".parse().unwrap()),
            },
            42,
        );
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["audit"], true);
        assert_eq!(v["event"], "token_theft_detected");
        assert_eq!(v["ts"], 42);
        assert_eq!(v["user_id"], "1001");
        assert_eq!(v["session_id"], "s");
        assert_eq!(v["platform"], "web");
        assert_eq!(v["ip"], "192.0.2.1");
        // Outside a request.
        assert!(v["request_id"].is_null(), "{l}");
    }

    #[tokio::test]
    async fn lines_in_a_request_carry_its_id() {
        let scope = crate::logs::scope::Scope::new(
            http::HeaderValue::from_static("rid-9"),
            "192.0.2.1".parse().unwrap(),
            None,
        );
        let l = crate::logs::scope::run(scope, async {
            line_for_username(Event::LoginFailed, &Subject::default(), Some("bob"), 1)
        })
        .await;
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["request_id"], "rid-9");
        assert_eq!(v["username"], "bob");
    }

    #[test]
    fn captcha_failed_lines_carry_the_attempted_username_and_the_reason() {
        let s = Subject {
            platform: Some("web"),
            ip: Some("192.0.2.1".parse().unwrap()),
            ..Default::default()
        };
        let l = line_for_attempt(
            Event::CaptchaFailed,
            &s,
            Some("alice"),
            "invalid_captcha",
            9,
        );
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["audit"], true);
        assert_eq!(v["event"], "captcha_failed");
        assert_eq!(v["username"], "alice");
        assert_eq!(v["reason"], "invalid_captcha");
        assert_eq!(v["ip"], "192.0.2.1");
        assert!(v["user_id"].is_null());
        let l = line_for_attempt(Event::CaptchaFailed, &s, None, "captcha_required", 9);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert!(v["username"].is_null(), "{l}");
    }

    #[test]
    fn username_lines_keep_every_field_and_add_the_username() {
        let l = line_for_username(Event::AdminUnlock, &Subject::default(), Some("alice"), 7);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["audit"], true);
        assert_eq!(v["event"], "admin_unlock");
        assert_eq!(v["ts"], 7);
        assert_eq!(v["username"], "alice");
        assert!(v["user_id"].is_null());
    }
}
