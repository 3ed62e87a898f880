//! `authgate keygen` and `authgate hash-password`: key pairs as PEM, Argon2id PHC strings.
//!
//! [`keygen`] draws a fresh key pair with aws-lc-rs and writes `private.pem` (PKCS#8, mode 0600
//! on unix, never overwriting an existing file) and `public.pem` (SPKI) into a folder; the
//! same PEM text is available in memory from [`generate`] (tests, `authgate demo`).
//! [`hash_password`] writes the users file's PHC strings (checked by `login::users_file`): Argon2id
//! with the argon2 crate's defaults (m=19456 KiB, t=2, p=1), a random 128-bit salt per hash.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use jsonwebtoken::Algorithm;

use super::{KeyError, MIN_SECRET_BYTES};

/// The algorithm names `authgate keygen --alg` accepts (case-insensitive).
pub(crate) const KEYGEN_ALGORITHMS: &[&str] = &[
    "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
];

/// A freshly generated key pair as PEM text.
pub struct PemPair {
    /// PKCS#8 `PRIVATE KEY`.
    pub private_pem: String,
    /// X.509 SubjectPublicKeyInfo `PUBLIC KEY`.
    pub public_pem: String,
}

impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemPair")
            .field("private_pem", &"[redacted]")
            .field("public_pem", &self.public_pem)
            .finish()
    }
}

/// Parses a `--alg` value: the JWT names, case-insensitive, plus `Ed25519` for `EdDSA`.
pub(crate) fn parse_algorithm(alg: &str) -> Result<Algorithm, KeyError> {
    let upper = alg.trim().to_ascii_uppercase();
    Ok(match upper.as_str() {
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "EDDSA" | "ED25519" => Algorithm::EdDSA,
        "HS256" | "HS384" | "HS512" => {
            return Err(KeyError(format!(
                "{alg} uses a shared secret, not a key pair: put at least {MIN_SECRET_BYTES} \
                 random bytes in the variable named by token.secret_env (e.g. \
                 `openssl rand -base64 48`)"
            )))
        }
        _ => {
            return Err(KeyError(format!(
                "unknown algorithm {alg:?}; expected one of {}",
                KEYGEN_ALGORITHMS.join(", ")
            )))
        }
    })
}

/// Generates a key pair for `alg` (RSA: 2048 bits; ES256: P-256; ES384: P-384; EdDSA: Ed25519).
pub fn generate(alg: Algorithm) -> Result<PemPair, KeyError> {
    let failed = |what: &str| KeyError(format!("generating the {what} key failed"));
    let (private_der, public_der): (Vec<u8>, Vec<u8>) = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| failed("RSA"))?;
            let private = pair.as_der().map_err(|_| failed("RSA"))?;
            let public = pair.public_key().as_der().map_err(|_| failed("RSA"))?;
            (private.as_ref().to_vec(), public.as_ref().to_vec())
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            let signing = if alg == Algorithm::ES256 {
                &ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &ECDSA_P384_SHA384_FIXED_SIGNING
            };
            let pair = EcdsaKeyPair::generate(signing).map_err(|_| failed("EC"))?;
            let private = pair.to_pkcs8v1().map_err(|_| failed("EC"))?;
            let public = pair.public_key().as_der().map_err(|_| failed("EC"))?;
            (private.as_ref().to_vec(), public.as_ref().to_vec())
        }
        Algorithm::EdDSA => {
            let pair = Ed25519KeyPair::generate().map_err(|_| failed("Ed25519"))?;
            let private = pair.to_pkcs8v1().map_err(|_| failed("Ed25519"))?;
            let public = pair.public_key().as_der().map_err(|_| failed("Ed25519"))?;
            (private.as_ref().to_vec(), public.as_ref().to_vec())
        }
        other => {
            return Err(KeyError(format!(
                "{other:?} has no key pair; expected one of {}",
                KEYGEN_ALGORITHMS.join(", ")
            )))
        }
    };
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    Ok(PemPair {
        private_pem: pem::encode_config(&pem::Pem::new("PRIVATE KEY", private_der), config),
        public_pem: pem::encode_config(&pem::Pem::new("PUBLIC KEY", public_der), config),
    })
}

