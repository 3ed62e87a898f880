//! The `users_file` login backend: `{"username", "password"}` checked against the Argon2 PHC
//! hashes of `users.toml`.
//!
//! Verification runs in `spawn_blocking` (an Argon2 hash takes tens of milliseconds of a core
//! and must never stall the runtime), at most one per CPU at a time (see
//! [`super::lockout::verify_slot`]). An unknown username is verified too, against a dummy hash
//! with the parameters most of the file's users have, so it costs what a wrong password costs
//! and answers the same `InvalidCredentials`: response time does not reveal which usernames
//! exist. The dummy is computed once per config snapshot, on the first unknown username.
//!
//! Argon2's memory (19 MiB a verification with the `hash-password` defaults) comes from a
//! process-wide pool of block buffers, one per verification running at a time, allocated on
//! first use and reused ever after. Left to the allocator, every verification allocated and
//! freed a block of that size on whichever blocking-pool thread ran it; glibc kept such blocks
//! in per-thread arenas, and the gateway's RSS moved by one block at a time as logins came and
//! went (the soak's RSS check, BENCHMARKS.md). The pool bounds that memory by the slot count
//! and spares each login the page faults of fresh memory.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

use super::{lockout, LoginIdentity, LoginOutcome};
use crate::config::User;

/// Login bodies above this size are refused (`400 bad_request`) without parsing.
pub(crate) use super::MAX_BODY_BYTES;

/// Parses `{"username": "...", "password": "..."}`: both required, non-empty strings; other
/// fields are ignored.
pub(super) fn parse_body(body: &[u8]) -> Result<(String, String), &'static str> {
    if body.len() > MAX_BODY_BYTES {
        return Err("the login body is too large");
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| "the login body must be JSON: {\"username\": ..., \"password\": ...}")?;
    let Some(obj) = value.as_object() else {
        return Err("the login body must be a JSON object: {\"username\": ..., \"password\": ...}");
    };
    let field = |name| {
        obj.get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    let username = field("username").ok_or("`username` must be a non-empty string")?;
    let password = field("password").ok_or("`password` must be a non-empty string")?;
    Ok((username.to_owned(), password.to_owned()))
}

/// The users of one config snapshot and how to verify them.
pub(crate) struct UsersFile {
    users: Arc<HashMap<String, User>>,
    /// The users' ids, for the refresh's "does this user still exist" (the map is keyed by
    /// username).
    ids: HashSet<String>,
    /// A PHC hash with the users' usual parameters, for unknown usernames; made on first use.
    dummy: Arc<OnceLock<Option<String>>>,
    slots: Arc<Semaphore>,
    queue_wait: Duration,
    #[cfg(test)]
    verifications: Arc<std::sync::atomic::AtomicUsize>,
}

impl UsersFile {
    /// Uses the process-wide Argon2 slots ([`lockout::verify_slots`]).
    pub(crate) fn new(users: &HashMap<String, User>) -> Self {
        Self::with_slots(users, lockout::verify_slots(), lockout::VERIFY_QUEUE_WAIT)
    }

    /// With its own semaphore and queue wait (tests).
    pub(crate) fn with_slots(
        users: &HashMap<String, User>,
        slots: Arc<Semaphore>,
        queue_wait: Duration,
    ) -> Self {
        Self {
            users: Arc::new(users.clone()),
            ids: users.values().map(|u| u.id.clone()).collect(),
            dummy: Arc::new(OnceLock::new()),
            slots,
            queue_wait,
            #[cfg(test)]
            verifications: Default::default(),
        }
    }

    /// Is there a user with this id (not username)?
    pub(crate) fn has_user_id(&self, user_id: &str) -> bool {
        self.ids.contains(user_id)
    }

