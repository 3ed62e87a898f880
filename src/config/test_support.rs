//! What the config tests share: the fixtures folder, a minimal valid config, a fake
//! environment, loaders that return the config or its problems, and the runner of each
//! section's table of rules.

use std::path::Path;

use super::{load_str, ConfigError, Loaded, Problem};

pub(super) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/config");
pub(super) const SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

/// One upstream, one route; the secret comes from the fake env.
pub(super) const MINIMAL: &str = r#"
[[upstreams]]
name = "app"
urls = ["http://127.0.0.1:9000"]

[[routes]]
path = "/"
upstream = "app"
"#;

pub(super) fn env(name: &str) -> Option<String> {
    match name {
        "AUTHGATE_JWT_SECRET" => Some(SECRET.into()),
        "OLD_SECRET" => Some("old-secret-0123456789abcdef0123456789abcdef".into()),
        "SHORT_SECRET" => Some("short".into()),
        "ADMIN_TOKEN" => Some("admin-token-value".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

pub(super) fn load_fixture(text: &str) -> Result<Loaded, ConfigError> {
    load_str(text, Path::new(FIXTURES), &env)
}

pub(super) fn problems(text: &str) -> Vec<Problem> {
    match load_fixture(text) {
        Ok(_) => Vec::new(),
        Err(ConfigError(problems)) => problems,
    }
}

pub(super) fn ok(text: &str) -> Loaded {
    match load_fixture(text) {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected a valid config, got {e}"),
    }
}

/// One bad fixture per rule: `MINIMAL` plus the snippet must be refused with a problem under
/// exactly this key (and only problems under it), whose message contains the given text.
pub(super) fn assert_rules(cases: &[(&str, &str, &str)]) {
    for (snippet, key, message) in cases {
        let text = format!("{MINIMAL}\n{snippet}\n");
        let found = problems(&text);
        assert!(
            !found.is_empty(),
            "{snippet:?}: expected a problem at {key}, config loaded"
        );
        for p in &found {
            assert!(
                p.key.starts_with(key),
                "{snippet:?}: expected problems at {key} only, got {found:?}"
            );
        }
        assert!(
            found.iter().any(|p| p.message.contains(message)),
            "{snippet:?}: no message at {key} contains {message:?}: {found:?}"
        );
    }
}
