//! `[token]` and `[[token.verify_keys]]`: the signing key (a secret from an env var or a file,
//! or a private key file), the verify keys, lifetimes, the refresh header and cookie, and the
//! key ring built from them. Each key is checked under its own key path before the ring is.

use std::path::Path;
use std::time::Duration;

use super::Cx;
use crate::config::{duration, file, Token, MIN_SECRET_BYTES};
use crate::tokens::{KeyMaterial, KeyRing, KeySpec, TokenRules};

/// The `[token]` durations, checked one by one.
struct Lifetimes {
    access_ttl: Duration,
    refresh_ttl: Duration,
    max_lifetime: Duration,
    silent_refresh_window: Duration,
    leeway: Duration,
}

impl Cx<'_> {
    /// `signing_optional` (login.backend = "none"): a signing key that is not configured at all
    /// (its variable unset, no key file) is left out; the ring then only verifies.
    pub(super) fn token(&mut self, f: &file::TokenFile, signing_optional: bool) -> Option<Token> {
        for (key, value) in [
            ("token.kid", &f.kid),
            ("token.issuer", &f.issuer),
            ("token.audience", &f.audience),
        ] {
            if value.is_empty() {
                self.problem(key, "must not be empty");
            }
        }
        let signing = if f.algorithm.is_symmetric() {
            self.signing_secret(f, signing_optional)
        } else {
            self.signing_pem(f, signing_optional)
        };
        let verify = self.verify_keys(f);
        let times = self.lifetimes(f);
        let refresh_header = self.header_name("token.refresh_header", &f.refresh_header);
        let cookie = self.cookie(&f.cookie);

        // `signing` is `None` when the key did not resolve (a problem says why), `Some(None)`
        // when it may be and was left out.
        let signing = signing?.map(|material| KeySpec {
            kid: f.kid.clone(),
            algorithm: f.algorithm.to_jwt(),
            material,
        });
        if signing.is_none() {
            self.no_signing_key(verify.is_empty() && f.issuers.is_empty());
        }
        let refresh_secret = match &signing {
            Some(spec) => refresh_secret(&spec.material),
            // Nothing is minted, so no refresh token is ever derived with it.
            None => [0; 32],
        };
        let rules = TokenRules {
            issuer: f.issuer.clone(),
            audience: f.audience.clone(),
            leeway: times.leeway,
            access_ttl: times.access_ttl,
        };
        let issuers = self.issuers(&f.issuers, &f.issuer, times.leeway);
        let keys = match KeyRing::new(signing, verify, rules) {
            Ok(keys) => keys.with_issuers(issuers),
            Err(e) => {
                self.problem("token", e.0);
                return None;
            }
        };
        Some(Token {
            keys,
            access_ttl: times.access_ttl,
            refresh_ttl: times.refresh_ttl,
            max_lifetime: (!times.max_lifetime.is_zero()).then_some(times.max_lifetime),
            silent_refresh_window: times.silent_refresh_window,
            refresh_header,
            cookie,
            refresh_secret,
        })
    }

    /// An HS* signing key: `secret_env` (default `AUTHGATE_JWT_SECRET`) or `secret_file`.
    /// `None` when it does not resolve, `Some(None)` when it may be and is left out.
    fn signing_secret(
        &mut self,
        f: &file::TokenFile,
        signing_optional: bool,
    ) -> Option<Option<KeyMaterial>> {
        let alg = f.algorithm;
        if f.private_key_file.is_some() {
            self.problem(
                "token.private_key_file",
                format!("not used by {alg:?}, which signs with secret_env or secret_file"),
            );
        }
        if f.secret_env.is_some() && f.secret_file.is_some() {
            self.problem(
                "token.secret_file",
                "set either secret_env or secret_file, not both",
            );
            return None;
        }
        let env = f.secret_env.as_deref().unwrap_or(file::DEFAULT_SECRET_ENV);
        let env = if f.secret_file.is_some() {
            None
        } else {
            Some(env)
        };
        if signing_optional && f.secret_file.is_none() && (self.env)(env.unwrap_or("")).is_none() {
            Some(None)
        } else {
            self.secret("token", env, f.secret_file.as_deref())
                .map(|s| Some(KeyMaterial::Secret(s)))
        }
    }

    /// An asymmetric signing key: `private_key_file`, and no secret.
    fn signing_pem(
        &mut self,
        f: &file::TokenFile,
        signing_optional: bool,
    ) -> Option<Option<KeyMaterial>> {
        let alg = f.algorithm;
        for (key, set) in [
            ("token.secret_env", f.secret_env.is_some()),
            ("token.secret_file", f.secret_file.is_some()),
        ] {
            if set {
                self.problem(
                    key,
                    format!("not used by {alg:?}, which signs with private_key_file; remove it"),
                );
            }
        }
        match &f.private_key_file {
            None if signing_optional => Some(None),
            None => {
                self.problem("token.private_key_file", format!("required for {alg:?}"));
                None
            }
            Some(path) => self
                .read("token.private_key_file", path)
                .map(|pem| Some(KeyMaterial::PrivatePem(pem))),
        }
    }

    /// `[[token.verify_keys]]`: the keys that resolved, under kids of their own.
    fn verify_keys(&mut self, f: &file::TokenFile) -> Vec<KeySpec> {
        let mut verify = Vec::new();
        let mut kids = vec![f.kid.as_str()];
        for (i, vk) in f.verify_keys.iter().enumerate() {
            let prefix = format!("token.verify_keys[{i}]");
            // A key with a bad kid stays out of the ring, which would only report it again.
            let kid_ok = !vk.kid.is_empty() && !kids.contains(&vk.kid.as_str());
            if vk.kid.is_empty() {
                self.problem(format!("{prefix}.kid"), "required");
            } else if !kid_ok {
                self.problem(
                    format!("{prefix}.kid"),
                    format!("{:?} is already used by another key", vk.kid),
                );
            }
            kids.push(&vk.kid);
            let vk_alg = vk.algorithm.unwrap_or(f.algorithm);
            let material = self.verify_key_material(&prefix, vk, vk_alg);
            if let (Some(material), true) = (material, kid_ok) {
                verify.push(KeySpec {
                    kid: vk.kid.clone(),
                    algorithm: vk_alg.to_jwt(),
                    material,
                });
            }
        }
        verify
    }

    /// Exactly one source, the kind its algorithm takes.
    fn verify_key_material(
        &mut self,
        prefix: &str,
        vk: &file::VerifyKeyFile,
        vk_alg: file::AlgorithmName,
    ) -> Option<KeyMaterial> {
        let sources = [
            vk.secret_env.is_some(),
            vk.secret_file.is_some(),
            vk.public_key_file.is_some(),
        ];
        match sources.iter().filter(|s| **s).count() {
            0 => {
                let need = if vk_alg.is_symmetric() {
                    "secret_env or secret_file"
                } else {
                    "public_key_file"
                };
                self.problem(prefix, format!("needs {need}"));
                None
            }
            1 if vk_alg.is_symmetric() => self.verify_secret(prefix, vk, vk_alg),
            1 => self.verify_pem(prefix, vk, vk_alg),
            _ => {
                self.problem(
                    prefix,
                    "set only one of secret_env, secret_file, public_key_file",
                );
                None
            }
        }
    }

    /// An HS* verify key's one source: a secret, not a public key file.
    fn verify_secret(
        &mut self,
        prefix: &str,
        vk: &file::VerifyKeyFile,
        vk_alg: file::AlgorithmName,
    ) -> Option<KeyMaterial> {
        if vk.public_key_file.is_some() {
            self.problem(
                format!("{prefix}.public_key_file"),
                format!("not used by {vk_alg:?}; give secret_env or secret_file"),
            );
            None
        } else {
            self.secret(prefix, vk.secret_env.as_deref(), vk.secret_file.as_deref())
                .map(KeyMaterial::Secret)
        }
    }

    /// An asymmetric verify key's one source: a public key file, not a secret.
    fn verify_pem(
        &mut self,
        prefix: &str,
        vk: &file::VerifyKeyFile,
        vk_alg: file::AlgorithmName,
    ) -> Option<KeyMaterial> {
        match &vk.public_key_file {
            None => {
                let key = if vk.secret_env.is_some() {
                    "secret_env"
                } else {
                    "secret_file"
                };
                self.problem(
                    format!("{prefix}.{key}"),
                    format!("not used by {vk_alg:?}; give public_key_file"),
                );
                None
            }
            Some(path) => self
                .read(&format!("{prefix}.public_key_file"), path)
                .map(KeyMaterial::PublicPem),
        }
    }

    /// An HMAC secret from an env var or a file; `None` (with a problem) when it does not
    /// resolve or is too short. Messages name the variable or file, never the secret.
    pub(super) fn secret(
        &mut self,
        key_prefix: &str,
        env: Option<&str>,
        path: Option<&Path>,
    ) -> Option<Vec<u8>> {
        let (key, secret, from) = match (env, path) {
            (_, Some(path)) => {
                let key = format!("{key_prefix}.secret_file");
                let mut bytes = self.read(&key, path)?;
                // `echo secret > file` leaves a newline that is not part of the secret.
                if bytes.ends_with(b"\n") {
                    bytes.pop();
                    if bytes.ends_with(b"\r") {
                        bytes.pop();
                    }
                }
                (key, bytes, path.display().to_string())
            }
            (Some(""), None) => {
                let key = format!("{key_prefix}.secret_env");
                self.problem(key, "must name an environment variable");
                return None;
            }
            (Some(name), None) => {
                let key = format!("{key_prefix}.secret_env");
                let Some(value) = (self.env)(name) else {
                    self.problem(key, format!("environment variable {name} is not set"));
                    return None;
                };
                (key, value.into_bytes(), name.to_owned())
            }
            (None, None) => return None,
        };
        if secret.len() < MIN_SECRET_BYTES {
            self.problem(
                key,
                format!(
                    "the secret in {from} is {} bytes; at least {MIN_SECRET_BYTES} are needed",
                    secret.len()
                ),
            );
            return None;
        }
        Some(secret)
    }

    /// Each duration alone (format, whole seconds where a token field needs them, what the
    /// store can hold), then how they fit `access_ttl`.
    fn lifetimes(&mut self, f: &file::TokenFile) -> Lifetimes {
        let access_ttl = self.positive("token.access_ttl", &f.access_ttl);
        let access_ttl = self.whole_seconds("token.access_ttl", access_ttl, "a token's exp");
        let access_ttl = self.store_span("token.access_ttl", access_ttl);
        let refresh_ttl = self.duration("token.refresh_ttl", &f.refresh_ttl);
        let refresh_ttl = self.store_span("token.refresh_ttl", refresh_ttl);
        let max_lifetime = self.duration("token.max_lifetime", &f.max_lifetime);
        let max_lifetime = self.store_span("token.max_lifetime", max_lifetime);
        let silent_refresh_window =
            self.duration("token.silent_refresh_window", &f.silent_refresh_window);
        let silent_refresh_window = self.whole_seconds(
            "token.silent_refresh_window",
            silent_refresh_window,
            "the comparison with a token's exp",
        );
        let leeway = self.duration("token.leeway", &f.leeway);
        let leeway = self.whole_seconds("token.leeway", leeway, "the token verifier");
        let leeway = self.store_span("token.leeway", leeway);
        let times = Lifetimes {
            access_ttl,
            refresh_ttl,
            max_lifetime,
            silent_refresh_window,
            leeway,
        };
        if !access_ttl.is_zero() {
            self.lifetimes_fit_access_ttl(f, &times);
        }
        times
    }

    /// Refresh tokens outlive access tokens, the silent refresh window is shorter than one,
    /// and a lifetime cap holds at least one.
    fn lifetimes_fit_access_ttl(&mut self, f: &file::TokenFile, times: &Lifetimes) {
        let access_ttl = times.access_ttl;
        if times.refresh_ttl <= access_ttl && duration::parse(&f.refresh_ttl).is_ok() {
            self.problem(
                "token.refresh_ttl",
                format!("must be longer than access_ttl ({})", f.access_ttl),
            );
        }
        if times.silent_refresh_window >= access_ttl
            && duration::parse(&f.silent_refresh_window).is_ok()
        {
            self.problem(
                "token.silent_refresh_window",
                format!("must be shorter than access_ttl ({})", f.access_ttl),
            );
        }
        if !times.max_lifetime.is_zero() && times.max_lifetime < access_ttl {
            self.problem(
                "token.max_lifetime",
                format!(
                    "must be 0s (no cap) or at least access_ttl ({})",
                    f.access_ttl
                ),
            );
        }
    }

    /// `cookie = ""`: none; otherwise a valid cookie name.
    fn cookie(&mut self, name: &str) -> Option<String> {
        if name.is_empty() {
            return None;
        }
        if !name.bytes().all(is_tchar) {
            self.problem(
                "token.cookie",
                format!("{name:?} is not a valid cookie name"),
            );
        }
        Some(name.to_owned())
    }

    /// A ring without a signing key signs nothing (a warning), and needs a verify key to
    /// accept anything at all.
    fn no_signing_key(&mut self, no_verify_keys: bool) {
        self.warn(
            "token",
            "no signing key (login.backend = \"none\"): the gateway signs nothing, so no \
             token is silently refreshed",
        );
        if no_verify_keys {
            self.problem(
                "token.verify_keys",
                "without a signing key at least one verify key (or a [[token.issuers]] \
                 entry) is needed, or no token could ever be accepted",
            );
        }
    }
}

