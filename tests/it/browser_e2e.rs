//! A real browser (issue 11): `tests/browser/e2e.mjs` drives Debian's Chromium through
//! playwright-core against `authgate demo` (this build's binary, with 4-second access tokens):
//! protected page → login page → log in → the page with the identity → renewed inside the
//! silent-refresh window and again after the token's whole life → a cross-origin form post
//! refused → log out → the login page again. Needs node, chromium and `npm ci` in
//! tests/browser (`.ci/run` provides all three); without them it says so loudly and skips,
//! unless `CI` is set. The second test drives the demo's single-page app and the JavaScript
//! client of `clients/js` the same way (issue 13).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use crate::support::installed_or_skip;

#[test]
fn a_real_browser_logs_in_stays_in_and_is_refused_cross_site() {
    run_browser_script("e2e.mjs", "all browser steps passed");
}

/// Issue 13: the demo's single-page app, driven in Chromium, with the JavaScript client of
/// `clients/js` in both modes (`tests/browser/client-e2e.mjs`): log in, call, the silent
/// refresh inside the window, the refresh under 3 s left (bearer) and after expiry (cookies),
/// kicked out by a second login made outside the browser, the reason on the page, log out.
#[test]
fn the_javascript_client_in_a_real_browser_refreshes_silently_and_shows_why_it_was_logged_out() {
    run_browser_script("client-e2e.mjs", "all client steps passed");
}

/// Runs `tests/browser/<script>` with node against this build's binary; it must exit 0 and
/// print `passed`.
fn run_browser_script(script: &str, passed: &str) {
    let what = format!("the Chromium end-to-end test (tests/browser/{script})");
    if !installed_or_skip("node", &what) || !installed_or_skip("chromium", &what) {
        return;
    }
    // One browser at a time: both scripts time their steps against short token lives.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").is_dir() {
        let why = "tests/browser/node_modules is missing: run `npm ci` in tests/browser";
        assert!(std::env::var_os("CI").is_none(), "{why}, and CI is set");
        eprintln!("\n*** SKIPPED: {why} to run {what}.\n");
        return;
    }
    let child = Command::new("node")
        .arg(script)
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
        panic!("{what} did not finish within 180 s");
    };
    let out = out.expect("node ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(passed), "{stdout}");
}
