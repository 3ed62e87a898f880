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
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(config)
        .env("T_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn authgate");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"listening\"") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("authgate logged no `listening` line");
    let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    // The plain address (it was once logged as `Some(127.0.0.1:9091)`).
    let admin = log["admin"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in {line}"));
    Running { child, admin }
}

/// `authgate_config_reloads_total{result="ok"}` from the admin `/metrics`.
async fn reloads_ok(admin: SocketAddr) -> u64 {
    let resp = Probe::new(admin).get("/metrics", &[]).await;
    let text = String::from_utf8_lossy(&resp.body);
    text.lines()
        .find(|l| l.starts_with("authgate_config_reloads_total{result=\"ok\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
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
    std::fs::write(&good, Conf::new().render("127.0.0.1:9".parse().unwrap())).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&good)
        .env("T_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let bad = dir.path().join("bad.toml");
    let text = Conf::new()
        .server("idle_timeout = \"soon\"")
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
    assert!(err.contains("server.idle_timeout"), "{err}");
    assert!(err.contains("routes[0].upstream"), "{err}");
}
