//! `[[token.issuers]]`: identity providers whose tokens are accepted. Each needs an http(s)
//! issuer URL of its own (not `token.issuer`), one key source (discovery, `jwks_url` or
//! `public_key_file`), audiences, and pinned asymmetric algorithms; claim paths must parse, the
//! durations be sane, a `ca_file` hold certificates.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::Cx;
use crate::claims::ClaimPath;
use crate::config::file;
use crate::tokens::issuer::{Issuer, IssuerSpec, KeySource};
use crate::tokens::{KeyMaterial, KeySpec};

/// Most issuers one config may list.
const MAX_ISSUERS: usize = 64;

/// The algorithms an issuer may use: asymmetric only.
const ISSUER_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

impl Cx<'_> {
    /// The issuers, built (keys not fetched yet); `own_issuer` is `token.issuer`.
    pub(super) fn issuers(
        &mut self,
        list: &[file::IssuerFile],
        own_issuer: &str,
        leeway: Duration,
    ) -> Vec<Arc<Issuer>> {
        if list.len() > MAX_ISSUERS {
            self.problem(
                "token.issuers",
                format!("{} issuers; at most {MAX_ISSUERS}", list.len()),
            );
        }
        let mut out = Vec::new();
        for (i, f) in list.iter().enumerate() {
            let key = format!("token.issuers[{i}]");
            if f.issuer == own_issuer {
                self.problem(
                    format!("{key}.issuer"),
                    format!("{own_issuer:?} is token.issuer, the gateway's own tokens' issuer"),
                );
            } else if let Some(j) = list[..i].iter().position(|o| o.issuer == f.issuer) {
                self.problem(
                    format!("{key}.issuer"),
                    format!("{:?} is also token.issuers[{j}]", f.issuer),
                );
            }
            if let Some(issuer) = self.issuer(&key, f, leeway) {
                out.push(Arc::new(issuer));
            }
        }
        out
    }

    fn issuer(&mut self, key: &str, f: &file::IssuerFile, leeway: Duration) -> Option<Issuer> {
        let before = self.problems.len();
        self.http_url(&format!("{key}.issuer"), &f.issuer);
        let algorithms = self.issuer_algorithms(key, &f.algorithms);
        let audiences = self.audiences(key, &f.audiences);
        let refresh = self.duration(&format!("{key}.jwks_refresh"), &f.jwks_refresh);
        if refresh < Duration::from_secs(60) {
            self.problem(format!("{key}.jwks_refresh"), "must be at least 1m");
        }
        let fetch_timeout = self.duration(&format!("{key}.fetch_timeout"), &f.fetch_timeout);
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&fetch_timeout) {
            self.problem(format!("{key}.fetch_timeout"), "must be from 100ms to 60s");
        }
        let mut path = |name: &str, text: &str| match ClaimPath::parse(text) {
            Ok(p) => p,
            Err(why) => {
                self.problem(format!("{key}.{name}"), format!("{text:?} is {why}"));
                ClaimPath::Name(String::new())
            }
        };
        let user_name = path("user_name_claim", &f.user_name_claim);
        let roles = path("roles_claim", &f.roles_claim);
        let tenant = path("tenant_claim", &f.tenant_claim);
        let ca_pem = f.ca_file.as_ref().and_then(|p| self.ca_file(key, p));
        let (source, static_key) = self.key_source(key, f, &algorithms)?;
        let spec = IssuerSpec {
            issuer: f.issuer.clone(),
            source,
            audiences,
            algorithms,
            refresh,
            fetch_timeout,
            user_name,
            roles,
            tenant,
            ca_pem,
            leeway,
        };
        (self.problems.len() == before).then(|| Issuer::new(spec, static_key))
    }

    /// An `http://` or `https://` URL with a host.
    fn http_url(&mut self, key: &str, text: &str) {
        let ok = text
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
            .is_some_and(|u| u.host().is_some_and(|h| !h.is_empty()));
        if !ok {
            self.problem(key, format!("{text:?} is not an http:// or https:// URL"));
        }
    }

    fn issuer_algorithms(&mut self, key: &str, names: &[String]) -> Vec<Algorithm> {
        let key = format!("{key}.algorithms");
        if names.is_empty() {
            self.problem(&key, "must list at least one algorithm, e.g. [\"RS256\"]");
        }
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if name.starts_with("HS") {
                self.problem(
                    format!("{key}[{i}]"),
                    format!("{name} is a shared-secret algorithm; an identity provider's tokens are verified with its public keys (RS*, PS*, ES*, EdDSA)"),
                );
                continue;
            }
            match ISSUER_ALGORITHMS
                .contains(&name.as_str())
                .then(|| name.parse::<Algorithm>().ok())
                .flatten()
            {
                Some(alg) if out.contains(&alg) => {
                    self.problem(format!("{key}[{i}]"), format!("{name} is listed twice"))
                }
                Some(alg) => out.push(alg),
                None => self.problem(
                    format!("{key}[{i}]"),
                    format!("{name:?} is not one of {}", ISSUER_ALGORITHMS.join(", ")),
                ),
            }
        }
        out
    }

    fn audiences(&mut self, key: &str, list: &[String]) -> Vec<String> {
        if list.is_empty() {
            self.problem(
                format!("{key}.audiences"),
                "must list at least one audience the tokens must carry in aud",
            );
        }
        for (i, a) in list.iter().enumerate() {
            if a.is_empty() {
                self.problem(format!("{key}.audiences[{i}]"), "must not be empty");
            }
        }
        list.to_vec()
    }

    fn ca_file(&mut self, key: &str, path: &std::path::Path) -> Option<Vec<u8>> {
        let key = format!("{key}.ca_file");
        let pem = self.read(&key, path)?;
        let mut read = pem.as_slice();
        let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut read).collect();
        match certs {
            Ok(c) if !c.is_empty() => Some(pem),
            Ok(_) => {
                self.problem(key, "holds no PEM CERTIFICATE");
                None
            }
            Err(e) => {
                self.problem(key, format!("not PEM certificates: {e}"));
                None
            }
        }
    }

    /// The one key source: `public_key_file` (loaded now), else `jwks_url`, else discovery.
    fn key_source(
        &mut self,
        key: &str,
        f: &file::IssuerFile,
        algorithms: &[Algorithm],
    ) -> Option<(KeySource, Option<jsonwebtoken::DecodingKey>)> {
        use crate::tokens::fetch::Source;
        match (&f.public_key_file, &f.jwks_url) {
            (Some(_), Some(_)) => {
                self.problem(
                    format!("{key}.jwks_url"),
                    "give one of public_key_file and jwks_url, not both",
                );
                None
            }
            (Some(path), None) => {
                let pem = self.read(&format!("{key}.public_key_file"), path)?;
                let mut decoding = None;
                for alg in algorithms {
                    let spec = KeySpec {
                        kid: String::new(),
                        algorithm: *alg,
                        material: KeyMaterial::PublicPem(pem.clone()),
                    };
                    match spec.decoding_key() {
                        Ok(d) => decoding = decoding.or(Some(d)),
                        Err(e) => self.problem(
                            format!("{key}.public_key_file"),
                            format!("does not fit {alg:?}: {e}"),
                        ),
                    }
                }
                Some((KeySource::Static(pem), decoding))
            }
            (None, Some(url)) => {
                self.http_url(&format!("{key}.jwks_url"), url);
                Some((KeySource::Fetched(Source::Jwks(url.clone())), None))
            }
            (None, None) if f.discovery => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    f.issuer.trim_end_matches('/')
                );
                Some((KeySource::Fetched(Source::Discovery(url)), None))
            }
            (None, None) => {
                self.problem(
                    format!("{key}.discovery"),
                    "with discovery = false, give jwks_url or public_key_file",
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::tokens::issuer::KeySource;

    const GOOD: &str = "[[token.issuers]]\nissuer = \"https://idp.example.com/realms/acme\"\naudiences = [\"legacy-app\"]\nalgorithms = [\"RS256\"]";

    fn issuer(extra: &str) -> String {
        format!("{GOOD}\n{extra}")
    }

    #[test]
    fn each_rule_reports_its_key_path() {
        let cases: Vec<(String, &str, &str)> = vec![
            (
                issuer("algorithms = [\"HS256\"]").replacen("algorithms = [\"RS256\"]\n", "", 1),
                "token.issuers[0].algorithms[0]",
                "shared-secret",
            ),
            (
                GOOD.replace("[\"RS256\"]", "[]"),
                "token.issuers[0].algorithms",
                "at least one",
            ),
            (
                GOOD.replace("[\"RS256\"]", "[\"RS256\", \"RS256\"]"),
                "token.issuers[0].algorithms[1]",
                "twice",
            ),
            (
                GOOD.replace("[\"RS256\"]", "[\"none\"]"),
                "token.issuers[0].algorithms[0]",
                "not one of",
            ),
            (
                GOOD.replace("[\"legacy-app\"]", "[]"),
                "token.issuers[0].audiences",
                "at least one",
            ),
            (
                GOOD.replace("[\"legacy-app\"]", "[\"\"]"),
                "token.issuers[0].audiences[0]",
                "must not be empty",
            ),
            (
                GOOD.replace("https://idp.example.com/realms/acme", "idp.example.com"),
                "token.issuers[0].issuer",
                "not an http",
            ),
            (
                GOOD.replace("https://idp.example.com/realms/acme", "ftp://idp"),
                "token.issuers[0].issuer",
                "not an http",
            ),
            (
                GOOD.replace("https://idp.example.com/realms/acme", "authgate"),
                "token.issuers[0].issuer",
                "token.issuer",
            ),
            (
                issuer("roles_claim = \"/a/~2\""),
                "token.issuers[0].roles_claim",
                "JSON pointer",
            ),
            (
                issuer("user_name_claim = \"\""),
                "token.issuers[0].user_name_claim",
                "empty claim name",
            ),
            (
                issuer("jwks_refresh = \"30s\""),
                "token.issuers[0].jwks_refresh",
                "at least 1m",
            ),
            (
                issuer("fetch_timeout = \"10ms\""),
                "token.issuers[0].fetch_timeout",
                "100ms to 60s",
            ),
            (
                issuer("jwks_url = \"not a url\""),
                "token.issuers[0].jwks_url",
                "not an http",
            ),
            (
                issuer("discovery = false"),
                "token.issuers[0].discovery",
                "give jwks_url",
            ),
            (
                issuer("jwks_url = \"https://idp/certs\"\npublic_key_file = \"ec-public.pem\""),
                "token.issuers[0].jwks_url",
                "not both",
            ),
            (
                issuer("public_key_file = \"ec-public.pem\""),
                "token.issuers[0].public_key_file",
                "does not fit RS256",
            ),
            (
                issuer("public_key_file = \"missing.pem\""),
                "token.issuers[0].public_key_file",
                "cannot read",
            ),
            (
                issuer("ca_file = \"secret.txt\""),
                "token.issuers[0].ca_file",
                "no PEM CERTIFICATE",
            ),
            (
                format!("{GOOD}\n{GOOD}"),
                "token.issuers[1].issuer",
                "also token.issuers[0]",
            ),
        ];
        let cases: Vec<(&str, &str, &str)> =
            cases.iter().map(|(a, b, c)| (a.as_str(), *b, *c)).collect();
        assert_rules(&cases);
    }

    #[test]
    fn sources_and_defaults() {
        let with = |extra: &str| {
            let loaded = ok(&format!("{MINIMAL}\n{}", issuer(extra)));
            let issuers = loaded.config.token.keys.issuers().to_vec();
            assert_eq!(issuers.len(), 1);
            issuers[0].spec.clone()
        };
        let spec = with("");
        assert_eq!(
            spec.source,
            KeySource::Fetched(crate::tokens::fetch::Source::Discovery(
                "https://idp.example.com/realms/acme/.well-known/openid-configuration".into()
            ))
        );
        assert_eq!(spec.refresh, std::time::Duration::from_secs(600));
        assert_eq!(spec.user_name.to_string(), "preferred_username");
        let spec = with("jwks_url = \"https://idp.example.com/certs\"");
        assert_eq!(
            spec.source,
            KeySource::Fetched(crate::tokens::fetch::Source::Jwks(
                "https://idp.example.com/certs".into()
            ))
        );
        let loaded = ok(&format!(
            "{MINIMAL}\n{}",
            GOOD.replace("[\"RS256\"]", "[\"ES256\"]") + "\npublic_key_file = \"ec-public.pem\""
        ));
        let issuer = &loaded.config.token.keys.issuers()[0];
        assert!(issuer.is_static() && issuer.has_keys());
    }

    #[test]
    fn without_a_signing_key_an_issuer_is_enough_to_accept_tokens() {
        let text = format!(
            "{MINIMAL}\n[token]\nsecret_env = \"NOT_SET\"\n[login]\nbackend = \"none\"\n[session]\nmode = \"stateless\"\n{GOOD}"
        );
        let loaded = ok(&text);
        assert!(!loaded.config.token.keys.can_sign());
    }

    #[test]
    fn identity_claims_and_route_requirements() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("[identity.claims]\n\"X-User-Id\" = \"email\"", "identity.claims.\"X-User-Id\"", "also identity.user_id"),
            ("[identity.claims]\n\"Host\" = \"email\"", "identity.claims.\"Host\"", "HTTP or the gateway"),
            ("[identity.claims]\n\"X-Request-Id\" = \"jti\"", "identity.claims.\"X-Request-Id\"", "HTTP or the gateway"),
            ("[identity.claims]\n\"traceparent\" = \"tp\"", "identity.claims.\"traceparent\"", "HTTP or the gateway"),
            ("[identity.claims]\n\"X_Real_IP\" = \"ip\"", "identity.claims.\"X_Real_IP\"", "HTTP or the gateway"),
            ("[identity.claims]\n\"bad header\" = \"email\"", "identity.claims.\"bad header\"", "not a valid header name"),
            ("[identity.claims]\n\"X-Email\" = \"/a/~\"", "identity.claims.\"X-Email\"", "JSON pointer"),
            ("[identity.claims]\n\"X-Email\" = \"email\"\n\"x_email\" = \"mail\"", "identity.claims.\"x_email\"", "given twice"),
            ("[[routes]]\npath = \"/a\"\nupstream = \"app\"\nrequire_claims = { org = [1] }", "routes[1].require_claims.\"org\"", "cannot be compared"),
            ("[[routes]]\npath = \"/a\"\nupstream = \"app\"\nrequire_claims = { \"/a/~9\" = 1 }", "routes[1].require_claims.\"/a/~9\"", "JSON pointer"),
            ("[[routes]]\npath = \"/a\"\nupstream = \"app\"\nauth = \"optional\"\nrequire_scopes = [\"x\"]", "routes[1].require_scopes", "optional route"),
            ("[[routes]]\npath = \"/a\"\nupstream = \"app\"\nauth = \"public\"\nrequire_claims = { a = 1 }", "routes[1].require_claims", "public"),
            ("[[routes]]\npath = \"/a\"\nupstream = \"app\"\nrequire_scopes = [\"\"]", "routes[1].require_scopes[0]", "must not be empty"),
        ];
        assert_rules(cases);
        let loaded = ok(&format!(
            "{MINIMAL}\n[identity.claims]\n\"X-User-Email\" = \"email\"\n\"X-Org\" = \"/org/id\"\n\
             [[routes]]\npath = \"/a\"\nupstream = \"app\"\nrequire_scopes = [\"orders:read\"]\n\
             require_claims = {{ email_verified = true, \"/org/id\" = \"acme\", level = 3 }}"
        ));
        let names: Vec<String> = loaded
            .config
            .identity
            .claims
            .iter()
            .map(|(h, p)| format!("{h}={p}"))
            .collect();
        assert_eq!(names, ["x-org=/org/id", "x-user-email=email"]);
    }
}
