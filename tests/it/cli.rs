//! The binary itself: `check` exit codes and SIGHUP reloads of a running `authgate run`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// A running `authgate run`, killed on drop.
struct Running {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `authgate run -c CONFIG` and reads its admin address from the `listening` log line.
fn run(config: &std::path::Path) -> Running {
    let (child, line) = run_logged(config, &[]);
    let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    // The plain address (it was once logged as `Some(127.0.0.1:9091)`).
    let admin = log["admin"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in {line}"));
    Running { child, admin }
}

/// Starts `authgate [ARGS] run -c CONFIG` (stderr not a terminal) and returns it with its
/// `listening` log line, as written.
fn run_logged(config: &std::path::Path, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["run", "-c"])
        .arg(config)
        .env("T_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn authgate");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("authgate logged no `listening` line");
    (child, line)
}

/// Runs the binary to its end with `T_SECRET` set.
fn authgate(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("T_SECRET", SECRET)
        .output()
        .expect("run authgate")
}

/// `authgate_config_reloads_total{result="ok"}` from the admin `/metrics`.
async fn reloads_ok(admin: SocketAddr) -> u64 {
    let admin = Probe::new(admin);
    metric(&admin, "authgate_config_reloads_total", &["result=\"ok\""]).await as u64
}

#[tokio::test]
async fn sighup_reloads_the_config_file() {
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, Conf::new().render(up.addr)).unwrap();
    let gw = run(&path);
    assert_eq!(reloads_ok(gw.admin).await, 0);

    // Nothing on disk changes, so the folder watch stays quiet: only the signal reloads.
    let status = Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads_ok(gw.admin).await == 0 {
        assert!(Instant::now() < deadline, "no reload after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reloads_ok(gw.admin).await, 1);
}

#[test]
fn check_exits_0_for_a_good_config_and_1_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    // Compound durations (humantime's forms) are good ones.
    let text = Conf::new()
        .server("request_timeout = \"1m 30s\"")
        .token("refresh_ttl = \"1d12h\"")
        .render("127.0.0.1:9".parse().unwrap());
    std::fs::write(&good, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&good)
        .env("T_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let bad = dir.path().join("bad.toml");
    let text = Conf::new()
        .server("idle_timeout = \"1h30\"")
        .routes("[[routes]]\npath = \"/x\"\nupstream = \"nowhere\"\n")
        .render("127.0.0.1:9".parse().unwrap());
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&bad)
        .env("T_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.idle_timeout: \"1h30\" is not a duration: 30 needs a unit"),
        "{err}"
    );
    assert!(err.contains("routes[0].upstream"), "{err}");
}

#[test]
fn the_start_up_log_names_the_admin_address_or_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, Conf::new().render("127.0.0.1:9".parse().unwrap())).unwrap();
    let gw = run(&path);
    assert_ne!(gw.admin.port(), 0);
    drop(gw);

    // Without an admin listener: "off", never `None`.
    let text = Conf::new()
        .render("127.0.0.1:9".parse().unwrap())
        .replace("admin_listen = \"127.0.0.1:0\"\n", "");
    std::fs::write(&path, text).unwrap();
    let (mut child, line) = run_logged(&path, &[]);
    let _ = child.kill();
    let _ = child.wait();
    let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(log["admin"], "off", "{line}");
}

#[test]
fn text_logs_written_to_a_file_have_no_colours() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, Conf::new().render("127.0.0.1:9".parse().unwrap())).unwrap();
    let (mut child, line) = run_logged(&path, &["--log-format", "text"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("listening"), "{line}");
    assert!(
        !line.contains('\x1b'),
        "ANSI escapes in a redirected log: {line:?}"
    );
}

