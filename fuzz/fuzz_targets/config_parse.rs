//! Config parsing and validation (`src/config/`): `gateway.toml` text as `authgate check` and
//! `authgate run` read it, with every environment variable set to a usable secret and no file
//! to be found.
//!
//! Properties: never a panic; the same text gives the same answer twice; a refused config
//! names at least one problem, each with a key path (or a line and column) and a message; an
//! accepted one has routes numbered in file order, and `authgate explain` answers for a few
//! requests against it (the canonicaliser and the route table under the config's own rules).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |_: &str| Some("fuzz-secret-0123456789abcdef0123456789".to_owned());
    let dir = std::path::Path::new("/nonexistent/authgate-fuzz");
    let first = authgate::config::load_str(text, dir, &env);
    let second = authgate::config::load_str(text, dir, &env);
    match (first, second) {
        (Err(a), Err(b)) => {
            assert!(!a.0.is_empty(), "refused without a problem");
            assert_eq!(a.0, b.0, "two readings, two answers");
            for p in &a.0 {
                assert!(!p.key.is_empty() && !p.message.is_empty(), "{p:?}");
            }
        }
        (Ok(a), Ok(b)) => {
            assert_eq!(a.warnings, b.warnings);
            let cfg = &a.config;
            for (i, r) in cfg.routes.routes().iter().enumerate() {
                assert_eq!(r.index, i);
                assert!(r.upstream < cfg.upstreams.len());
                let _ = authgate::explain::explain(cfg, "GET", &r.label);
            }
            for url in ["/", "/a/../b?x=1", "/%2e%2e/x", "/API;x/y", "*"] {
                let _ = authgate::explain::explain(cfg, "POST", url);
            }
        }
        (a, b) => panic!(
            "two readings, two answers: {:?} then {:?}",
            a.err(),
            b.err()
        ),
    }
});
