//! The test gateway: [`Conf`] renders a `gateway.toml` (stateless, HS256, one upstream `up`),
//! [`Gateway`] runs it on port 0 through the library entry the binary uses
//! (`config::load_str` → `App::new` → `server::start`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use authgate::app::App;
use authgate::server::Handle;
use authgate::tokens::AccessIdentity;

use super::client::Probe;
use super::jwt::SECRET;
use super::upstream::Upstream;
use super::wait::now;

/// The routes most tests use.
pub const ROUTES: &str = r#"
[[routes]]
path = "/public"
upstream = "up"
auth = "public"

[[routes]]
path = "/optional"
upstream = "up"
auth = "optional"

[[routes]]
path = "/admin"
upstream = "up"
auth = "required"
require_roles = ["admin"]

[[routes]]
path = "/acme"
upstream = "up"
auth = "required"
require_tenants = ["acme"]

[[routes]]
path = "/get-only"
upstream = "up"
auth = "public"
methods = ["GET"]

[[routes]]
path = "/stripped"
upstream = "up"
auth = "public"
strip_prefix = "/stripped"

[[routes]]
path = "/"
upstream = "up"
auth = "required"
"#;

/// A gateway config: stateless, HS256, `login.backend = "none"`, one upstream named `up`;
/// each part can be extended or replaced.
#[derive(Clone)]
pub struct Conf {
    server: String,
    token: String,
    sections: String,
    routes: String,
    urls: Option<Vec<String>>,
}

impl Default for Conf {
    fn default() -> Self {
        Self {
            server: String::new(),
            token: "algorithm = \"HS256\"\nsecret_env = \"T_SECRET\"\n".into(),
            sections: String::new(),
            routes: ROUTES.into(),
            urls: None,
        }
    }
}

impl Conf {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds lines to `[server]`.
    pub fn server(mut self, lines: &str) -> Self {
        self.server.push_str(lines);
        self.server.push('\n');
        self
    }

    /// Adds lines to `[token]`.
    pub fn token(mut self, lines: &str) -> Self {
        self.token.push_str(lines);
        self.token.push('\n');
        self
    }

    /// Replaces the body of `[token]`.
    pub fn token_section(mut self, body: &str) -> Self {
        self.token = format!("{body}\n");
        self
    }

    /// Adds whole sections (e.g. `[cors]` or `[identity]`).
    pub fn section(mut self, text: &str) -> Self {
        self.sections.push_str(text);
        self.sections.push('\n');
        self
    }

    /// Replaces the `[[routes]]`.
    pub fn routes(mut self, text: &str) -> Self {
        self.routes = text.into();
        self
    }

    /// Upstream urls instead of the test upstream's own address.
    pub fn urls(mut self, urls: Vec<String>) -> Self {
        self.urls = Some(urls);
        self
    }

    pub fn render(&self, upstream: SocketAddr) -> String {
        let urls = self
            .urls
            .clone()
            .unwrap_or_else(|| vec![format!("http://{upstream}")]);
        let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{grace}
{server}
[token]
{token}
[session]
mode = "stateless"

[login]
backend = "none"

{sections}
[[upstreams]]
name = "up"
urls = [{urls}]
connect_timeout = "1s"

{routes}
"#,
            // 5 s unless the test sets its own (a key given twice is a TOML error).
            grace = if self.server.contains("shutdown_grace") {
                ""
            } else {
                "shutdown_grace = \"5s\""
            },
            server = self.server,
            token = self.token,
            sections = self.sections,
            urls = urls.join(", "),
            routes = self.routes,
        )
    }
}

/// Env for the test configs: `T_SECRET` only.
pub fn env(name: &str) -> Option<String> {
    (name == "T_SECRET").then(|| SECRET.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

/// A running gateway in front of a test upstream. Derefs to a [`Probe`] for requests.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: Upstream,
    pub handle: Option<Handle>,
    pub app: Arc<App>,
    probe: Probe,
}

impl std::ops::Deref for Gateway {
    type Target = Probe;

    fn deref(&self) -> &Probe {
        &self.probe
    }
}

impl Gateway {
    /// The default config in front of an echo upstream.
    pub async fn start(conf: Conf) -> Gateway {
        Self::start_with(conf, Upstream::echo().await).await
    }

    /// `conf` in front of `upstream`.
    pub async fn start_with(conf: Conf, upstream: Upstream) -> Gateway {
        Self::start_in(conf, upstream, Path::new(".")).await
    }

    /// Like `start_with`, with relative paths in the config taken from `base_dir`.
    pub async fn start_in(conf: Conf, upstream: Upstream, base_dir: &Path) -> Gateway {
        let text = conf.render(upstream.addr);
        let loaded = match authgate::config::load_str(&text, base_dir, &env) {
            Ok(l) => l,
            Err(e) => panic!("test config refused: {e}\n{text}"),
        };
        let app = App::new(loaded.config);
        let handle = authgate::server::start(app.clone())
            .await
            .expect("gateway starts");
        Gateway {
            addr: handle.addr,
            admin: handle.admin_addr.expect("admin listener"),
            probe: Probe::new(handle.addr),
            upstream,
            handle: Some(handle),
            app,
        }
    }

    /// A client for this gateway that can move into a task.
    pub fn probe(&self) -> Probe {
        self.probe.clone()
    }

    /// Stops the gateway gracefully and waits for it.
    pub async fn shutdown(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }

    /// A token minted by the gateway's own key ring at `issued_at`.
    pub fn mint_at(&self, id: &AccessIdentity, issued_at: u64) -> String {
        let live = self.app.live();
        live.config
            .token
            .keys
            .mint(id, issued_at)
            .expect("mint a test token")
            .0
    }

    /// A fresh token for `id`.
    pub fn mint(&self, id: &AccessIdentity) -> String {
        self.mint_at(id, now())
    }

    /// A token for `id` with `left` seconds of life left.
    pub fn mint_expiring_in(&self, id: &AccessIdentity, left: u64) -> String {
        let ttl = self.app.live().config.token.access_ttl.as_secs();
        self.mint_at(id, now() + left - ttl)
    }
}