#[test]
fn a_taken_address_fails_start_up_naming_its_key_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    for (key, from) in [
        ("server.listen", "listen = \"127.0.0.1:0\""),
        ("server.admin_listen", "admin_listen = \"127.0.0.1:0\""),
    ] {
        let text = Conf::new().render("127.0.0.1:9".parse().unwrap()).replacen(
            from,
            &from.replace("127.0.0.1:0", &addr.to_string()),
            1,
        );
        std::fs::write(&path, text).unwrap();
        let out = authgate(&["--log-format", "json", "run", "-c", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default();
        assert_eq!(
            last,
            format!("authgate: {key} {addr}: address already in use"),
            "{err}"
        );
    }
}

#[test]
fn check_suggests_the_key_meant_and_reports_nothing_its_default_caused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let text = Conf::new()
        .token("acess_ttl = \"1h\"\nrefresh_ttl = \"90m\"")
        .routes("[[routes]]\npth = \"/x\"\nupstream = \"up\"\n")
        .render("127.0.0.1:9".parse().unwrap());
    std::fs::write(&path, text).unwrap();
    let out = authgate(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("authgate:"))
        .collect();
    assert_eq!(
        problems,
        [
            "token.acess_ttl: unknown key acess_ttl, did you mean access_ttl?",
            "routes[0].pth: unknown key pth, did you mean path?",
        ],
        "{err}"
    );

    // A real problem beside the typo is still reported; a key nothing like a known one gets
    // the list of known keys.
    let text = Conf::new()
        .token("acess_ttl = \"1h\"\nrefresh_ttl = \"30m\"\nzzz = 1")
        .render("127.0.0.1:9".parse().unwrap());
    std::fs::write(&path, text).unwrap();
    let out = authgate(&["check", "-c", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token.refresh_ttl: must be longer than access_ttl"),
        "{err}"
    );
    assert!(
        err.contains("token.zzz: unknown key; expected one of"),
        "{err}"
    );
}

#[test]
fn explain_needs_no_signing_key_and_exits_1_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let explain = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["explain", "-c", path.to_str().unwrap()])
            .args(args)
            .env_remove("T_SECRET")
            .output()
            .expect("run authgate");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.code(),
            stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // T_SECRET is not set, and then the private key file does not exist.
    let hs = Conf::new().render("127.0.0.1:9".parse().unwrap());
    let es = Conf::new()
        .token_base("algorithm = \"ES256\"\nprivate_key_file = \"missing.pem\"")
        .render("127.0.0.1:9".parse().unwrap());
    for (text, note) in [(hs, "T_SECRET is not set"), (es, "missing.pem")] {
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = explain(&["GET", "/public/a/../b?x=1"]);
        assert_eq!(code, Some(0), "{out}{err}");
        assert!(out.contains("canonical:  /public/b"), "{out}");
        assert!(out.contains("auth:       public"), "{out}");
        assert!(out.contains(note) && out.contains("throwaway"), "{out}");
    }
    // Refused: a required route (no token goes with explain), a 405, a 400 path.
    for (args, why) in [
        (["GET", "/api/orders"], "401 missing_token"),
        (["POST", "/get-only"], "405 method_not_allowed"),
        (["GET", "/public%2f..%2fapi"], "400 bad_request"),
    ] {
        let (code, out, err) = explain(&args);
        assert_eq!(code, Some(1), "{args:?}: {out}{err}");
        assert!(out.contains(why), "{args:?}: {out}");
    }
    // No route at all.
    let text = Conf::new()
        .routes("[[routes]]\npath = \"/only\"\nupstream = \"up\"\nauth = \"public\"\n")
        .render("127.0.0.1:9".parse().unwrap());
    std::fs::write(&path, text).unwrap();
    let (code, out, _) = explain(&["GET", "/elsewhere"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("404 no_route"), "{out}");
    let (code, out, _) = explain(&["GET", "/only/x"]);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn the_config_option_is_only_on_commands_that_read_a_config() {
    for cmd in ["run", "check", "explain"] {
        let out = authgate(&[cmd, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("--config"), "{cmd}: {help}");
    }
    for cmd in ["hash-password", "keygen", "demo"] {
        let out = authgate(&[cmd, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{cmd}: {out:?}");
        assert!(!help.contains("--config"), "{cmd}: {help}");
        // Given anyway: a usage error, not silently ignored.
        let out = authgate(&[cmd, "-c", "x.toml"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {out:?}");
        let out = authgate(&["-c", "x.toml", cmd]);
        assert_eq!(out.status.code(), Some(2), "-c before {cmd}: {out:?}");
    }
    // Plain `authgate -c PATH` runs (and `-c` before the command still counts): both read the
    // missing file named.
    for args in [
        &["-c", "missing.toml"][..],
        &["-c", "missing.toml", "check"],
    ] {
        let out = authgate(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("missing.toml"),
            "{out:?}"
        );
    }
}
