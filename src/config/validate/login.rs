//! `[login]`, `[login.lockout]`, `[login.captcha]` and the users file: the endpoint prefix,
//! the credential backend (the users file, checked user by user, or the legacy app's own login
//! with its JSON pointers), lock-out limits, when a captcha is asked, and where a login body
//! names the user.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::{duration, non_canonical, Cx};
use crate::config::{
    file, Captcha, CaptchaMode, Lockout, Login, LoginBackend, SuccessRule, UpstreamLogin, User,
};

/// The shortest and longest life of a captcha challenge: shorter than a person needs to read
/// and type it, or so long that a flood of challenges piles up in the store.
const CAPTCHA_TTL: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(10)..=Duration::from_secs(3600);

/// `after_failures` when left out.
const CAPTCHA_AFTER_FAILURES: i64 = 3;

/// Where every problem of the users file is reported.
const USERS_FILE_KEY: &str = "login.users_file";

impl Cx<'_> {
    pub(super) fn login(&mut self, f: &file::LoginFile) -> Login {
        let p = &f.prefix;
        if !p.starts_with('/') || p == "/" || p.ends_with('/') {
            self.problem(
                "login.prefix",
                format!("{p:?} must start with `/`, not end with one, and not be `/` alone"),
            );
        } else if let Some(why) = non_canonical(p) {
            self.problem("login.prefix", why);
        }
        let backend = match f.backend {
            file::BackendName::None => LoginBackend::None,
            file::BackendName::UsersFile => {
                let path = self.resolve(&f.users_file);
                let users = self.users(&f.users_file);
                LoginBackend::UsersFile { path, users }
            }
            file::BackendName::Upstream => LoginBackend::Upstream(self.upstream_login(f)),
        };
        if f.backend != file::BackendName::Upstream {
            self.warn_upstream_keys_ignored(f);
        }
        let lockout = self.lockout(&f.lockout);
        let captcha = self.captcha(&f.captcha, &lockout, f.backend);
        let username_pointer = self.username_pointer(f);
        Login {
            prefix: p.clone(),
            username_pointer,
            backend,
            lockout,
            captcha,
        }
    }

    /// `[login.captcha]`: the mode, its threshold and the life of a challenge.
    ///
    /// With `after_failures`, the threshold must be reachable: a username is locked once its
    /// failures reach `login.lockout.max_failures` (and its count starts again after the
    /// lock), so a threshold at or above that limit never asks the captcha for a username,
    /// only for an IP (below `max_failures_per_ip`): a warning. At or above both limits the
    /// captcha could never be asked at all: a problem, since the user evidently expects one.
    fn captcha(
        &mut self,
        c: &file::CaptchaFile,
        lockout: &Lockout,
        backend: file::BackendName,
    ) -> Captcha {
        let key = "login.captcha.ttl";
        let before = self.problems.len();
        let ttl = self.duration(key, &c.ttl);
        if self.problems.len() == before && !CAPTCHA_TTL.contains(&ttl) {
            self.problem(
                key,
                format!(
                    "{} is outside {} to {}: a person needs time to answer, and every live challenge is kept in the store",
                    duration::format(ttl),
                    duration::format(*CAPTCHA_TTL.start()),
                    duration::format(*CAPTCHA_TTL.end())
                ),
            );
        }
        let mode = match c.mode {
            file::CaptchaModeName::Off => CaptchaMode::Off,
            file::CaptchaModeName::Always => CaptchaMode::Always,
            file::CaptchaModeName::AfterFailures => {
                let n = self.count(
                    "login.captcha.after_failures",
                    c.after_failures.unwrap_or(CAPTCHA_AFTER_FAILURES),
                );
                self.captcha_reachable(n, lockout);
                CaptchaMode::AfterFailures(n)
            }
        };
        if c.mode != file::CaptchaModeName::AfterFailures && c.after_failures.is_some() {
            self.warn(
                "login.captcha.after_failures",
                "ignored: login.captcha.mode is not \"after_failures\"",
            );
        }
        if mode != CaptchaMode::Off && backend == file::BackendName::None {
            self.warn(
                "login.captcha.mode",
                "ignored: login.backend = \"none\" offers no login",
            );
        }
        Captcha { mode, ttl }
    }

    /// Can `after_failures = n` ever be reached before the lock-out locks (see
    /// [`Self::captcha`])?
    fn captcha_reachable(&mut self, n: u32, lockout: &Lockout) {
        let (user, ip) = (lockout.max_failures, lockout.max_failures_per_ip);
        let key = "login.captcha.after_failures";
        if n >= user && n >= ip {
            self.problem(
                key,
                format!(
                    "{n} is never reached: login.lockout locks a username at {user} failures and an IP at {ip}, so the captcha would never be asked; set it below {}",
                    user.max(ip)
                ),
            );
        } else if n >= user {
            self.warn(
                key,
                format!(
                    "{n} is at or above login.lockout.max_failures ({user}): a username is locked before it needs the captcha, so only an IP's failures (below max_failures_per_ip = {ip}) ask for one; set it below {user} to ask a username too"
                ),
            );
        }
    }

    /// The upstream backend's keys, set while another backend is chosen.
    fn warn_upstream_keys_ignored(&mut self, f: &file::LoginFile) {
        for (key, set) in [
            ("login.upstream_url", f.upstream_url.is_some()),
            ("login.user_id_pointer", f.user_id_pointer.is_some()),
            ("login.user_name_pointer", f.user_name_pointer.is_some()),
            ("login.tenant_pointer", f.tenant_pointer.is_some()),
            ("login.roles_pointer", f.roles_pointer.is_some()),
            ("login.success_pointer", f.success_pointer.is_some()),
            ("login.success_value", f.success_value.is_some()),
        ] {
            if set {
                self.warn(key, "ignored: login.backend is not \"upstream\"");
            }
        }
    }

    fn lockout(&mut self, l: &file::LockoutFile) -> Lockout {
        Lockout {
            max_failures: self.count("login.lockout.max_failures", l.max_failures),
            max_failures_per_ip: self
                .count("login.lockout.max_failures_per_ip", l.max_failures_per_ip),
            window: {
                let d = self.positive("login.lockout.window", &l.window);
                self.store_span("login.lockout.window", d)
            },
            duration: {
                let d = self.positive("login.lockout.duration", &l.duration);
                self.store_span("login.lockout.duration", d)
            },
        }
    }

    /// Only the upstream backend's body has a shape to configure; the users file's names the
    /// user in `username`.
    fn username_pointer(&mut self, f: &file::LoginFile) -> String {
        match (&f.backend, &f.username_pointer) {
            (file::BackendName::Upstream, Some(p)) => {
                self.json_pointer("login.username_pointer", p)
            }
            (_, Some(_)) => {
                self.warn(
                    "login.username_pointer",
                    "ignored: the users file's login body names the user in \"username\"",
                );
                "/username".to_owned()
            }
            (_, None) => "/username".to_owned(),
        }
    }

    /// Reads and checks the users file; every problem goes under `login.users_file`.
    fn users(&mut self, path: &Path) -> HashMap<String, User> {
        let shown = path.display().to_string();
        let mut users = HashMap::new();
        let Some(parsed) = self.users_file(path, &shown) else {
            return users;
        };
        if parsed.users.is_empty() {
            self.warn(
                USERS_FILE_KEY,
                format!("{shown} has no users: nobody can log in"),
            );
        }
        for (i, u) in parsed.users.iter().enumerate() {
            let at = format!("{shown}: users[{i}]");
            self.check_user(&at, u);
            if u.username.is_empty() {
                continue;
            }
            if users.contains_key(&u.username) {
                self.problem(
                    USERS_FILE_KEY,
                    format!("{at}.username: {:?} appears more than once", u.username),
                );
                continue;
            }
            users.insert(
                u.username.clone(),
                User {
                    id: u.id.clone(),
                    username: u.username.clone(),
                    password_hash: u.password_hash.clone(),
                    tenant: u.tenant.clone(),
                    roles: u.roles.clone(),
                },
            );
        }
        users
    }

    /// The users file parsed, as far as it goes (`shown` names it in messages).
    fn users_file(&mut self, path: &Path, shown: &str) -> Option<file::UsersFile> {
        let bytes = self.read(USERS_FILE_KEY, path)?;
        let Ok(text) = String::from_utf8(bytes) else {
            self.problem(USERS_FILE_KEY, format!("{shown}: not UTF-8 text"));
            return None;
        };
        let (parsed, problems) = file::parse_lenient::<file::UsersFile>(&text);
        for p in problems {
            self.problem(USERS_FILE_KEY, format!("{shown}: {p}"));
        }
        parsed
    }

    /// One user (`at` names it): the required fields, the password hash, and the values
    /// that become identity headers.
    fn check_user(&mut self, at: &str, u: &file::UserFile) {
        for (field, value) in [
            ("id", &u.id),
            ("username", &u.username),
            ("password_hash", &u.password_hash),
        ] {
            if value.is_empty() {
                self.problem(USERS_FILE_KEY, format!("{at}.{field}: required"));
            }
        }
        if !u.password_hash.is_empty() {
            if let Err(why) = check_password_hash(&u.password_hash) {
                self.problem(USERS_FILE_KEY, format!("{at}.password_hash: {why}"));
            }
        }
        // They become identity headers (contract §4.4): refused here, never trimmed.
        let values = [
            ("id", Some(&u.id)),
            ("username", Some(&u.username)),
            ("tenant", u.tenant.as_ref()),
        ];
        for (field, v) in values {
            if let Some(why) = v.and_then(|v| crate::tokens::identity_value_problem(v)) {
                self.problem(USERS_FILE_KEY, format!("{at}.{field}: {why}"));
            }
        }
        for (j, role) in u.roles.iter().enumerate() {
            if let Some(why) = crate::tokens::identity_value_problem(role) {
                self.problem(USERS_FILE_KEY, format!("{at}.roles[{j}]: {why}"));
            }
        }
        if u.tenant.as_deref() == Some("") {
            self.problem(
                USERS_FILE_KEY,
                format!("{at}.tenant: must not be empty (leave it out instead)"),
            );
        }
        for (j, role) in u.roles.iter().enumerate() {
            if role.is_empty() || role.contains(',') {
                self.problem(
                    USERS_FILE_KEY,
                    format!("{at}.roles[{j}]: must be non-empty and without `,`"),
                );
            }
        }
    }

    fn upstream_login(&mut self, f: &file::LoginFile) -> UpstreamLogin {
        let url = self.login_url(f.upstream_url.as_deref());
        let user_id_pointer = match &f.user_id_pointer {
            None => {
                self.problem(
                    "login.user_id_pointer",
                    "required when login.backend is \"upstream\"",
                );
                String::new()
            }
            Some(p) => self.json_pointer("login.user_id_pointer", p),
        };
        let success = self.success_rule(f);
        let mut optional =
            |key: &str, p: &Option<String>| p.as_ref().map(|p| self.json_pointer(key, p));
        UpstreamLogin {
            url,
            user_id_pointer,
            user_name_pointer: optional("login.user_name_pointer", &f.user_name_pointer),
            tenant_pointer: optional("login.tenant_pointer", &f.tenant_pointer),
            roles_pointer: optional("login.roles_pointer", &f.roles_pointer),
            success,
        }
    }

    /// `upstream_url`: required, `http://` or `https://` with a host.
    fn login_url(&mut self, url: Option<&str>) -> http::Uri {
        match url {
            None => {
                self.problem(
                    "login.upstream_url",
                    "required when login.backend is \"upstream\"",
                );
                http::Uri::default()
            }
            Some(text) => match text.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.authority().is_some_and(|a| !a.host().is_empty()) =>
                {
                    uri
                }
                _ => {
                    self.problem(
                        "login.upstream_url",
                        format!("{text:?} is not an http:// or https:// URL"),
                    );
                    http::Uri::default()
                }
            },
        }
    }

    /// `success_pointer` and `success_value`: both or neither; the value a scalar.
    fn success_rule(&mut self, f: &file::LoginFile) -> Option<SuccessRule> {
        match (&f.success_pointer, &f.success_value) {
            (None, None) => None,
            (Some(_), None) => {
                self.problem(
                    "login.success_value",
                    "required with success_pointer: the value a successful login answers there",
                );
                None
            }
            (None, Some(_)) => {
                self.problem(
                    "login.success_pointer",
                    "required with success_value: where in the answer to look for it",
                );
                None
            }
            (Some(p), Some(v)) => {
                let pointer = self.json_pointer("login.success_pointer", p);
                match serde_json::to_value(v) {
                    Ok(value) if !value.is_object() && !value.is_array() => {
                        Some(SuccessRule { pointer, value })
                    }
                    _ => {
                        self.problem("login.success_value", "must be a string, number or boolean");
                        None
                    }
                }
            }
        }
    }

    fn json_pointer(&mut self, key: &str, p: &str) -> String {
        if !is_json_pointer(p) {
            self.problem(
                key,
                format!("{p:?} is not a JSON pointer such as \"/data/id\" (starts with `/`; `~` only as ~0 or ~1)"),
            );
        }
        p.to_owned()
    }
}

