//! A real browser (issue 11): `tests/browser/e2e.mjs` drives Debian's Chromium through
//! playwright-core against `authgate demo` (this build's binary, with 4-second access tokens):
//! protected page → login page → log in → the page with the identity → renewed inside the
//! silent-refresh window and again after the token's whole life → a cross-origin form post
//! refused → log out → the login page again. Needs node, chromium and `npm ci` in
//! tests/browser (`.ci/run` provides all three); without them it says so loudly and skips,
//! unless `CI` is set.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::installed_or_skip;

#[test]
fn a_real_browser_logs_in_stays_in_and_is_refused_cross_site() {
    if !installed_or_skip("node", "the Chromium end-to-end test (tests/browser)")
        || !installed_or_skip("chromium", "the Chromium end-to-end test (tests/browser)")
    {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").is_dir() {
        let why = "tests/browser/node_modules is missing: run `npm ci` in tests/browser";
        assert!(std::env::var_os("CI").is_none(), "{why}, and CI is set");
        eprintln!("\n*** SKIPPED: {why} to run the Chromium end-to-end test.\n");
        return;
    }
    let child = Command::new("node")
        .arg("e2e.mjs")
        .current_dir(&dir)
        .env("AUTHGATE_BIN", env!("CARGO_BIN_EXE_authgate"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(Duration::from_secs(180)) else {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        panic!("the browser test did not finish within 180 s");
    };
    let out = out.expect("node ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all browser steps passed"), "{stdout}");
}
