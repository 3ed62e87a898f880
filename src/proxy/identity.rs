//! Identity headers: strip every client copy, then inject the verified ones.
//!
//! Stripping happens on every route, public ones included, and matches names without regard
//! to case and with `_` and `-` taken as the same, because many legacy stacks (CGI, PHP,
//! some Java containers) fold `X_User_Id` into the same variable as `X-User-Id`.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::Identity;
use crate::tokens::Claims;

pub(crate) use crate::proxy::same_name;

impl Identity {
    /// The names the gateway sets itself; a client's copy of any of them never survives.
    pub fn names(&self) -> [&HeaderName; 6] {
        [
            &self.user_id,
            &self.user_name,
            &self.tenant,
            &self.roles,
            &self.session_id,
            &self.platform,
        ]
    }

    /// Whether `name` is (a spelling of) one of the identity headers, `[identity.claims]`'s
    /// included.
    pub fn is_identity(&self, name: &[u8]) -> bool {
        self.names()
            .iter()
            .any(|n| same_name(n.as_str().as_bytes(), name))
            || self
                .claims
                .iter()
                .any(|(n, _)| same_name(n.as_str().as_bytes(), name))
    }
}

/// Removes every incoming spelling of an identity header (and of `extra`, e.g. the refresh
/// header, which only the gateway may set on a response).
pub(crate) fn strip(headers: &mut HeaderMap, identity: &Identity) {
    // Most requests carry none: scan first, allocate only when something must go.
    if !headers
        .keys()
        .any(|k| identity.is_identity(k.as_str().as_bytes()))
    {
        return;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| identity.is_identity(k.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Sets the identity headers from verified claims. Values that are not valid header text
/// (they came from a signed token, but may still hold a newline) are left out, not mangled.
/// The values are made once per verified token and shared by the requests that present it.
pub(crate) fn inject(headers: &mut HeaderMap, identity: &Identity, claims: &Claims) {
    let values = claims
        .derived
        .identity
        .get_or_init(|| Box::new(values(claims)));
    for (name, value) in identity.names().into_iter().zip(values.iter()) {
        if let Some(v) = value {
            headers.insert(name.clone(), v.clone());
        }
    }
    if identity.claims.is_empty() {
        return;
    }
    // Made (and checked) by `auth` when the token was accepted; made here only if not.
    if let Ok(extra) = claims
        .derived
        .extra
        .get_or_init(|| claim_values(identity, claims))
    {
        for ((name, _), value) in identity.claims.iter().zip(extra.iter()) {
            if let Some(v) = value {
                headers.insert(name.clone(), v.clone());
            }
        }
    }
}

/// The `[identity.claims]` header values of a token, in config order: a claim missing, an
/// object or `null` sends no header; a value that is not fit to be an identity value (too
/// long, a control character such as CR/LF, leading or trailing space) refuses the token.
pub(crate) fn claim_values(
    identity: &Identity,
    claims: &Claims,
) -> Result<Box<[Option<HeaderValue>]>, &'static str> {
    let json = claims.json();
    identity
        .claims
        .iter()
        .map(|(_, path)| {
            let Some(text) = path.find(json).and_then(crate::claims::header_text) else {
                return Ok(None);
            };
            if let Some(why) = crate::tokens::identity_value_problem(&text) {
                return Err(why);
            }
            Ok(value("claim", Some(&text)))
        })
        .collect()
}

/// The identity header values of `claims`, in the order of [`Identity::names`].
fn values(claims: &Claims) -> [Option<HeaderValue>; 6] {
    let roles = claims
        .roles
        .as_ref()
        .filter(|r| !r.is_empty())
        .map(|r| r.join(","));
    [
        value("user_id", Some(&claims.sub)),
        value("user_name", claims.name.as_deref()),
        value("tenant", claims.tenant.as_deref()),
        value("roles", roles.as_deref()),
        value("session_id", claims.sid.as_deref()),
        value("platform", claims.plat.as_deref()),
    ]
}

/// A header value for one identity value: as it is when ASCII without `%`, else percent-encoded UTF-8
/// (`%` itself encoded too, so the upstream decodes it back unambiguously). Verified tokens
/// hold no control characters (see `tokens::identity_value_problem`), so nothing is left out
/// for being invalid header text.
fn value(what: &str, v: Option<&str>) -> Option<HeaderValue> {
    use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
    const NON_ASCII: &AsciiSet = &CONTROLS.add(b'%');
    let v = v?;
    let encoded;
    // `%` is always encoded: an upstream that decodes must never turn an ASCII value such as
    // `ad%6Din` into another one (`admin`).
    let v = if v.is_ascii() && !v.contains('%') {
        v
    } else {
        encoded = utf8_percent_encode(v, NON_ASCII).to_string();
        encoded.as_str()
    };
    match HeaderValue::from_str(v) {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::warn!(
                claim = what,
                "identity value is not valid header text; left out"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            user_id: HeaderName::from_static("x-user-id"),
            user_name: HeaderName::from_static("x-user-name"),
            tenant: HeaderName::from_static("x-tenant-id"),
            roles: HeaderName::from_static("x-user-roles"),
            session_id: HeaderName::from_static("x-session-id"),
            platform: HeaderName::from_static("x-user-platform"),
            forward_authorization: true,
            claims: Vec::new(),
        }
    }

    #[test]
    fn same_name_folds_case_and_underscore() {
        for (a, b, want) in [
            ("x-user-id", "X-User-Id", true),
            ("x-user-id", "X_User_Id", true),
            ("x-user-id", "x_user-id", true),
            ("x-user-id", "x-user-idx", false),
            ("x-user-id", "x-user-ie", false),
        ] {
            assert_eq!(same_name(a.as_bytes(), b.as_bytes()), want, "{a} vs {b}");
        }
    }

    #[test]
    fn strip_removes_every_spelling_and_keeps_the_rest() {
        let id = identity();
        let mut h = HeaderMap::new();
        h.append(
            HeaderName::from_static("x-user-id"),
            HeaderValue::from_static("666"),
        );
        h.append(
            HeaderName::from_static("x_user_id"),
            HeaderValue::from_static("667"),
        );
        h.append(
            HeaderName::from_static("x_tenant_id"),
            HeaderValue::from_static("evil"),
        );
        h.append(
            HeaderName::from_static("x-user-roles"),
            HeaderValue::from_static("admin"),
        );
        h.append(
            HeaderName::from_static("accept"),
            HeaderValue::from_static("*/*"),
        );
        strip(&mut h, &id);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn inject_sets_claims() {
        let id = identity();
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "iss": "i", "aud": "a", "sub": "1001", "name": "alice", "sid": "s1", "plat": "web",
            "iat": 1, "exp": 2, "jti": "j", "tenant": "acme", "roles": ["admin", "ops"]
        }))
        .unwrap();
        let mut h = HeaderMap::new();
        inject(&mut h, &id, &claims);
        assert_eq!(h["x-user-id"], "1001");
        assert_eq!(h["x-user-name"], "alice");
        assert_eq!(h["x-tenant-id"], "acme");
        assert_eq!(h["x-user-roles"], "admin,ops");
        assert_eq!(h["x-session-id"], "s1");
        assert_eq!(h["x-user-platform"], "web");
    }

    #[test]
    fn inject_makes_the_values_once_per_claims_and_honours_renamed_headers() {
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "iss": "i", "aud": "a", "sub": "1001", "name": "bad\nname", "sid": "s1",
            "iat": 1, "exp": 2, "jti": "j"
        }))
        .unwrap();
        let mut first = HeaderMap::new();
        inject(&mut first, &identity(), &claims);
        // Another request with the same (cached) claims, under a config that renames a header.
        let mut renamed = identity();
        renamed.user_id = HeaderName::from_static("x-uid");
        let mut second = HeaderMap::new();
        inject(&mut second, &renamed, &claims);
        assert_eq!(first["x-user-id"], "1001");
        assert_eq!(second["x-uid"], "1001");
        assert!(!second.contains_key("x-user-id"));
        // The value that is not header text is left out both times; absent claims set nothing.
        for h in [&first, &second] {
            assert!(!h.contains_key("x-user-name"));
            assert!(!h.contains_key("x-tenant-id"));
            assert!(!h.contains_key("x-user-roles"));
            assert_eq!(h["x-session-id"], "s1");
        }
        // Shared, not rebuilt: both maps hold the very same bytes.
        assert!(claims.derived.identity.get().is_some());
        assert_eq!(
            first["x-session-id"].as_bytes().as_ptr(),
            second["x-session-id"].as_bytes().as_ptr()
        );
    }
}
