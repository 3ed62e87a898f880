//! `[identity]`: the headers the verified identity is injected in. Each must be a valid name,
//! none a header HTTP or the gateway relies on, none the same as another or as
//! `token.refresh_header` (compared the way the identity phase strips them).

use super::{Cx, PLACEHOLDER_HEADER};
use crate::claims::ClaimPath;
use crate::config::{file, Identity};

impl Cx<'_> {
    pub(super) fn identity(&mut self, f: &file::IdentityFile, refresh_header: &str) -> Identity {
        let fields = [
            ("identity.user_id", &f.user_id),
            ("identity.user_name", &f.user_name),
            ("identity.tenant", &f.tenant),
            ("identity.roles", &f.roles),
            ("identity.session_id", &f.session_id),
            ("identity.platform", &f.platform),
        ];
        let mut names = Vec::new();
        for (key, text) in fields {
            let name = self.header_name(key, text);
            if name != PLACEHOLDER_HEADER {
                if is_reserved_header(name.as_str()) {
                    self.problem(
                        key,
                        format!("{text:?} is a header HTTP or the gateway itself uses; incoming copies would be stripped"),
                    );
                }
                let folded = fold_header(name.as_str());
                if fold_header(refresh_header) == folded {
                    self.problem(key, format!("{text:?} is also token.refresh_header"));
                } else if let Some((other, _)) = fields
                    .iter()
                    .take_while(|(k, _)| *k != key)
                    .find(|(_, t)| fold_header(t) == folded)
                {
                    self.problem(key, format!("{text:?} is also {other}"));
                }
            }
            names.push(name);
        }
        if is_reserved_header(&refresh_header.to_ascii_lowercase()) {
            self.problem(
                "token.refresh_header",
                format!("{refresh_header:?} is a header HTTP or the gateway itself uses"),
            );
        }
        let claims = self.identity_claims(f, &fields, refresh_header);
        let mut names = names.into_iter();
        let mut next = || names.next().unwrap_or(PLACEHOLDER_HEADER);
        Identity {
            user_id: next(),
            user_name: next(),
            tenant: next(),
            roles: next(),
            session_id: next(),
            platform: next(),
            forward_authorization: f.forward_authorization,
            claims,
        }
    }

    /// `[identity.claims]`: each header like the ones above (valid, not reserved, not another
    /// identity header or the refresh header), each claim a name or pointer.
    fn identity_claims(
        &mut self,
        f: &file::IdentityFile,
        fields: &[(&str, &String)],
        refresh_header: &str,
    ) -> Vec<(http::HeaderName, ClaimPath)> {
        let mut out: Vec<(http::HeaderName, ClaimPath)> = Vec::new();
        for (header, claim) in &f.claims {
            let key = format!("identity.claims.{header:?}");
            let name = self.header_name(&key, header);
            if name == PLACEHOLDER_HEADER {
                continue;
            }
            let folded = fold_header(name.as_str());
            if is_reserved_header(name.as_str()) {
                self.problem(
                    &key,
                    format!("{header:?} is a header HTTP or the gateway itself uses"),
                );
            } else if fold_header(refresh_header) == folded {
                self.problem(&key, format!("{header:?} is also token.refresh_header"));
            } else if let Some((other, _)) = fields.iter().find(|(_, t)| fold_header(t) == folded) {
                self.problem(&key, format!("{header:?} is also {other}"));
            } else if out.iter().any(|(n, _)| fold_header(n.as_str()) == folded) {
                self.problem(
                    &key,
                    format!(
                        "{header:?} is given twice (names are compared without case, `_` as `-`)"
                    ),
                );
            }
            match ClaimPath::parse(claim) {
                Ok(path) => out.push((name, path)),
                Err(why) => self.problem(&key, format!("{claim:?} is {why}")),
            }
        }
        out
    }
}

/// Header names compared the way the identity phase strips them: case-blind, `_` as `-`.
fn fold_header(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Headers HTTP or the gateway itself relies on; configuring one as an identity or refresh
/// header would strip or overwrite something that matters.
fn is_reserved_header(lower: &str) -> bool {
    let lower = fold_header(lower);
    matches!(
        lower.as_str(),
        "authorization"
            | "cookie"
            | "set-cookie"
            | "host"
            | "content-length"
            | "content-type"
            | "content-encoding"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "upgrade"
            | "forwarded"
            | "origin"
            | "cache-control"
            | "www-authenticate"
            | "x-request-id"
            | "x-real-ip"
            | "x-original-url"
            | "x-rewrite-url"
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
            | "traceparent"
            | "tracestate"
    ) || lower.starts_with("proxy-")
        || lower.starts_with("x-forwarded-")
        || lower.starts_with("access-control-")
        || lower.starts_with("sec-websocket-")
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn each_rule_reports_its_key_path() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            // [identity]
            ("[identity]\nroles = \"X User Roles\"", "identity.roles", "not a valid header name"),
            ("[identity]\nuser_name = \"x-user-id\"", "identity.user_name", "also identity.user_id"),
            ("[identity]\nplatform = \"X_Tenant_Id\"", "identity.platform", "also identity.tenant"),
            ("[identity]\nsession_id = \"Refresh-Token\"", "identity.session_id", "also token.refresh_header"),
            ("[identity]\nuser_id = \"Authorization\"", "identity.user_id", "HTTP or the gateway"),
            ("[identity]\ntenant = \"X-Forwarded-For\"", "identity.tenant", "HTTP or the gateway"),
            ("[identity]\nforward_authorization = \"no\"", "identity.forward_authorization", "invalid type"),
            // token.refresh_header is checked with the identity headers
            ("[token]\nrefresh_header = \"Set-Cookie\"", "token.refresh_header", "HTTP or the gateway"),
        ];
        assert_rules(cases);
    }
}
