//! One shutdown story, end to end on the real binary: SIGTERM to `authgate run` with a
//! WebSocket open through it and a config reload pending ends the process within
//! `shutdown_grace`, with exit code 0, and both ends of the tunnel get a Close frame 1001
//! (going away) instead of a dropped connection.
//!
//! In process, the same signal leaves nothing behind: after `Handle::shutdown`, no listener,
//! connection, tunnel or background task holds the app any more.
//!
//! Self-contained (its own config, upstream and process handling), so it depends on no
//! shared test support.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");
const SECRET: &str = "shutdown-test-secret-0123456789abcdef";
const GRACE: Duration = Duration::from_secs(2);
/// Beyond the grace: the process's own exit (runtime, threads) on a busy machine.
const MARGIN: Duration = Duration::from_secs(2);

/// A config with one public route to `upstream`, and a `marker` comment that a rewrite
/// changes.
fn config(upstream: SocketAddr, marker: &str) -> String {
    format!(
        r#"# {marker}
[server]
listen = "127.0.0.1:0"
shutdown_grace = "{grace}ms"

[token]
algorithm = "HS256"
secret_env = "T_SECRET"

[session]
mode = "stateless"

[login]
backend = "none"

[[upstreams]]
name = "ws"
urls = ["http://{upstream}"]
connect_timeout = "1s"

[[routes]]
path = "/"
upstream = "ws"
auth = "public"
"#,
        grace = GRACE.as_millis()
    )
}

/// A WebSocket echo server; sends each Close frame it receives on the channel.
async fn ws_echo() -> (SocketAddr, mpsc::UnboundedReceiver<Option<CloseFrame>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closes_tx, closes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let closes_tx = closes_tx.clone();
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let (mut sink, mut source) = ws.split();
                while let Some(Ok(msg)) = source.next().await {
                    if let Message::Close(frame) = msg {
                        let _ = closes_tx.send(frame);
                        break;
                    }
                    if msg.is_text() && sink.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, closes)
}

/// A running `authgate run`, killed on drop if the test ends before it does.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    /// Every log line (stderr), as written.
    log: std_mpsc::Receiver<String>,
    /// The reader of stderr, which ends with the process; it returns every line, for the
    /// suite's leak check.
    reader: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let lines = self.reader.take().and_then(|r| r.join().ok());
        if let Some(lines) = lines.filter(|_| !std::thread::panicking()) {
            crate::support::logs::check_lines(&lines);
        }
    }
}

impl Gateway {
    /// Starts the binary on `config` and waits for its `listening` line.
    fn start(config: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["run", "-c"])
            .arg(config)
            .env("T_SECRET", SECRET)
            // The reload's debug line says when a reload is pending.
            .env("RUST_LOG", "info,authgate::reload=debug")
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn authgate");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = std_mpsc::channel();
        // Drains stderr to the end, so the process never blocks on a full pipe.
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                all.push(line.clone());
                let _ = tx.send(line);
            }
            all
        });
        let mut gw = Self {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
            reader: Some(reader),
        };
        let line = gw.wait_for_line("listening", Duration::from_secs(20));
        let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        gw.addr = json["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line}"));
        gw
    }

    /// The first log line containing `what`, waiting up to `timeout` for it.
    fn wait_for_line(&self, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => panic!("authgate logged no line with {what:?}"),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    }

    /// The exit status, waiting up to `timeout` for it.
    fn exit_within(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "authgate still running {timeout:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[tokio::test]
async fn sigterm_with_a_tunnel_open_and_a_reload_pending_exits_cleanly_in_time() {
    let (upstream, mut upstream_closes) = ws_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config(upstream, "first")).unwrap();
    let mut gw = Gateway::start(&path);

    let (mut client, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr)),
    )
    .await
    .expect("the handshake in time")
    .expect("the upgrade succeeds");
    assert_eq!(resp.status(), 101);
    // An echo: the tunnel is open both ways.
    client.send(Message::text("hello")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .expect("the echo in time");
    assert_eq!(echoed.unwrap().unwrap(), Message::text("hello"));

    // A changed config: once the folder watch has seen it, the reload waits out its debounce
    // (200 ms), and the signal comes meanwhile.
    std::fs::write(&path, config(upstream, "second")).unwrap();
    gw.wait_for_line("reload pending", Duration::from_secs(10));
    let sent = Instant::now();
    gw.signal("TERM");

    let going_away = CloseFrame {
        code: CloseCode::Away,
        reason: "going away".into(),
    };
    match tokio::time::timeout(GRACE + MARGIN, client.next()).await {
        Ok(Some(Ok(Message::Close(frame)))) => assert_eq!(frame, Some(going_away.clone())),
        Ok(other) => panic!("expected a Close frame, got {other:?}"),
        Err(_) => panic!("the WebSocket was not closed after SIGTERM"),
    }
    // After the Close, the connection ends.
    let rest = tokio::time::timeout(GRACE + MARGIN, client.next())
        .await
        .expect("the connection to end after the Close frame");
    assert!(
        !matches!(rest, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{rest:?}"
    );
    // The upstream is told too.
    let upstream_close = tokio::time::timeout(GRACE + MARGIN, upstream_closes.recv())
        .await
        .expect("the upstream's Close frame in time");
    assert_eq!(upstream_close, Some(Some(going_away)));

    let status = gw.exit_within((GRACE + MARGIN).saturating_sub(sent.elapsed()));
    assert!(status.success(), "exit status {status:?}");
    gw.wait_for_line("shutting down", Duration::from_secs(5));
}

#[tokio::test]
async fn after_shutdown_nothing_holds_the_app() {
    let (upstream, mut upstream_closes) = ws_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let text = config(upstream, "in process");
    std::fs::write(&path, &text).unwrap();
    let env = |name: &str| (name == "T_SECRET").then(|| SECRET.to_owned());
    let loaded = match authgate::config::load_str(&text, dir.path(), &env) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    // Every background task there is: the memory store's sweeper and the revocation watcher
    // (the app's), the reload watchers, the listeners and the metrics upkeep (the server's).
    let app = authgate::app::App::new(loaded.config);
    authgate::reload::spawn(app.clone(), path.clone());
    let handle = authgate::server::start(app.clone()).await.unwrap();
    let addr = handle.addr;
    let weak = Arc::downgrade(&app);
    drop(app);

    let (mut client, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(format!("ws://{addr}/chat")),
    )
    .await
    .expect("the handshake in time")
    .expect("the upgrade succeeds");
    client.send(Message::text("hello")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .expect("the echo in time");
    assert_eq!(echoed.unwrap().unwrap(), Message::text("hello"));

    tokio::time::timeout(GRACE + MARGIN, handle.shutdown())
        .await
        .expect("shutdown within its grace");
    match tokio::time::timeout(GRACE, client.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a Close frame 1001, got {other:?}"),
    }
    let upstream_close = tokio::time::timeout(GRACE, upstream_closes.recv())
        .await
        .expect("the upstream's Close frame in time");
    assert_eq!(
        upstream_close.flatten().map(|f| f.code),
        Some(CloseCode::Away)
    );

    // The last holders let go as their tasks see the signal.
    let deadline = Instant::now() + MARGIN;
    while weak.upgrade().is_some() {
        assert!(
            Instant::now() < deadline,
            "something still holds the app after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
