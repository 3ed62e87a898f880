//! A throw-away `redis-server` (or a three-node Redis Cluster) on free ports, each in its own
//! temporary folder, killed on drop; a tiny blocking RESP client to look inside.
//!
//! Without the binaries a test needs, [`installed_or_skip`] says so loudly and the test skips,
//! unless the `CI` environment variable is set, in which case it fails.
//!
//! Two crates compile this file: the integration tests (`tests/it/support/`) and the crate's
//! own unit tests (`src/session/testutil.rs` includes it by `#[path]`). So it uses std and
//! `tempfile` only, nothing of `authgate`, and each crate uses only part of it.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `binary` runs (`binary --version`); see [`program_or_skip`].
pub fn installed_or_skip(binary: &str, what: &str) -> bool {
    program_or_skip(binary, &["--version"], binary, what)
}

/// Whether `binary` runs (`binary version_args...` exits 0). When it does not: a panic with
/// `CI` set (the tests that need it must run there); otherwise a loud `SKIPPED` naming `what`
/// and the Debian `package` to install on the process's stderr, and `false`. The one rule for
/// tests that need a program of the machine.
pub fn program_or_skip(binary: &str, version_args: &[&str], package: &str, what: &str) -> bool {
    let installed = Command::new(binary)
        .args(version_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{binary} is not on PATH, and CI is set: {what} must run");
    }
    // Straight to the process's stderr: libtest would swallow an `eprintln!` of a passing
    // test, and a skip must be seen.
    let stars = "*".repeat(72);
    let _ = writeln!(
        std::io::stderr(),
        "\n{stars}\n*** SKIPPED: {binary} not found ({what}).\n\
         *** Install it (apt-get install {package}) to run these tests.\n{stars}"
    );
    false
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A `redis-server` child process with no automatic persistence, in its own temporary folder,
/// killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server, or returns `None` when `redis-server` is not installed (see
    /// [`installed_or_skip`]).
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// [`Self::start`] with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Option<Self> {
        if !installed_or_skip("redis-server", "a Redis test") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let mut server = Self {
            child: None,
            port: 0,
            dir,
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        // Another process may take the port between our probe and redis-server's bind.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return Some(server);
            }
        }
        panic!("could not start redis-server");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            if let Some(c) = &mut self.child {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn ping(&self) -> bool {
        self.command(&["PING"]).is_ok_and(|r| r == "PONG")
    }

    /// Writes a snapshot (`SAVE`); a restart in the same folder loads it.
    pub fn save(&self) {
        assert_eq!(self.command(&["SAVE"]).as_deref(), Ok("OK"));
    }

    /// Kills the server (SIGKILL): whatever was not `SAVE`d is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT); it then answers what queued up.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// Starts it again on the same port and folder (loading the last `SAVE`, if any).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not come back on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends one command with a tiny blocking RESP client; the reply as text (status, integer
    /// or bulk string), `Err` for an error reply or a connection problem.
    pub fn command(&self, args: &[&str]) -> Result<String, String> {
        match self.call(args)? {
            Reply::One(text) => Ok(text),
            Reply::Many(_) => Err("unexpected array reply".into()),
        }
    }

    /// The keys matching `pattern` (`KEYS`; fine for a test server).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        match self.call(&["KEYS", pattern]) {
            Ok(Reply::Many(keys)) => keys,
            other => panic!("KEYS {pattern}: {other:?}"),
        }
    }

    /// `used_memory` from `INFO memory`, in bytes.
    pub fn used_memory(&self) -> u64 {
        let info = self.command(&["INFO", "memory"]).expect("INFO memory");
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory in INFO")
    }

    fn call(&self, args: &[&str]) -> Result<Reply, String> {
        call_port(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A RESP reply: one scalar, or an array of scalars.
#[derive(Debug)]
enum Reply {
    One(String),
    Many(Vec<String>),
}

/// One reply line, split into its type byte and the rest.
fn read_line(r: &mut impl BufRead) -> Result<(String, String), String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at(line.len().min(1));
    Ok((kind.to_owned(), rest.to_owned()))
}

/// A status, integer, error or bulk string reply whose first line was `kind rest`.
fn scalar(r: &mut impl BufRead, kind: &str, rest: &str) -> Result<String, String> {
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(rest.to_owned()),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| "bad bulk length".to_owned())?;
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf).map_err(|e| e.to_string())?;
            buf.truncate(n as usize);
            // Keys may hold raw bytes; show them lossily.
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        _ => Err(format!("unsupported reply: {kind}{rest}")),
    }
}