    pub(crate) async fn authenticate(&self, body: &[u8]) -> LoginOutcome {
        let (username, password) = match parse_body(body) {
            Ok(c) => c,
            Err(why) => return LoginOutcome::BadRequest(why),
        };
        let Some(permit) = lockout::verify_slot(&self.slots, self.queue_wait).await else {
            crate::logs::scope::note(
                tracing::Level::WARN,
                "login refused: no Argon2 slot came free in time (login flood?)",
            );
            return LoginOutcome::Busy;
        };
        let users = self.users.clone();
        let dummy = self.dummy.clone();
        #[cfg(test)]
        let counter = self.verifications.clone();
        let verified = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            #[cfg(test)]
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match users.get(&username) {
                Some(user) => verify(&user.password_hash, &password).then(|| user.clone()),
                None => {
                    if let Some(hash) = dummy.get_or_init(|| dummy_hash(&users)) {
                        // Same work as a real user; the result does not matter.
                        let _ = verify(hash, &password);
                    }
                    None
                }
            }
        })
        .await;
        match verified {
            Ok(Some(user)) => LoginOutcome::Success(LoginIdentity {
                user_id: user.id,
                user_name: user.username,
                tenant: user.tenant,
                roles: user.roles,
                upstream_body: None,
                set_cookies: Vec::new(),
            }),
            Ok(None) => LoginOutcome::InvalidCredentials,
            Err(e) => {
                // Only a panic inside argon2 gets here; answer as for a wrong password.
                tracing::error!(error = %e, "password verification task failed");
                LoginOutcome::InvalidCredentials
            }
        }
    }

    /// Argon2 verifications run so far (unknown usernames included).
    #[cfg(test)]
    pub(super) fn verifications(&self) -> usize {
        self.verifications.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Argon2 block buffers kept between verifications: at most one per verification running at
/// a time (the slots bound that), each as large as the largest parameters it has served.
static MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Does `password` match the PHC string `hash`? The algorithm, version and parameters come
/// from the hash itself. Runs Argon2 in a buffer of [`MEMORY`].
fn verify(hash: &str, password: &str) -> bool {
    verify_pooled(&MEMORY, hash, password)
}

/// [`verify`] with the buffers of `pool`.
fn verify_pooled(pool: &Mutex<Vec<Vec<Block>>>, hash: &str, password: &str) -> bool {
    // A panic elsewhere while holding the lock leaves the buffers as good as they were.
    let kept = || {
        pool.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let mut memory = kept().pop().unwrap_or_default();
    let matched = verify_in(hash, password, &mut memory);
    kept().push(memory);
    match matched {
        Ok(matched) => matched,
        Err(e) => {
            // The config validated every hash; this is a bug, not a login failure.
            tracing::error!(error = %e, "a users file password hash cannot be verified");
            false
        }
    }
}

/// What argon2's `PasswordVerifier` does (the hash recomputed with the PHC string's algorithm,
/// version, parameters and salt, then compared in constant time by [`Output`]'s `==`), with
/// the blocks in `memory`, which grows to the parameters' size and keeps it.
fn verify_in(
    hash: &str,
    password: &str,
    memory: &mut Vec<Block>,
) -> Result<bool, argon2::password_hash::Error> {
    use argon2::password_hash::Error;
    let parsed = PasswordHash::new(hash)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(Error::PhcStringField);
    };
    let algorithm = Algorithm::try_from(parsed.algorithm)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let params = Params::try_from(&parsed)?;
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes)?;
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let computed = Output::init_with(expected.len(), |out| {
        argon
            .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks])
            .map_err(Error::from)
    })?;
    Ok(computed == expected)
}

