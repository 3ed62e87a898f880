//! Test harness: a throw-away `redis-server` on a free port, killed on drop.
//!
//! Without `redis-server` on `PATH` the Redis tests print a loud message and skip, unless the
//! `CI` environment variable is set, in which case they fail. Reusable by the integration tests
//! (copy it into `tests/it/support.rs`; it needs only std and `tempfile`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process with no persistence, in its own temporary directory.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

fn redis_server_on_path() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// Starts a server, or returns `None` (after saying so loudly) when `redis-server` is not
    /// installed. With `CI` set, a missing `redis-server` panics instead.
    pub(crate) fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// [`Self::start`] with extra `redis-server` arguments.
    pub(crate) fn start_with(extra: &[&str]) -> Option<Self> {
        if !redis_server_on_path() {
            if std::env::var_os("CI").is_some() {
                panic!("redis-server is not on PATH, and CI is set: the Redis tests must run");
            }
            eprintln!(
                "\n*********************************************************************\n\
                 *** SKIPPING a Redis test: redis-server is not on PATH.           ***\n\
                 *** Install it (apt-get install redis-server) to run these tests. ***\n\
                 *********************************************************************\n"
            );
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

    #[allow(dead_code)] // for tests that need the bare port
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn ping(&self) -> bool {
        self.command(&["PING"]).is_ok_and(|r| r == "PONG")
    }

    /// Kills the server (its data is gone: no persistence).
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub(crate) fn restart(&mut self) {
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
    pub(crate) fn command(&self, args: &[&str]) -> Result<String, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim_end();
        let (kind, rest) = line.split_at(line.len().min(1));
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
                String::from_utf8(buf).map_err(|e| e.to_string())
            }
            _ => Err(format!("unsupported reply: {line}")),
        }
    }

    /// `used_memory` from `INFO memory`, in bytes.
    pub(crate) fn used_memory(&self) -> u64 {
        let info = self.command(&["INFO", "memory"]).expect("INFO memory");
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory in INFO")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A three-node Redis Cluster (three primaries, no replicas), built with `redis-cli --cluster
/// create`. `None` (loudly) without `redis-server`/`redis-cli`, a panic with `CI` set.
pub(crate) struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub(crate) fn start() -> Option<Self> {
        let cli = Command::new("redis-cli")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !cli && redis_server_on_path() {
            if std::env::var_os("CI").is_some() {
                panic!("redis-cli is not on PATH, and CI is set: the cluster test must run");
            }
            eprintln!("\n*** SKIPPING the Redis Cluster test: redis-cli is not on PATH. ***\n");
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

    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
