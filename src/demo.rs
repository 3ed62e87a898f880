//! `authgate demo`: a built-in echo upstream and a gateway in front of it, with an ephemeral
//! signing secret and the memory store, so a first-time user can try everything with curl.
//!
//! The echo upstream answers every request with JSON describing what it received (method,
//! path, query, headers), which makes header stripping and injection visible.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use base64::Engine;
use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::app::{now, App};
use crate::body::{full, Body};
use crate::server::Handle;
use crate::tokens::AccessIdentity;

/// Starts an echo upstream on `addr` (port 0 for any) and returns where it listens.
pub async fn spawn_echo(addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move { Ok::<_, Infallible>(echo(req)) });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

fn echo(req: Request<Incoming>) -> Response<Body> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers.entry(k.as_str().to_owned()).or_default().push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let body = serde_json::json!({
        "upstream": "authgate-demo-echo",
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    let mut resp = Response::new(full(body.to_string()));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A running demo: the gateway's handle and the walk-through to print.
pub struct Demo {
    pub handle: Handle,
    pub walkthrough: String,
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DemoError(String);

/// Starts the echo upstream and a gateway in front of it.
pub async fn start(listen: SocketAddr, admin: SocketAddr) -> Result<Demo, DemoError> {
    let echo = spawn_echo(SocketAddr::from(([127, 0, 0, 1], 0))).await.map_err(|e| DemoError(format!("echo upstream: {e}")))?;
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| DemoError("no randomness for the demo secret".into()))?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let text = format!(
        r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"

[token]
algorithm = "HS256"
secret_env = "AUTHGATE_DEMO_SECRET"
access_ttl = "2h"
silent_refresh_window = "30m"

[session]
store = "memory"
mode = "stateless"

[login]
backend = "none"

[[upstreams]]
name = "echo"
urls = ["http://{echo}"]

[[routes]]
path = "/public"
upstream = "echo"
auth = "public"

[[routes]]
path = "/"
upstream = "echo"
auth = "required"
"#
    );
    let env = |name: &str| (name == "AUTHGATE_DEMO_SECRET").then(|| secret.clone());
    let loaded = crate::config::load_str(&text, Path::new("."), &env)
        .map_err(|e| DemoError(format!("demo config: {e}")))?;
    let app = App::new(loaded.config);
    let live = app.live();
    let keys = &live.config.token.keys;
    let id = AccessIdentity {
        sub: "1001".into(),
        name: Some("alice".into()),
        sid: None,
        plat: Some("web".into()),
        tenant: Some("acme".into()),
        roles: Some(vec!["admin".into()]),
    };
    let (token, _) = keys.mint(&id, now()).map_err(|e| DemoError(format!("minting the demo token: {e}")))?;
    // A token already inside the silent-refresh window, to show the refresh header.
    let (near_expiry, _) = keys
        .mint(&id, now().saturating_sub(live.config.token.access_ttl.as_secs() - 60))
        .map_err(|e| DemoError(format!("minting the demo token: {e}")))?;
    drop(live);
    let handle = crate::server::start(app).await.map_err(|e| DemoError(format!("binding {listen} / {admin}: {e}")))?;
    let base = format!("http://{}", handle.addr);
    let walkthrough = format!(
        r#"authgate demo
  gateway   {base}  (public: /public/*, everything else needs a token)
  admin     http://{admin}/healthz  /readyz  /metrics
  upstream  http://{echo}  (echoes what it receives as JSON)
  demo user alice (id 1001, tenant acme, role admin)

# 1. A public route: no token needed; a spoofed identity header never reaches the upstream.
curl -s {base}/public/hello -H 'X-User-Id: 666'

# 2. A protected route without a token: 401 missing_token.
curl -si {base}/api/orders

# 3. With alice's access token: the upstream sees X-User-Id, X-User-Name, X-Tenant-Id, ...
TOKEN='{token}'
curl -s {base}/api/orders -H "Authorization: Bearer $TOKEN"

# 4. A token close to expiry: a fresh one rides back in the refresh-token header.
OLD='{near_expiry}'
curl -si {base}/api/orders -H "Authorization: Bearer $OLD" | grep -i '^refresh-token'

# 5. Path tricks do not reach the public route: 400, or the protected route's 401.
curl -si {base}/public/..%2f../api/orders
curl -si --path-as-is '{base}/public/../api/orders'

Ctrl-C stops the demo.
"#
    );
    Ok(Demo { handle, walkthrough })
}