/// RFC 6901, non-empty: `/a/b~1c`.
fn is_json_pointer(p: &str) -> bool {
    if !p.starts_with('/') {
        return false;
    }
    let bytes = p.as_bytes();
    bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b != b'~' || matches!(bytes.get(i + 1), Some(b'0' | b'1')))
}

/// A PHC string the login phase can verify: `$argon2id$v=19$m=...,t=...,p=...$salt$hash`.
fn check_password_hash(hash: &str) -> Result<(), &'static str> {
    let parsed = argon2::PasswordHash::new(hash)
        .map_err(|_| "not a PHC string such as \"$argon2id$v=19$m=19456,t=2,p=1$...\"")?;
    if argon2::Algorithm::try_from(parsed.algorithm).is_err() {
        return Err("not an Argon2 hash (argon2id, argon2i or argon2d); make one with `authgate hash-password`");
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("has no salt or no hash part");
    }
    argon2::Params::try_from(&parsed).map_err(|_| "its Argon2 parameters are not valid")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn each_rule_reports_its_key_path() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            // [login]
            ("[login]\nprefix = \"auth\"", "login.prefix", "start with `/`"),
            ("[login]\nprefix = \"/auth/\"", "login.prefix", "not end with one"),
            ("[login]\nprefix = \"/\"", "login.prefix", "not be `/` alone"),
            ("[login]\nprefix = \"/a//b\"", "login.prefix", "not canonical"),
            ("[login]\nbackend = \"ldap\"", "login.backend", "unknown value"),
            ("[login]\nusers_file = \"nobody.toml\"", "login.users_file", "/nobody.toml: "),
            ("[login]\nusers_file = \"ec-public.pem\"", "login.users_file", "ec-public.pem: line 1"),
            ("[login]\nusers_file = \"users-bad.toml\"", "login.users_file", "appears more than once"),
            ("[login]\nusers_file = \"users-bad.toml\"", "login.users_file", "users[2].password_hash: not a PHC string"),
            ("[login]\nusers_file = \"users-bad.toml\"", "login.users_file", "users[3].id: required"),
            (
                "[login]\nbackend = \"upstream\"\nuser_id_pointer = \"/id\"",
                "login.upstream_url",
                "required",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"ftp://legacy/login\"\nuser_id_pointer = \"/id\"",
                "login.upstream_url",
                "not an http:// or https:// URL",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"http://127.0.0.1:9000/login\"",
                "login.user_id_pointer",
                "required",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"http://127.0.0.1:9000/login\"\nuser_id_pointer = \"/id\"\nsuccess_pointer = \"/code\"",
                "login.success_value",
                "required with success_pointer",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"http://127.0.0.1:9000/login\"\nuser_id_pointer = \"/id\"\nsuccess_value = 0",
                "login.success_pointer",
                "required with success_value",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"http://127.0.0.1:9000/login\"\nuser_id_pointer = \"/id\"\nsuccess_pointer = \"code\"\nsuccess_value = 0",
                "login.success_pointer",
                "not a JSON pointer",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"http://127.0.0.1:9000/login\"\nuser_id_pointer = \"/id\"\nsuccess_pointer = \"/code\"\nsuccess_value = [0]",
                "login.success_value",
                "string, number or boolean",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"http://127.0.0.1:9000/login\"\nuser_id_pointer = \"data.id\"",
                "login.user_id_pointer",
                "not a JSON pointer",
            ),
            (
                "[login]\nbackend = \"upstream\"\nupstream_url = \"http://127.0.0.1:9000/login\"\nuser_id_pointer = \"/id\"\nroles_pointer = \"/a~2b\"",
                "login.roles_pointer",
                "not a JSON pointer",
            ),
            ("[login.lockout]\nmax_failures = 0", "login.lockout.max_failures", "from 1"),
            ("[login.lockout]\nmax_failures_per_ip = -3", "login.lockout.max_failures_per_ip", "from 1"),
            ("[login.lockout]\nwindow = \"0s\"", "login.lockout.window", "more than 0s"),
            ("[login.lockout]\nduration = \"10\"", "login.lockout.duration", "not a duration"),
            // Durations a key cannot represent are refused, never cut (issue 15). Below 1 ms
            // is not a duration at all (the store keeps milliseconds).
            ("[login.lockout]\nwindow = \"900us\"", "login.lockout.window", "not a duration"),
            ("[login.lockout]\nwindow = \"3000001d\"", "login.lockout.window", "longer than the session store can represent"),
            ("[login.lockout]\nduration = \"3000001d\"", "login.lockout.duration", "longer than the session store can represent"),
            // [login.captcha]
            ("[login.captcha]\nmode = \"sometimes\"", "login.captcha.mode", "unknown value"),
            ("[login.captcha]\nmode = \"after_failures\"\nafter_failures = 0", "login.captcha.after_failures", "from 1"),
            ("[login.captcha]\nttl = \"2\"", "login.captcha.ttl", "not a duration"),
            ("[login.captcha]\nttl = \"9s\"", "login.captcha.ttl", "outside 10s to 1h"),
            ("[login.captcha]\nttl = \"61m\"", "login.captcha.ttl", "outside 10s to 1h"),
            (
                "[login.captcha]\nmode = \"after_failures\"\nafter_failures = 5\n[login.lockout]\nmax_failures = 5\nmax_failures_per_ip = 5",
                "login.captcha.after_failures",
                "never reached",
            ),
        ];
        assert_rules(cases);
    }

    #[test]
    fn captcha_settings_and_their_warnings() {
        // Defaults: off, 2 minutes; after_failures alone defaults to 3.
        let c = ok(MINIMAL).config.login.captcha;
        assert_eq!(
            (c.mode, c.ttl),
            (CaptchaMode::Off, Duration::from_secs(120))
        );
        let loaded = ok(&format!(
            "{MINIMAL}\n[login.captcha]\nmode = \"after_failures\"\nttl = \"10s\""
        ));
        let c = loaded.config.login.captcha;
        assert_eq!(c.mode, CaptchaMode::AfterFailures(3));
        assert_eq!(c.ttl, Duration::from_secs(10));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = ok(&format!(
            "{MINIMAL}\n[login.captcha]\nmode = \"always\"\nttl = \"1h\""
        ))
        .config
        .login
        .captcha;
        assert_eq!(
            (c.mode, c.ttl),
            (CaptchaMode::Always, Duration::from_secs(3600))
        );

        for (snippet, warning) in [
            // A username locks first: only the IP's failures can ask for the captcha.
            (
                "[login.captcha]\nmode = \"after_failures\"\nafter_failures = 5",
                "login.captcha.after_failures: 5 is at or above login.lockout.max_failures (5)",
            ),
            (
                "[login.captcha]\nmode = \"always\"\nafter_failures = 2",
                "login.captcha.after_failures: ignored",
            ),
            (
                "[session]\nmode = \"stateless\"\n[login]\nbackend = \"none\"\n[login.captcha]\nmode = \"always\"",
                "login.captcha.mode: ignored",
            ),
        ] {
            let loaded = ok(&format!("{MINIMAL}\n{snippet}"));
            assert!(
                loaded.warnings.iter().any(|w| w.starts_with(warning)),
                "{snippet}: {:?}",
                loaded.warnings
            );
        }
    }

    #[test]
    fn demo_user_password_matches_its_hash() {
        use argon2::PasswordVerifier;
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/users.toml"))
            .expect("users.toml at the repo root");
        let users: file::UsersFile = file::parse(&text).expect("users.toml parses");
        let hash = argon2::PasswordHash::new(&users.users[0].password_hash).expect("PHC");
        argon2::Argon2::default()
            .verify_password(b"wonderland-demo-42", &hash)
            .expect("alice's password");
    }

    #[test]
    fn json_pointers_and_password_hashes() {
        for (p, want) in [
            ("/a", true),
            ("/a/b~0~1", true),
            ("", false),
            ("a", false),
            ("/~", false),
            ("/~2", false),
        ] {
            assert_eq!(is_json_pointer(p), want, "{p:?}");
        }
        assert!(check_password_hash("$argon2id$v=19$m=19456,t=2,p=1$eECQyicfEQ3RQnGR8ra3jA$pNsvNIX9cOhPMO4igTkd4fWKNKSwMfyAL/RZ4M+apxA").is_ok());
        assert!(check_password_hash("$argon2id$v=19$m=1,t=2,p=1$eECQyicfEQ3RQnGR8ra3jA$pNsvNIX9cOhPMO4igTkd4fWKNKSwMfyAL/RZ4M+apxA").is_err());
        assert!(check_password_hash("$scrypt$ln=15,r=8,p=1$c2FsdA$aGFzaA").is_err());
        assert!(check_password_hash("plain").is_err());
    }
}
