//! `authgate demo`: a built-in echo upstream and a gateway in front of it, with an ephemeral
//! signing secret and the memory store, so a first-time user can try everything with curl.
//!
//! The echo upstream answers every request with JSON describing what it received (method,
//! path, query, headers), which makes header stripping and injection visible. A demo-only
//! token service hands out access tokens that are already inside the silent-refresh window,
//! minted when asked, so that step of the walk-through works however long after start-up it
//! is run. The same service is a small identity provider ([`idp`]): the demo's config lists
//! it under `[[token.issuers]]`, and its tokens show a foreign token's way through the gateway.
//! The echo upstream also serves a single-page app ([`spa`], on the public route `/spa`) that
//! uses the JavaScript client of `clients/js`, so the whole client loop shows in a browser.

mod idp;
mod spa;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use base64::Engine;
use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::app::App;
use crate::body::{full, Body};
use crate::server::Handle;
use crate::tokens::AccessIdentity;
use idp::DemoIdp;

/// Where the token service hands out tokens near expiry.
const NEAR_EXPIRY_PATH: &str = "/near-expiry";

/// Starts an echo upstream on `addr` (port 0 for any) and returns where it listens.
pub async fn spawn_echo(addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc =
                    service_fn(
                        |req: Request<Incoming>| async move { Ok::<_, Infallible>(echo(req)) },
                    );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

fn echo(req: Request<Incoming>) -> Response<Body> {
    if let Some(page) = spa::answer(req.uri().path()) {
        return page;
    }
    if crate::auth::browser::is_html_navigation(req.method(), req.headers()) {
        return echo_page(&req);
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
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
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// What a browser sees of the echo upstream: the identity the gateway injected, and a
/// logout button (a plain form: the gateway checks its origin).
fn echo_page(req: &Request<Incoming>) -> Response<Body> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut rows = String::new();
    for name in [
        "x-user-id",
        "x-user-name",
        "x-tenant-id",
        "x-user-roles",
        "x-session-id",
        "x-user-platform",
    ] {
        let value = req.headers().get(name).map_or("(not sent)".into(), |v| {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        });
        rows.push_str(&format!(
            "<tr><th>{name}</th><td id=\"{name}\">{}</td></tr>\n",
            esc(&value)
        ));
    }
    let path = esc(req.uri().path());
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>authgate demo upstream</title></head>\n\
         <body><h1>Hello from the upstream</h1>\n<p>You asked for <code>{path}</code>. \
         The gateway told this app who you are:</p>\n<table>\n{rows}</table>\n\
         <form method=\"post\" action=\"/auth/logout\"><button type=\"submit\">Log out</button></form>\n\
         </body></html>\n"
    );
    let mut resp = Response::new(full(html));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// Binds the demo-only token service's listener next to the gateway (`ip`, any port): its
/// address is the demo identity provider's issuer, which the config names, so it is known
/// before the gateway is built. Connections wait in the backlog until [`serve_token_service`].
async fn bind_token_service(ip: IpAddr) -> Result<TcpListener, DemoError> {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .map_err(failed("demo token service"))
}

/// Serves the demo-only token service on `listener` until the demo's shutdown signal:
/// `/near-expiry` gets a new access token with a minute left (inside the silent-refresh
/// window), for a new session of the demo user on platform `app`; the demo identity
/// provider's discovery, JWKS and `/idp-token` (a fresh foreign token) are served beside it.
fn serve_token_service(app: Arc<App>, listener: TcpListener, idp: DemoIdp) {
    let mut stop = app.shutdown.signal();
    let idp = Arc::new(idp);
    tokio::spawn(async move {
        loop {
            // Until the demo's shutdown signal, like the gateway's own listeners.
            let accepted = tokio::select! {
                _ = stop.signalled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let (app, idp) = (app.clone(), idp.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (app, idp) = (app.clone(), idp.clone());
                    async move { Ok::<_, Infallible>(token_service(&app, &idp, req.uri().path()).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// The token service's answer for `path`, never stored by a cache.
async fn token_service(app: &App, idp: &DemoIdp, path: &str) -> Response<Body> {
    let mut resp = match path {
        NEAR_EXPIRY_PATH => plain_token(near_expiry_token(app).await),
        idp::TOKEN_PATH => plain_token(idp.token(app.clock.now())),
        idp::DISCOVERY_PATH => json_answer(&idp.discovery()),
        idp::JWKS_PATH => json_answer(idp.jwks()),
        _ => {
            let mut r = Response::new(full("not found\n"));
            *r.status_mut() = http::StatusCode::NOT_FOUND;
            r
        }
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A minted token as `text/plain`, or 503 when it could not be minted.
fn plain_token(token: Result<String, DemoError>) -> Response<Body> {
    match token {
        Ok(token) => {
            let mut r = Response::new(full(token));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "demo token service");
            let mut r = Response::new(full("no token: see the demo's log\n"));
            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            r
        }
    }
}

fn json_answer(doc: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(doc.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A new session of the demo user on platform `app` and an access token for it issued so
/// that it has a minute left.
async fn near_expiry_token(app: &App) -> Result<String, DemoError> {
    let live = app.live();
    let t = app.clock.now();
    let aged = t.saturating_sub(live.config.token.access_ttl.as_secs().saturating_sub(60));
    let new = crate::session::NewSession {
        user_id: "1001".into(),
        user_name: DEMO_USER.into(),
        tenant: Some("acme".into()),
        roles: vec!["admin".into()],
        platform: "app".into(),
        device: Some("demo-near-expiry-token".into()),
        ip: "127.0.0.1".into(),
        user_agent: None,
    };
    let created = app
        .store
        .create(new, None, live.lifetimes, app.clock.now_ms())
        .await
        .map_err(|e| DemoError(format!("demo session: {e}")))?;
    let id = AccessIdentity {
        sub: "1001".into(),
        name: Some(DEMO_USER.into()),
        sid: Some(created.session.id.clone()),
        plat: Some("app".into()),
        tenant: Some("acme".into()),
        roles: Some(vec!["admin".into()]),
    };
    let (token, _) = live
        .config
        .token
        .keys
        .mint(&id, aged)
        .map_err(|e| DemoError(format!("minting the demo token: {e}")))?;
    Ok(token)
}

/// A running demo: the gateway's handle and the walk-through to print.
pub struct Demo {
    pub handle: Handle,
    pub walkthrough: String,
    /// The demo's private temporary folder (its users file); removed on drop.
    pub dir: TempDir,
}

/// A folder removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DemoError(String);

/// The demo user's credentials (printed in the walk-through).
pub(crate) const DEMO_USER: &str = "alice";
pub(crate) const DEMO_PASSWORD: &str = "wonderland-demo-42";

/// Starts the echo upstream, the demo token service (with its identity provider) and a gateway
/// in front of the upstream.
pub async fn start(listen: SocketAddr, admin: SocketAddr) -> Result<Demo, DemoError> {
    start_with(listen, admin, None).await
}

/// [`start`], with access tokens of `access_ttl_secs` (a silent-refresh window of half of
/// it and no leeway) instead of 2 h: `authgate demo --access-ttl-secs`.
pub async fn start_with(
    listen: SocketAddr,
    admin: SocketAddr,
    access_ttl_secs: Option<u64>,
) -> Result<Demo, DemoError> {
    let echo = spawn_echo(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(failed("echo upstream"))?;
    let dir = write_users_file()?;
    // Bound first: its address is the identity provider's issuer, which the config names.
    let listener = bind_token_service(listen.ip()).await?;
    let tokens = listener
        .local_addr()
        .map_err(failed("demo token service"))?;
    let idp = DemoIdp::new(tokens)?;
    let mut text = config_text(listen, admin, echo, idp.issuer());
    if let Some(ttl) = access_ttl_secs {
        let window = (ttl / 2).max(1);
        text = text
            .replace(
                "access_ttl = \"2h\"",
                &format!("access_ttl = \"{ttl}s\"\nleeway = \"0s\""),
            )
            .replace(
                "silent_refresh_window = \"30m\"",
                &format!("silent_refresh_window = \"{window}s\""),
            );
    }
    let app = demo_app(&text, &dir)?;
    // Near-expiry tokens come from a demo-only service, minted when the walk-through's step
    // runs: one minted at start-up would be past its expiry (and leeway) 90 s later.
    serve_token_service(app.clone(), listener, idp);
    let handle = crate::server::start(app)
        .await
        .map_err(|e| DemoError(e.to_string()))?;
    let walkthrough = walkthrough(&format!("http://{}", handle.addr), admin, echo, tokens);
    Ok(Demo {
        handle,
        walkthrough,
        dir,
    })
}

/// The gateway's app for the demo's config `text`, with a fresh signing secret; `dir` holds
/// the users file. Its issuers' first key fetch starts at once.
fn demo_app(text: &str, dir: &TempDir) -> Result<Arc<App>, DemoError> {
    let secret = random_secret()?;
    let env = |name: &str| (name == "AUTHGATE_DEMO_SECRET").then(|| secret.clone());
    let loaded = crate::config::load_str(text, &dir.0, &env).map_err(failed("demo config"))?;
    Ok(App::new(loaded.config))
}

/// Turns an error into a [`DemoError`] that says which step failed.
fn failed<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> DemoError {
    move |e| DemoError(format!("{what}: {e}"))
}

/// A fresh 32-byte HMAC secret for the demo's tokens, base64url.
fn random_secret() -> Result<String, DemoError> {
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret)
        .map_err(|_| DemoError("no randomness for the demo secret".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret))
}

/// The demo user's users file, in a private temporary folder for the life of the demo.
fn write_users_file() -> Result<TempDir, DemoError> {
    // One folder per demo, even for several in one process (tests): each removes its own.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("authgate-demo-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(failed("temporary folder"))?;
    let dir = TempDir(dir);
    let hash = crate::tokens::keygen::hash_password(DEMO_PASSWORD)
        .map_err(failed("hashing the demo password"))?;
    let users = format!(
        "[[users]]\nid = \"1001\"\nusername = \"{DEMO_USER}\"\npassword_hash = \"{hash}\"\ntenant = \"acme\"\nroles = [\"admin\"]\n"
    );
    std::fs::write(dir.0.join("users.toml"), users)
        .map_err(failed("writing the demo users file"))?;
    Ok(dir)
}

/// The demo's `gateway.toml`: HS256 from the environment, the memory store, the users file,
/// and the demo identity provider at `issuer`.
fn config_text(listen: SocketAddr, admin: SocketAddr, echo: SocketAddr, issuer: &str) -> String {
    let audience = idp::AUDIENCE;
    let spa = spa::PATH;
    format!(
        r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"

[token]
algorithm = "HS256"
secret_env = "AUTHGATE_DEMO_SECRET"
access_ttl = "2h"
silent_refresh_window = "30m"

[[token.issuers]]
issuer = "{issuer}"
audiences = ["{audience}"]
algorithms = ["ES256"]

[session]
store = "memory"
mode = "stateful"

[login]
backend = "users_file"
users_file = "users.toml"

[browser]
enabled = true
insecure_cookies = true   # the demo is plain HTTP on loopback; never in production

[[upstreams]]
name = "echo"
urls = ["http://{echo}"]

[[routes]]
path = "/public"
upstream = "echo"
auth = "public"

[[routes]]                # the single-page app of clients/js: static files, no token needed
path = "{spa}"
upstream = "echo"
auth = "public"
methods = ["GET", "HEAD"]

[[routes]]
path = "/"
upstream = "echo"
auth = "required"
"#
    )
}

/// The curl walk-through printed at start-up.
fn walkthrough(base: &str, admin: SocketAddr, echo: SocketAddr, tokens: SocketAddr) -> String {
    let spa = spa::PATH;
    format!(
        r#"authgate demo
  gateway   {base}  (public: /public/*, the JS client's page {spa}/; everything else needs a token)
  admin     http://{admin}/healthz  /readyz  /metrics
  upstream  http://{echo}  (echoes what it receives as JSON)
  tokens    http://{tokens}/near-expiry  (demo only: a token with a minute left, minted per call)
  idp       http://{tokens}  (demo only: an identity provider stand-in, OIDC discovery, ES256 JWKS, /idp-token)
  demo user {DEMO_USER} / {DEMO_PASSWORD}  (id 1001, tenant acme, role admin)
  store     memory (sessions are lost when the demo stops)

# 1. A public route: no token needed; a spoofed identity header never reaches the upstream.
curl -s {base}/public/hello -H 'X-User-Id: 666'

# 2. A protected route without a token: 401 missing_token.
curl -si {base}/api/orders

# 3. Log in (X-Platform: web | h5 | app); keep the two tokens.
curl -s -X POST {base}/auth/login -H 'Content-Type: application/json' -H 'X-Platform: web' \
     -d '{{"username":"{DEMO_USER}","password":"{DEMO_PASSWORD}"}}' | tee /tmp/authgate-login.json
ACCESS=$(sed -E 's/.*"access_token":"([^"]+)".*/\1/' /tmp/authgate-login.json)
REFRESH=$(sed -E 's/.*"refresh_token":"([^"]+)".*/\1/' /tmp/authgate-login.json)

# 4. Call the protected route: the upstream sees X-User-Id, X-User-Name, X-Tenant-Id, X-Session-Id ...
curl -s {base}/api/orders -H "Authorization: Bearer $ACCESS"

# 5. Silent refresh: the demo's token service mints a token with a minute left (for a new
#    session of {DEMO_USER} on platform app); a fresh one rides back in `refresh-token`.
OLD=$(curl -s http://{tokens}/near-expiry)
curl -si {base}/api/orders -H "Authorization: Bearer $OLD" | grep -i '^refresh-token'

# 6. Refresh: a new pair for the same session; the old refresh token is spent.
curl -s -X POST {base}/auth/refresh -H 'Content-Type: application/json' -d "{{\"refresh_token\":\"$REFRESH\"}}"

# 7. Your sessions, then log out: the access token stops working at once (401 session_revoked).
curl -s {base}/auth/sessions -H "Authorization: Bearer $ACCESS"
curl -si -X POST {base}/auth/logout -H "Authorization: Bearer $ACCESS" | head -1
curl -s {base}/api/orders -H "Authorization: Bearer $ACCESS"

# 8. Path tricks never reach the public route: 400, or the protected route's 401.
curl -si {base}/public/..%2f../api/orders | head -1
curl -si --path-as-is '{base}/public/../api/orders' | head -1

# 9. A token from your identity provider (the demo runs a stand-in at http://{tokens}):
#    the gateway fetched its keys by OIDC discovery; the upstream sees its user (X-User-Id
#    idp-user-7, X-User-Name carol, no X-Session-Id), and nothing is ever refreshed.
IDP=$(curl -s http://{tokens}/idp-token)
curl -s {base}/api/orders -H "Authorization: Bearer $IDP"

# 10. A browser: open {base}/ : the login page, then (as {DEMO_USER}) the upstream's page
#     with your identity, kept by cookies the gateway sets. The same with curl's cookie jar:
#     a form login, a request by cookie, and a cross-site post with the cookie (403 csrf_failed).
curl -si -c /tmp/authgate-jar -X POST {base}/auth/login -H 'Origin: {base}' \
     -d 'username={DEMO_USER}&password={DEMO_PASSWORD}&return_to=/api/orders' | grep -i '^location'
curl -s -b /tmp/authgate-jar {base}/api/orders
curl -si -b /tmp/authgate-jar -X POST {base}/api/orders -H 'Origin: https://evil.example' | head -1

# 11. A single-page app: open {base}{spa}/ in a browser. The page uses the JavaScript client
#     (clients/js, served as {spa}/authgate.js): log in, call the upstream, list the sessions, log
#     out. With `--access-ttl-secs 20` you see the silent refresh, then the refresh; log in again
#     with step 3's curl and the page is told `session_replaced` at its next call.

Ctrl-C stops the demo.
"#
    )
}