/// A three-node Redis Cluster (three primaries, no replicas), built with `redis-cli --cluster
/// create`. `None` without `redis-server` or `redis-cli` (see [`installed_or_skip`]).
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Option<Self> {
        if !installed_or_skip("redis-cli", "the Redis Cluster test") {
            return None;
        }
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
            ])?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let ok = |n: &RedisServer| {
            n.command(&["CLUSTER", "INFO"])
                .is_ok_and(|i| i.contains("cluster_state:ok"))
        };
        while !nodes.iter().all(ok) {
            assert!(Instant::now() < deadline, "the cluster did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Self { nodes })
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

/// A master, one replica and three sentinels (`redis-server --sentinel`) monitoring it as
/// [`RedisSentinels::NAME`], all on free loopback ports, killed on drop. `None` without
/// `redis-server` (see [`installed_or_skip`]; Debian's `redis-sentinel` package is the same
/// binary under another name, so `redis-server` is all it needs).
pub struct RedisSentinels {
    /// Started as the master; after [`Self::failover`], `nodes[1]` is.
    pub nodes: Vec<RedisServer>,
    sentinels: Vec<(Child, u16, tempfile::TempDir)>,
}

impl RedisSentinels {
    pub const NAME: &'static str = "mymaster";

    pub fn start() -> Option<Self> {
        let master = RedisServer::start()?;
        let port = master.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", port.as_str()])?;
        let mut set = Self {
            nodes: vec![master, replica],
            sentinels: Vec::new(),
        };
        for _ in 0..3 {
            set.spawn_sentinel();
        }
        set.until_settled();
        Some(set)
    }

    fn spawn_sentinel(&mut self) {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temporary directory for a sentinel");
            let port = free_port();
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {name} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {name} 2000\n\
                     sentinel failover-timeout {name} 10000\n\
                     sentinel parallel-syncs {name} 1\n",
                    dir = dir.path().display(),
                    name = Self::NAME,
                    master = self.nodes[0].port,
                ),
            )
            .expect("write sentinel.conf");
            let mut child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server --sentinel");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut up = false;
            while Instant::now() < deadline {
                if call_port(port, &["PING"]).is_ok() {
                    up = true;
                    break;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if up {
                self.sentinels.push((child, port, dir));
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start redis-server --sentinel");
    }

    /// `redis://` URLs of the three sentinels.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(_, port, _)| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// `session.redis_sentinel = { ... }` for these sentinels.
    pub fn config_line(&self) -> String {
        format!(
            "redis_sentinel = {{ master = {:?}, nodes = {:?} }}\n",
            Self::NAME,
            self.urls()
        )
    }

    /// The port of the master the first sentinel names.
    pub fn master_port(&self) -> u16 {
        match call_port(
            self.sentinels[0].1,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::NAME],
        ) {
            Ok(Reply::Many(addr)) if addr.len() == 2 => addr[1].parse().expect("a port"),
            other => panic!("GET-MASTER-ADDR-BY-NAME: {other:?}"),
        }
    }

    /// The node at `port`.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("one of the set's nodes")
    }

    /// Waits until every sentinel sees the replica and the two other sentinels, and the
    /// replica is in sync with the master: what a failover needs.
    fn until_settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let master = self.master_port();
            let replicas_up = self.nodes.iter().filter(|n| n.port != master).all(|n| {
                n.command(&["INFO", "replication"])
                    .is_ok_and(|i| i.contains("master_link_status:up"))
            });
            let sentinels_agree = self.sentinels.iter().all(|(_, port, _)| {
                match call_port(*port, &["SENTINEL", "MASTER", Self::NAME]) {
                    Ok(Reply::Many(f)) => {
                        let field = |k: &str| {
                            f.chunks(2)
                                .find(|kv| kv[0] == k)
                                .and_then(|kv| kv.get(1).cloned())
                                .unwrap_or_default()
                        };
                        field("num-slaves") == (self.nodes.len() - 1).to_string()
                            && field("num-other-sentinels") == "2"
                            && field("port") == master.to_string()
                            && field("flags") == "master"
                    }
                    _ => false,
                }
            });
            if replicas_up && sentinels_agree {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels did not settle (replicas up: {replicas_up})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `SENTINEL FAILOVER`: the replica becomes the master. Returns once every sentinel names
    /// the new master and it answers as one; the old master rejoins as its replica later
    /// (wait for that with [`Self::until_settled_after_failover`]).
    pub fn failover(&self) -> u16 {
        let old = self.master_port();
        let ok = call_port(self.sentinels[0].1, &["SENTINEL", "FAILOVER", Self::NAME]);
        assert!(
            matches!(ok, Ok(Reply::One(ref s)) if s == "OK"),
            "SENTINEL FAILOVER: {ok:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let new = self.master_port();
            if new != old
                && self
                    .node(new)
                    .command(&["INFO", "replication"])
                    .is_ok_and(|i| i.contains("role:master"))
            {
                return new;
            }
            assert!(Instant::now() < deadline, "no failover from port {old}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// After a failover: the old master is a replica of the new one, in sync.
    pub fn until_settled_after_failover(&self) {
        self.until_settled();
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for (child, ..) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One command to the server on `port` (see [`RedisServer::command`]).
fn call_port(port: u16, args: &[&str]) -> Result<Reply, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let (kind, rest) = read_line(&mut r)?;
    if kind == "*" {
        let n: i64 = rest.parse().map_err(|_| "bad array length".to_owned())?;
        let mut items = Vec::new();
        for _ in 0..n.max(0) {
            let (kind, rest) = read_line(&mut r)?;
            items.push(scalar(&mut r, &kind, &rest)?);
        }
        return Ok(Reply::Many(items));
    }
    scalar(&mut r, &kind, &rest).map(Reply::One)
}