/// `authgate keygen`: writes `private.pem` (mode 0600) and `public.pem` into `out_dir`,
/// creating the folder if needed. Refuses to overwrite either file.
pub fn keygen(alg: &str, out_dir: &Path) -> Result<(), KeyError> {
    let alg = parse_algorithm(alg)?;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| KeyError(format!("cannot create {}: {e}", out_dir.display())))?;
    let private_path = out_dir.join("private.pem");
    let public_path = out_dir.join("public.pem");
    for path in [&private_path, &public_path] {
        if path.exists() {
            return Err(KeyError(format!(
                "{} already exists; remove it or choose another --out",
                path.display()
            )));
        }
    }
    let pair = generate(alg)?;
    write_new(&private_path, pair.private_pem.as_bytes(), 0o600)?;
    write_new(&public_path, pair.public_pem.as_bytes(), 0o644)?;
    Ok(())
}

/// Creates `path` (failing if it exists) with `mode` on unix, and writes `contents`.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .map_err(|e| KeyError(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| KeyError(format!("cannot write {}: {e}", path.display())))
}

/// `authgate hash-password`: an Argon2id PHC string (argon2 defaults: m=19456, t=2, p=1).
pub fn hash_password(password: &str) -> Result<String, KeyError> {
    if password.is_empty() {
        return Err(KeyError("the password is empty".into()));
    }
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| KeyError("the system random generator failed".into()))?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| KeyError(format!("cannot encode the salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| KeyError(format!("hashing failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHash, PasswordVerifier};

    /// What `login::users_file` does with a PHC string; a malformed string is `false`.
    fn verify_password(phc: &str, password: &str) -> bool {
        PasswordHash::new(phc).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    }

    #[test]
    fn keygen_writes_parseable_pems_for_every_algorithm() {
        for alg in ["ES256", "es384", "RS256", "EdDSA", "ed25519"] {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("keys");
            keygen(alg, &out).unwrap_or_else(|e| panic!("{alg}: {e}"));
            let private = std::fs::read(out.join("private.pem")).unwrap();
            let public = std::fs::read(out.join("public.pem")).unwrap();
            let private = pem::parse(&private).unwrap();
            let public = pem::parse(&public).unwrap();
            assert_eq!(private.tag(), "PRIVATE KEY", "{alg}");
            assert_eq!(public.tag(), "PUBLIC KEY", "{alg}");
            let parsed = parse_algorithm(alg).unwrap();
            let ok = match parsed {
                Algorithm::ES256 => {
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, private.contents())
                        .is_ok()
                }
                Algorithm::ES384 => {
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, private.contents())
                        .is_ok()
                }
                Algorithm::RS256 => RsaKeyPair::from_pkcs8(private.contents())
                    .map(|k| k.public_modulus_len() >= 256)
                    .unwrap_or(false),
                Algorithm::EdDSA => Ed25519KeyPair::from_pkcs8(private.contents()).is_ok(),
                _ => unreachable!(),
            };
            assert!(ok, "{alg}: private key does not parse back");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(out.join("private.pem"))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{alg}");
            }
        }
    }

    #[test]
    fn keygen_refuses_to_overwrite_and_rejects_unknown_algorithms() {
        let dir = tempfile::tempdir().unwrap();
        keygen("ES256", dir.path()).unwrap();
        let before = std::fs::read(dir.path().join("private.pem")).unwrap();
        let err = keygen("ES256", dir.path()).unwrap_err();
        assert!(err.0.contains("already exists"), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join("private.pem")).unwrap(),
            before
        );
        for bad in ["HS256", "none", "", "ES512"] {
            assert!(keygen(bad, dir.path()).is_err(), "{bad}");
        }
    }

    #[test]
    fn hash_password_makes_argon2id_with_default_params() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password(&phc, "correct horse"));
        assert!(!verify_password(&phc, "correct horsE"));
        assert!(!verify_password("not a phc string", "correct horse"));
        assert!(!verify_password("", ""));
        // A fresh salt each time.
        assert_ne!(phc, hash_password("correct horse").unwrap());
        assert!(hash_password("").is_err());
    }
}