/// A hash of a fixed password with the parameters (algorithm, version, m/t/p, output length,
/// salt length) most users of the file have; ties go to the costliest. Without users (or if
/// it cannot be made): the `hash-password` defaults.
fn dummy_hash(users: &HashMap<String, User>) -> Option<String> {
    // Group by the parameter part of the PHC string (all but salt and hash), counting users
    // and remembering one hash of each group as the model.
    let mut groups: HashMap<&str, (usize, u64, &str)> = HashMap::new();
    for u in users.values() {
        let Ok(parsed) = PasswordHash::new(&u.password_hash) else {
            continue;
        };
        let cost = argon2::Params::try_from(&parsed).map_or(0, |p| {
            u64::from(p.m_cost()) * u64::from(p.t_cost()) * u64::from(p.p_cost())
        });
        let shape = u.password_hash.rsplitn(3, '$').nth(2).unwrap_or("");
        groups.entry(shape).or_insert((0, cost, &u.password_hash)).0 += 1;
    }
    let model = groups
        .into_values()
        .max_by_key(|&(n, cost, _)| (n, cost))
        .map(|(_, _, hash)| hash);
    let made = match model.and_then(|h| PasswordHash::new(h).ok()) {
        Some(model) => {
            let salt_len = model.salt.map_or(16, |s| s.len());
            let salt = SaltString::from_b64(&"A".repeat(salt_len));
            let params = argon2::Params::try_from(&model);
            match (salt, params) {
                (Ok(salt), Ok(params)) => Argon2::default()
                    .hash_password_customized(
                        b"authgate-dummy-password",
                        Some(model.algorithm),
                        model.version,
                        params,
                        &salt,
                    )
                    .map(|h| h.to_string()),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        None => SaltString::from_b64("AAAAAAAAAAAAAAAAAAAAAA").and_then(|salt| {
            Argon2::default()
                .hash_password(b"authgate-dummy-password", &salt)
                .map(|h| h.to_string())
        }),
    };
    match made {
        Ok(hash) => Some(hash),
        Err(e) => {
            // Unknown usernames then answer faster than wrong passwords; say so loudly.
            tracing::error!(error = %e, "cannot make the dummy hash for unknown usernames");
            None
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A PHC hash with cheap parameters (m=256 KiB, t=1, p=1).
    pub(crate) fn cheap_hash(password: &str) -> String {
        let params = argon2::Params::new(256, 1, 1, None).expect("valid params");
        let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0c2FsdA").expect("valid salt");
        argon
            .hash_password(password.as_bytes(), &salt)
            .expect("hashes")
            .to_string()
    }

    pub(crate) fn users() -> HashMap<String, User> {
        let mut users = HashMap::new();
        users.insert(
            "alice".to_owned(),
            User {
                id: "1001".into(),
                username: "alice".into(),
                password_hash: cheap_hash("correct horse"),
                tenant: Some("acme".into()),
                roles: vec!["admin".into(), "ops".into()],
            },
        );
        users.insert(
            "bob".to_owned(),
            User {
                id: "1002".into(),
                username: "bob".into(),
                password_hash: cheap_hash("battery staple"),
                tenant: None,
                roles: vec![],
            },
        );
        users
    }

    #[tokio::test]
    async fn right_password_gives_the_identity() {
        let b = UsersFile::new(&users());
        let LoginOutcome::Success(id) = b
            .authenticate(br#"{"username":"alice","password":"correct horse"}"#)
            .await
        else {
            panic!("expected success");
        };
        assert_eq!(id.user_id, "1001");
        assert_eq!(id.user_name, "alice");
        assert_eq!(id.tenant.as_deref(), Some("acme"));
        assert_eq!(id.roles, ["admin", "ops"]);
        assert!(id.upstream_body.is_none());
        let LoginOutcome::Success(id) = b
            .authenticate(br#"{"password":"battery staple","username":"bob","extra":1}"#)
            .await
        else {
            panic!("expected success");
        };
        assert_eq!(
            (id.user_id.as_str(), id.tenant, id.roles.len()),
            ("1002", None, 0)
        );
    }

    #[tokio::test]
    async fn wrong_password_and_unknown_user_both_verify_and_answer_the_same() {
        let b = UsersFile::new(&users());
        let wrong = b
            .authenticate(br#"{"username":"alice","password":"wrong"}"#)
            .await;
        assert!(matches!(wrong, LoginOutcome::InvalidCredentials));
        assert_eq!(b.verifications(), 1);
        let unknown = b
            .authenticate(br#"{"username":"mallory","password":"correct horse"}"#)
            .await;
        assert!(matches!(unknown, LoginOutcome::InvalidCredentials));
        assert_eq!(b.verifications(), 2, "an unknown user runs Argon2 too");
        // Usernames are matched exactly.
        let case = b
            .authenticate(br#"{"username":"Alice","password":"correct horse"}"#)
            .await;
        assert!(matches!(case, LoginOutcome::InvalidCredentials));
        assert_eq!(b.verifications(), 3);
    }

    #[test]
    fn verifying_in_a_kept_buffer_answers_as_argon2s_own_verifier() {
        use argon2::PasswordVerifier;
        let hash_with = |algorithm, version, m, t, p, out: usize, salt: &str| {
            let params = Params::new(m, t, p, Some(out)).expect("valid params");
            Argon2::new(algorithm, version, params)
                .hash_password(b"correct horse", &SaltString::from_b64(salt).unwrap())
                .unwrap()
                .to_string()
        };
        let hashes = [
            hash_with(
                Algorithm::Argon2id,
                Version::V0x13,
                256,
                1,
                1,
                32,
                "c2FsdHNhbHRzYWx0c2FsdA",
            ),
            hash_with(
                Algorithm::Argon2i,
                Version::V0x13,
                512,
                2,
                2,
                16,
                "c2FsdHNhbHQ",
            ),
            hash_with(
                Algorithm::Argon2d,
                Version::V0x10,
                64,
                3,
                1,
                64,
                "bG9uZ2VyLXNhbHQtb2YtdHdlbnR5LWZvdXI",
            ),
            cheap_hash("correct horse"),
        ];
        let mut memory = Vec::new();
        for hash in &hashes {
            let parsed = PasswordHash::new(hash).unwrap();
            for password in ["correct horse", "correct horsf", "", "correct horse "] {
                let theirs = Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok();
                assert_eq!(
                    verify_in(hash, password, &mut memory),
                    Ok(theirs),
                    "{hash} {password:?}"
                );
                assert_eq!(theirs, password == "correct horse");
            }
        }
        // The buffer grew to the largest parameters (512 KiB) and no further.
        assert_eq!(memory.len(), 512);
        // A hash that is not one answers an error, not a match.
        assert!(verify_in("$argon2id$v=19$m=256,t=1,p=1$c2FsdA", "x", &mut memory).is_err());
        assert!(verify_in("$argon2id$v=19$m=256,t=1,p=1", "x", &mut memory).is_err());
    }

    #[test]
    fn verifications_reuse_the_pools_buffers() {
        let pool = Mutex::new(Vec::new());
        let hash = cheap_hash("correct horse");
        assert!(verify_pooled(&pool, &hash, "correct horse"));
        let buffers = |pool: &Mutex<Vec<Vec<Block>>>| {
            let kept = pool.lock().unwrap();
            kept.iter().map(|b| b.as_ptr()).collect::<Vec<_>>()
        };
        let first = buffers(&pool);
        assert_eq!(first.len(), 1, "the buffer went back to the pool");
        assert!(!verify_pooled(&pool, &hash, "wrong"));
        assert!(verify_pooled(&pool, &hash, "correct horse"));
        let after = buffers(&pool);
        assert_eq!(after, first, "the same buffer served every verification");
        assert_eq!(pool.lock().unwrap()[0].len(), 256);
        // Two at a time: two buffers, both kept.
        std::thread::scope(|s| {
            let pool = &pool;
            let hash = &hash;
            let a = s.spawn(move || verify_pooled(pool, hash, "correct horse"));
            let b = s.spawn(move || verify_pooled(pool, hash, "correct horse"));
            assert!(a.join().unwrap() && b.join().unwrap());
        });
        let n = pool.lock().unwrap().len();
        assert!((1..=2).contains(&n), "{n}");
    }

    #[test]
    fn the_dummy_hash_has_the_users_parameters() {
        let dummy = dummy_hash(&users()).expect("made");
        let parsed = PasswordHash::new(&dummy).unwrap();
        let model_hash = cheap_hash("x");
        let model = PasswordHash::new(&model_hash).unwrap();
        assert_eq!(parsed.algorithm, model.algorithm);
        assert_eq!(parsed.version, model.version);
        assert_eq!(parsed.params, model.params);
        assert_eq!(parsed.hash.unwrap().len(), model.hash.unwrap().len());
        assert_eq!(parsed.salt.unwrap().len(), model.salt.unwrap().len());
        // Without users: the hash-password defaults.
        let default = dummy_hash(&HashMap::new()).expect("made");
        assert!(
            default.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{default}"
        );
    }

    #[tokio::test]
    async fn bad_bodies_are_bad_requests_without_verifying() {
        let b = UsersFile::new(&users());
        let big = format!(
            r#"{{"username":"alice","password":"{}"}}"#,
            "x".repeat(MAX_BODY_BYTES)
        );
        for body in [
            "",
            "not json",
            "{",
            "[]",
            "\"alice\"",
            "null",
            "{}",
            r#"{"username":"alice"}"#,
            r#"{"password":"x"}"#,
            r#"{"username":"","password":"x"}"#,
            r#"{"username":"alice","password":""}"#,
            r#"{"username":1001,"password":"x"}"#,
            r#"{"username":"alice","password":123}"#,
            r#"{"username":["alice"],"password":"x"}"#,
            r#"{"username":"alice","password":null}"#,
            big.as_str(),
        ] {
            let out = b.authenticate(body.as_bytes()).await;
            assert!(
                matches!(out, LoginOutcome::BadRequest(_)),
                "{:?}",
                &body[..body.len().min(60)]
            );
        }
        assert_eq!(b.verifications(), 0);
    }

    #[tokio::test]
    async fn no_free_slot_in_time_is_busy() {
        let slots = Arc::new(Semaphore::new(0));
        let b = UsersFile::with_slots(&users(), slots, Duration::from_millis(20));
        let out = b
            .authenticate(br#"{"username":"alice","password":"correct horse"}"#)
            .await;
        assert!(matches!(out, LoginOutcome::Busy));
        assert_eq!(b.verifications(), 0);
    }
}