/// The refresh-token derivation key: HMAC-SHA256 of a fixed label under the signing key's bytes.
fn refresh_secret(material: &KeyMaterial) -> [u8; 32] {
    let bytes = match material {
        KeyMaterial::Secret(b) | KeyMaterial::PrivatePem(b) | KeyMaterial::PublicPem(b) => b,
    };
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes);
    let tag = aws_lc_rs::hmac::sign(&key, b"authgate refresh-token derivation key v1");
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// RFC 7230 `tchar`, which cookie names are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn each_rule_reports_its_key_path() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            // [token]: algorithm and signing key
            ("[token]\nalgorithm = \"none\"", "token.algorithm", "unknown value"),
            ("[token]\nalgorithm = \"PS256\"", "token.algorithm", "unknown value"),
            ("[token]\nsecret_env = \"NOT_SET\"", "token.secret_env", "NOT_SET is not set"),
            ("[token]\nsecret_env = \"SHORT_SECRET\"", "token.secret_env", "5 bytes"),
            ("[token]\nsecret_file = \"missing.key\"", "token.secret_file", "cannot read"),
            ("[token]\nsecret_file = \"short-secret.txt\"", "token.secret_file", "9 bytes"),
            (
                "[token]\nsecret_env = \"AUTHGATE_JWT_SECRET\"\nsecret_file = \"secret.txt\"",
                "token.secret_file",
                "not both",
            ),
            (
                "[token]\nprivate_key_file = \"ec-private.pem\"",
                "token.private_key_file",
                "not used by HS256",
            ),
            ("[token]\nalgorithm = \"ES256\"", "token.private_key_file", "required for ES256"),
            (
                "[token]\nalgorithm = \"EdDSA\"\nprivate_key_file = \"missing.pem\"",
                "token.private_key_file",
                "cannot read",
            ),
            (
                "[token]\nalgorithm = \"ES256\"\nprivate_key_file = \"ec-private.pem\"\nsecret_env = \"AUTHGATE_JWT_SECRET\"",
                "token.secret_env",
                "not used by ES256",
            ),
            ("[token]\nkid = \"\"", "token.kid", "must not be empty"),
            ("[token]\nsecret_env = \"\"", "token.secret_env", "must name an environment variable"),
            ("[token]\nissuer = \"\"", "token.issuer", "must not be empty"),
            ("[token]\naudience = \"\"", "token.audience", "must not be empty"),
            // [[token.verify_keys]]
            ("[[token.verify_keys]]\nkid = \"k0\"", "token.verify_keys[0]", "needs secret_env or secret_file"),
            (
                "[[token.verify_keys]]\nkid = \"k0\"\nsecret_env = \"OLD_SECRET\"\nsecret_file = \"secret.txt\"",
                "token.verify_keys[0]",
                "only one of",
            ),
            ("[[token.verify_keys]]\nsecret_env = \"OLD_SECRET\"", "token.verify_keys[0].kid", "required"),
            (
                "[[token.verify_keys]]\nkid = \"k1\"\nsecret_env = \"OLD_SECRET\"",
                "token.verify_keys[0].kid",
                "already used",
            ),
            (
                "[[token.verify_keys]]\nkid = \"k0\"\nsecret_env = \"GONE\"",
                "token.verify_keys[0].secret_env",
                "GONE is not set",
            ),
            (
                "[[token.verify_keys]]\nkid = \"k0\"\nsecret_file = \"short-secret.txt\"",
                "token.verify_keys[0].secret_file",
                "at least 32",
            ),
            (
                "[[token.verify_keys]]\nkid = \"k0\"\npublic_key_file = \"ec-public.pem\"",
                "token.verify_keys[0].public_key_file",
                "not used by HS256",
            ),
            (
                "[[token.verify_keys]]\nkid = \"k0\"\nalgorithm = \"ES256\"\nsecret_env = \"OLD_SECRET\"",
                "token.verify_keys[0].secret_env",
                "give public_key_file",
            ),
            (
                "[[token.verify_keys]]\nkid = \"k0\"\nalgorithm = \"ES256\"\npublic_key_file = \"nope.pem\"",
                "token.verify_keys[0].public_key_file",
                "cannot read",
            ),
            (
                "[[token.verify_keys]]\nkid = \"k0\"\nalgorithm = \"XS1\"\nsecret_env = \"OLD_SECRET\"",
                "token.verify_keys[0].algorithm",
                "unknown value",
            ),
            // [token]: lifetimes, headers, cookie
            ("[token]\naccess_ttl = \"0s\"", "token.access_ttl", "more than 0s"),
            ("[token]\naccess_ttl = \"2 hs\"", "token.access_ttl", "not a duration: unknown unit \"hs\""),
            ("[token]\nrefresh_ttl = \"1h\"", "token.refresh_ttl", "longer than access_ttl"),
            (
                "[token]\nsilent_refresh_window = \"2h\"",
                "token.silent_refresh_window",
                "shorter than access_ttl",
            ),
            ("[token]\nmax_lifetime = \"1h\"", "token.max_lifetime", "at least access_ttl"),
            ("[token]\nleeway = \"30\"", "token.leeway", "not a duration"),
            ("[token]\nrefresh_header = \"refresh token\"", "token.refresh_header", "not a valid header name"),
            ("[token]\ncookie = \"a b\"", "token.cookie", "not a valid cookie name"),
            // Durations a key cannot represent are refused, never cut (issue 15).
            ("[token]\nrefresh_ttl = \"3000001d\"", "token.refresh_ttl", "longer than the session store can represent"),
            ("[token]\nmax_lifetime = \"3000001d\"", "token.max_lifetime", "longer than the session store can represent"),
            ("[token]\naccess_ttl = \"1500ms\"\nsilent_refresh_window = \"1s\"", "token.access_ttl", "not a whole number of seconds"),
            ("[token]\nleeway = \"500ms\"", "token.leeway", "not a whole number of seconds"),
            ("[token]\nsilent_refresh_window = \"1500ms\"", "token.silent_refresh_window", "not a whole number of seconds"),
        ];
        assert_rules(cases);
    }

    #[test]
    fn asymmetric_signing_key_from_a_file() {
        let text = format!(
            "{MINIMAL}\n[token]\nalgorithm = \"ES256\"\nprivate_key_file = \"ec-private.pem\"\n"
        );
        let c = ok(&text).config;
        assert_eq!(c.token.keys.rules().issuer, "authgate");
    }

    /// `login.backend = "none"`: the signing key may be left out (the ring only verifies), and
    /// stateful mode is refused where no session could ever be found.
    #[test]
    fn without_a_login_the_signing_key_is_optional() {
        let none = "[login]\nbackend = \"none\"\n";
        let stateless = "[session]\nmode = \"stateless\"\n";
        let ec_verify = "[[token.verify_keys]]\nkid = \"idp\"\nalgorithm = \"ES256\"\npublic_key_file = \"ec-public.pem\"\n";
        let unset = "[token]\nsecret_env = \"NOT_SET\"\n";

        // No secret, a verify key, stateless: valid; nothing can be signed.
        let loaded = ok(&format!("{MINIMAL}\n{unset}{ec_verify}{stateless}{none}"));
        let keys = &loaded.config.token.keys;
        assert!(!keys.can_sign());
        assert_eq!(keys.verify_key_count(), 1);
        assert!(
            loaded.warnings.iter().any(|w| w.contains("signs nothing")),
            "{:?}",
            loaded.warnings
        );
        // Asymmetric without a private key file: the same.
        let rs = "[token]\nalgorithm = \"ES256\"\n";
        assert!(!ok(&format!("{MINIMAL}\n{rs}{ec_verify}{stateless}{none}"))
            .config
            .token
            .keys
            .can_sign());
        // A secret that is there is still used.
        assert!(ok(&format!("{MINIMAL}\n{stateless}{none}"))
            .config
            .token
            .keys
            .can_sign());
        // With a login backend the key is still required.
        let p = problems(&format!("{MINIMAL}\n{unset}"));
        assert!(p.iter().any(|p| p.key == "token.secret_env"), "{p:?}");
        // A key file that is named but missing is a problem even without a login.
        let p = problems(&format!(
            "{MINIMAL}\n[token]\nsecret_file = \"missing.key\"\n{ec_verify}{stateless}{none}"
        ));
        assert!(p.iter().any(|p| p.key == "token.secret_file"), "{p:?}");
        // No key at all: nothing could be accepted.
        let p = problems(&format!("{MINIMAL}\n{unset}{stateless}{none}"));
        assert!(p.iter().any(|p| p.key == "token.verify_keys"), "{p:?}");

        // Stateful without a login: refused on the memory store, with or without a key...
        for token in ["", unset] {
            let p = problems(&format!("{MINIMAL}\n{token}{ec_verify}{none}"));
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].key, "session.mode");
            assert!(p[0].message.contains("session_revoked"), "{p:?}");
        }
        // ...and accepted on a Redis store shared with the authgate that logs users in.
        let shared = "[session]\nstore = \"redis\"\n";
        assert!(!ok(&format!("{MINIMAL}\n{unset}{ec_verify}{shared}{none}"))
            .config
            .token
            .keys
            .can_sign());
        ok(&format!("{MINIMAL}\n{shared}{none}"));
    }
}
