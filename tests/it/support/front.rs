//! Real front proxies for the forward-auth recipes: nginx (`auth_request`) and Caddy
//! (`forward_auth`), each run from the very file the README points at (`examples/nginx/
//! authgate.conf`, `examples/caddy/Caddyfile`) with the test's addresses put in place of the
//! example's, on an ephemeral loopback port, in a temporary folder of its own, killed on drop.
//!
//! Without the program, [`FrontProxy::start`] says so loudly and returns `None` (a panic under
//! `CI`), as for `redis-server`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::client::Probe;
use super::redis::program_or_skip;
use super::wait::WAIT;

/// Which front proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Nginx,
    Caddy,
}

impl Front {
    pub fn name(self) -> &'static str {
        match self {
            Front::Nginx => "nginx",
            Front::Caddy => "caddy",
        }
    }

    /// The program, where Debian puts it (nginx lives in /usr/sbin, which a user's PATH may
    /// lack).
    fn program(self) -> &'static str {
        match self {
            Front::Nginx if Path::new("/usr/sbin/nginx").exists() => "/usr/sbin/nginx",
            Front::Nginx => "nginx",
            Front::Caddy => "caddy",
        }
    }
}

/// The example files, relative to the crate.
pub const NGINX_EXAMPLE: &str = "examples/nginx/authgate.conf";
pub const CADDY_EXAMPLE: &str = "examples/caddy/Caddyfile";

/// The addresses the examples are written with, which the tests replace.
pub const EXAMPLE_AUTHGATE: &str = "127.0.0.1:8080";
pub const EXAMPLE_APP: &str = "127.0.0.1:9000";

/// A text file of the crate (an example), read whole.
pub fn example(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// `text` with each `(from, to)` replaced; each `from` must occur (an example edited so that
/// the test's substitution no longer applies fails here instead of testing something else).
pub fn substitute(what: &str, text: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in pairs {
        assert!(
            out.contains(from),
            "{what} no longer holds {from:?}, which the test replaces"
        );
        out = out.replace(from, to);
    }
    out
}

/// A running nginx or Caddy in front of an authgate and an app.
pub struct FrontProxy {
    pub front: Front,
    pub addr: SocketAddr,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl FrontProxy {
    /// Starts `front` with its example config, asking the authgate at `authgate` and sending
    /// the app's requests to `app`. `None` (after a loud skip) when the program is missing.
    pub async fn start(front: Front, authgate: SocketAddr, app: SocketAddr) -> Option<Self> {
        let installed = match front {
            Front::Nginx => program_or_skip(
                front.program(),
                &["-v"],
                "nginx-light",
                "the nginx forward-auth recipe test",
            ),
            Front::Caddy => program_or_skip(
                front.program(),
                &["version"],
                "caddy",
                "the Caddy forward-auth recipe test",
            ),
        };
        if !installed {
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary folder for the front proxy");
        let mut proxy = Self {
            front,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
            dir,
        };
        // Another process may take the port between our probe and the server's bind: the
        // server then exits, and we try another.
        for _ in 0..5 {
            proxy.addr = free_addr();
            proxy.write_config(authgate, app);
            proxy.spawn();
            if proxy.until_listening().await {
                return Some(proxy);
            }
        }
        panic!("{} did not start; its log:\n{}", front.name(), proxy.log());
    }

    /// A client of the front proxy.
    pub fn probe(&self) -> Probe {
        Probe::new(self.addr)
    }

    /// What the server wrote to its error log and stderr so far.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for name in ["error.log", "stderr.log"] {
            if let Ok(text) = std::fs::read_to_string(self.dir.path().join(name)) {
                out.push_str(&text);
            }
        }
        out
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The example with the test's addresses, plus (nginx) the main config around it, which
    /// keeps the pid, logs and temporary files in the test's folder.
    fn write_config(&self, authgate: SocketAddr, app: SocketAddr) {
        let (authgate, app, listen) =
            (authgate.to_string(), app.to_string(), self.addr.to_string());
        match self.front {
            Front::Nginx => {
                let listen = format!("listen {listen};");
                let server = substitute(
                    NGINX_EXAMPLE,
                    &example(NGINX_EXAMPLE),
                    &[
                        (EXAMPLE_AUTHGATE, &authgate),
                        (EXAMPLE_APP, &app),
                        ("listen 127.0.0.1:8000;", &listen),
                    ],
                );
                std::fs::write(self.path("authgate.conf"), server).expect("write authgate.conf");
                let d = self.dir.path().display();
                let main = format!(
                    "pid {d}/nginx.pid;\n\
                     error_log {d}/error.log info;\n\
                     events {{ worker_connections 256; }}\n\
                     http {{\n\
                     access_log off;\n\
                     client_body_temp_path {d}/body;\n\
                     proxy_temp_path {d}/proxy;\n\
                     fastcgi_temp_path {d}/fastcgi;\n\
                     uwsgi_temp_path {d}/uwsgi;\n\
                     scgi_temp_path {d}/scgi;\n\
                     include authgate.conf;\n\
                     }}\n"
                );
                std::fs::write(self.path("nginx.conf"), main).expect("write nginx.conf");
            }
            Front::Caddy => {
                let site = format!(":{} {{", self.addr.port());
                let text = substitute(
                    CADDY_EXAMPLE,
                    &example(CADDY_EXAMPLE),
                    &[
                        (EXAMPLE_AUTHGATE, &authgate),
                        (EXAMPLE_APP, &app),
                        (":8000 {", &site),
                        // No admin endpoint: tests run side by side.
                        ("admin 127.0.0.1:2019", "admin off"),
                    ],
                );
                std::fs::write(self.path("Caddyfile"), text).expect("write Caddyfile");
            }
        }
    }

    fn spawn(&mut self) {
        self.stop();
        let stderr = std::fs::File::create(self.path("stderr.log")).expect("stderr.log");
        let mut cmd = Command::new(self.front.program());
        match self.front {
            // One process (no master and workers to leave behind on a kill), in the
            // foreground; `-e` keeps even the start-up log out of /var/log.
            Front::Nginx => cmd
                .arg("-p")
                .arg(self.dir.path())
                .arg("-c")
                .arg(self.path("nginx.conf"))
                .arg("-e")
                .arg(self.path("error.log"))
                .args(["-g", "daemon off; master_process off;"]),
            // Caddy keeps its state (autosave.json, certificates) under XDG folders: the
            // test's own.
            Front::Caddy => cmd
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(self.path("Caddyfile"))
                .env("XDG_CONFIG_HOME", self.path("config"))
                .env("XDG_DATA_HOME", self.path("data"))
                .env("HOME", self.dir.path()),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.front.name()));
        self.child = Some(child);
    }

    /// Polls the port until it accepts a connection (true), or until the server exits or
    /// [`WAIT`] passes (false).
    async fn until_listening(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return true;
            }
            if let Some(c) = &mut self.child {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop();
        false
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for FrontProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback address free a moment ago (bound, then released).
fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}
