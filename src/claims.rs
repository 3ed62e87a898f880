//! Reading a token's claims by name or JSON pointer: what `[identity.claims]`, an issuer's
//! `user_name_claim`/`roles_claim`/`tenant_claim`, `require_claims` and `require_scopes` all
//! share.
//!
//! A [`ClaimPath`] is a top-level claim name (`email`), or, when it starts with `/`, an RFC 6901
//! JSON pointer into the claims (`/realm_access/roles`, Keycloak's realm roles).

use serde_json::Value;

/// Where a claim is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClaimPath {
    /// A top-level claim.
    Name(String),
    /// An RFC 6901 pointer, checked when parsed.
    Pointer(String),
}

impl ClaimPath {
    /// A claim name, or a pointer when it starts with `/`. A pointer's `~` must be followed by
    /// `0` or `1` (RFC 6901 §3); an empty name is refused.
    pub(crate) fn parse(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() {
            return Err("an empty claim name");
        }
        if !text.starts_with('/') {
            return Ok(ClaimPath::Name(text.to_owned()));
        }
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err("a JSON pointer whose '~' is not followed by 0 or 1");
            }
        }
        Ok(ClaimPath::Pointer(text.to_owned()))
    }

    /// The claim's value in `claims`, if there is one.
    pub(crate) fn find<'v>(&self, claims: &'v Value) -> Option<&'v Value> {
        match self {
            ClaimPath::Name(name) => claims.get(name),
            ClaimPath::Pointer(p) => claims.pointer(p),
        }
    }
}

impl std::fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimPath::Name(s) | ClaimPath::Pointer(s) => f.write_str(s),
        }
    }
}

/// A claim as one header value: a string as it is, a number or boolean as its JSON text, an
/// array of those comma-joined; `None` for an object, `null`, or an array holding one of them
/// (an empty array is `None` too: no value to send).
pub(crate) fn header_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) if !items.is_empty() => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|i| match i {
                    Value::Array(_) => None,
                    other => header_text(other),
                })
                .collect();
            parts.map(|p| p.join(","))
        }
        _ => None,
    }
}

/// A claim as a list of strings: an array of strings, or one string (one element). `None` for
/// anything else (a role list holding a number is not a role list).
pub(crate) fn string_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

/// Whether the token grants every scope in `wanted`: from `scope` (a space-separated string,
/// RFC 8693 §4.2 / RFC 9068) or else `scp` (an array of strings, or a space-separated string as
/// Entra ID writes it). A `scope` of any other type grants nothing.
pub(crate) fn has_scopes(claims: &Value, wanted: &[String]) -> bool {
    let granted: Vec<&str> = match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) => s.split(' ').filter(|s| !s.is_empty()).collect(),
        (Some(_), _) => return false,
        (None, Some(Value::String(s))) => s.split(' ').filter(|s| !s.is_empty()).collect(),
        (None, Some(Value::Array(items))) => {
            let all: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            match all {
                Some(all) => all,
                None => return false,
            }
        }
        _ => return false,
    };
    wanted.iter().all(|w| granted.contains(&w.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_pointers() {
        let c =
            json!({"email": "a@x", "realm_access": {"roles": ["r1", "r2"]}, "a/b": 1, "m~n": 2});
        let find = |p: &str| ClaimPath::parse(p).unwrap().find(&c).cloned();
        assert_eq!(find("email"), Some(json!("a@x")));
        assert_eq!(find("/realm_access/roles"), Some(json!(["r1", "r2"])));
        assert_eq!(find("/a~1b"), Some(json!(1)));
        assert_eq!(find("/m~0n"), Some(json!(2)));
        assert_eq!(find("missing"), None);
        assert_eq!(find("/realm_access/missing"), None);
        assert!(ClaimPath::parse("").is_err());
        assert!(ClaimPath::parse("/a/~2").is_err());
        assert!(ClaimPath::parse("/a/~").is_err());
    }

    #[test]
    fn header_text_by_type() {
        assert_eq!(header_text(&json!("x")), Some("x".into()));
        assert_eq!(header_text(&json!(7)), Some("7".into()));
        assert_eq!(header_text(&json!(true)), Some("true".into()));
        assert_eq!(header_text(&json!(["a", "b", 3])), Some("a,b,3".into()));
        assert_eq!(header_text(&json!({"a": 1})), None);
        assert_eq!(header_text(&json!(["a", {"b": 1}])), None);
        assert_eq!(header_text(&json!([["a"]])), None);
        assert_eq!(header_text(&json!([])), None);
        assert_eq!(header_text(&json!(null)), None);
    }

    #[test]
    fn scopes_from_scope_or_scp() {
        let want = vec!["orders:read".to_string(), "openid".to_string()];
        assert!(has_scopes(&json!({"scope": "openid orders:read"}), &want));
        assert!(has_scopes(
            &json!({"scp": ["orders:read", "openid"]}),
            &want
        ));
        assert!(has_scopes(&json!({"scp": "openid orders:read"}), &want));
        assert!(!has_scopes(&json!({"scope": "openid"}), &want));
        assert!(!has_scopes(&json!({}), &want));
        assert!(!has_scopes(&json!({"scope": 7}), &want));
        assert!(!has_scopes(
            &json!({"scope": ["orders:read", "openid"]}),
            &want
        ));
        assert!(!has_scopes(&json!({"scp": ["orders:read", 1]}), &want));
        // A malformed `scope` is not rescued by a good `scp`.
        assert!(!has_scopes(
            &json!({"scope": 1, "scp": ["orders:read", "openid"]}),
            &want
        ));
    }

    #[test]
    fn string_lists() {
        assert_eq!(string_list(&json!("a")), Some(vec!["a".into()]));
        assert_eq!(
            string_list(&json!(["a", "b"])),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(string_list(&json!(["a", 1])), None);
        assert_eq!(string_list(&json!({"a": 1})), None);
    }
}
