//! Test harness: a real gateway on port 0 (through the library entry `config::load_str` →
//! `App::new` → `server::start`), small hyper upstreams that count what reaches them, an HTTP
//! client (hyper-util's legacy client, HTTP/1.1 or h2c), a raw-socket client for requests that
//! must go out byte for byte, and hand-built JWTs for the token attacks.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authgate::app::App;
use authgate::body::{full, Body};
use authgate::server::Handle;
use authgate::tokens::AccessIdentity;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The HS256 secret every test gateway signs with (≥ 32 bytes), served as env `T_SECRET`.
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
/// Issuer and audience of the default `[token]` section.
pub const ISSUER: &str = "authgate";
pub const AUDIENCE: &str = "legacy-app";

/// Upper bound for anything a test awaits, so a regression fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(10);

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Awaits `f` for at most [`WAIT`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Upstreams
// ---------------------------------------------------------------------------------------------

/// A hyper upstream on port 0 that counts the requests that reach it.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests whose head reached the upstream.
    pub hits: Arc<AtomicUsize>,
    /// Requests whose whole body reached the upstream (echo upstream only).
    pub complete: Arc<AtomicUsize>,
}

impl Upstream {
    /// Serves `f` for every request (HTTP/1.1 and h2c, upgrades allowed).
    pub async fn start<F, Fut>(f: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let f = Arc::new(f);
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let f = f.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let fut = f(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            hits,
            complete: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// An echo upstream: answers JSON `{method, path, query, version, headers, body_len}`
    /// (the same shape as `authgate::demo::spawn_echo`, plus the body length) after reading
    /// the whole request body; counts complete bodies in `complete`.
    pub async fn echo() -> Upstream {
        Self::echo_with(|_| {}).await
    }

    /// The echo upstream, letting `tweak` add headers to each answer.
    pub async fn echo_with(tweak: fn(&mut HeaderMap)) -> Upstream {
        let complete = Arc::new(AtomicUsize::new(0));
        let done = complete.clone();
        let mut up = Upstream::start(move |req| {
            let done = done.clone();
            async move {
                let mut resp = echo(req, &done).await;
                tweak(resp.headers_mut());
                resp
            }
        })
        .await;
        up.complete = complete;
        up
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn complete(&self) -> usize {
        self.complete.load(Ordering::SeqCst)
    }
}

async fn echo(req: Request<Incoming>, complete: &AtomicUsize) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body_len = match body.collect().await {
        Ok(b) => {
            complete.fetch_add(1, Ordering::SeqCst);
            Some(b.to_bytes().len())
        }
        Err(_) => None,
    };
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        let entry = headers
            .entry(k.as_str().to_owned())
            .or_insert_with(|| Value::Array(vec![]));
        if let Value::Array(list) = entry {
            list.push(Value::String(
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ));
        }
    }
    let doc = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
    });
    let mut resp = Response::new(full(doc.to_string()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An upstream whose every answer sends `first` (with `Content-Length: content_length` if
/// given), then hands its body's sender to the test through the receiver returned: the rest of
/// the body comes only when the test sends it, and ends when the test drops the sender.
pub async fn held_stream(
    first: Bytes,
    content_length: Option<usize>,
) -> (
    Upstream,
    tokio::sync::mpsc::UnboundedReceiver<tokio::sync::mpsc::Sender<Bytes>>,
) {
    let (senders_tx, senders_rx) = tokio::sync::mpsc::unbounded_channel();
    let upstream = Upstream::start(move |_req| {
        let senders_tx = senders_tx.clone();
        let first = first.clone();
        async move {
            let (tx, body) = ChannelBody::new();
            tx.send(first).await.unwrap();
            senders_tx.send(tx).unwrap();
            let mut resp = Response::new(body.boxed());
            if let Some(len) = content_length {
                resp.headers_mut()
                    .insert(http::header::CONTENT_LENGTH, len.into());
            }
            resp
        }
    })
    .await;
    (upstream, senders_rx)
}

/// A body fed from a channel: each message is one data frame; dropping the sender ends it.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl ChannelBody {
    pub fn new() -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        (tx, ChannelBody(rx))
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = authgate::body::BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// An address nothing listens on (bound, then released).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

// ---------------------------------------------------------------------------------------------
// Gateway config
// ---------------------------------------------------------------------------------------------

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

/// An HTTP/1.1 client (pooled) and raw-socket client aimed at one gateway.
#[derive(Clone)]
pub struct Probe {
    pub addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Probe {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET `path` with `headers`.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", path, headers, Bytes::new()).await
    }

    /// GET `path` with `Authorization: Bearer token`.
    pub async fn get_auth(&self, path: &str, token: &str) -> Resp {
        let auth = format!("Bearer {token}");
        self.get(path, &[("authorization", &auth)]).await
    }

    /// Any request through the pooled HTTP/1.1 client.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(self.url(path));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body)).expect("test request");
        send(&self.client, req).await
    }

    /// Sends `bytes` on a new connection exactly as given; see [`raw`].
    pub async fn raw(&self, bytes: impl Into<Vec<u8>>) -> Resp {
        raw(self.addr, bytes.into()).await.expect("raw response")
    }

    /// `GET path HTTP/1.1` written byte for byte, with extra header lines.
    pub async fn raw_get(&self, path: &str, extra: &str) -> Resp {
        self.raw(format!(
            "GET {path} HTTP/1.1\r\nHost: gw.test\r\n{extra}Connection: close\r\n\r\n"
        ))
        .await
    }
}

/// Alice: user 1001, session `sess-alice`, tenant acme, role admin.
pub fn alice() -> AccessIdentity {
    AccessIdentity {
        sub: "1001".into(),
        name: Some("alice".into()),
        sid: Some("sess-alice".into()),
        plat: Some("web".into()),
        tenant: Some("acme".into()),
        roles: Some(vec!["admin".into()]),
    }
}

/// Bob: user 2002, tenant globex, role user.
pub fn bob() -> AccessIdentity {
    AccessIdentity {
        sub: "2002".into(),
        name: Some("bob".into()),
        sid: Some("sess-bob".into()),
        plat: Some("app".into()),
        tenant: Some("globex".into()),
        roles: Some(vec!["user".into()]),
    }
}

// ---------------------------------------------------------------------------------------------
// Clients and responses
// ---------------------------------------------------------------------------------------------

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): status {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The gateway's error code (`{"error": CODE, ...}`).
    pub fn code(&self) -> String {
        let j = self.json();
        assert!(j["message"].is_string(), "error body has a message: {j}");
        j["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {j}"))
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// Asserts status and error code in one go.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.code(), code);
    }

    /// The values the echo upstream saw for header `name` (lower case), or none.
    pub fn seen(&self, name: &str) -> Vec<String> {
        let j = self.json();
        match &j["headers"][name] {
            Value::Array(list) => list
                .iter()
                .map(|v| v.as_str().expect("string").to_owned())
                .collect(),
            Value::Null => vec![],
            other => panic!("unexpected headers entry {other}"),
        }
    }

    /// The path the echo upstream saw.
    pub fn seen_path(&self) -> String {
        self.json()["path"]
            .as_str()
            .unwrap_or_else(|| panic!("not an echo answer: {}", self.json()))
            .to_owned()
    }
}

/// Sends one request and reads the whole answer.
pub async fn send(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Resp {
    let resp = within("a response", client.request(req))
        .await
        .expect("request reaches the gateway");
    let (parts, body) = resp.into_parts();
    let body = within("a response body", body.collect())
        .await
        .expect("response body")
        .to_bytes();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// An h2c (prior knowledge) client.
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Writes `request` on a fresh connection (in its own task, so a server that answers before
/// reading everything does not block us) and reads until the peer closes. A reset after the
/// answer arrived is not an error.
pub async fn raw(addr: SocketAddr, request: Vec<u8>) -> io::Result<Resp> {
    let stream = TcpStream::connect(addr).await?;
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        // Keep the write half open until the reader is done (dropping it sends FIN).
        wr
    });
    let mut buf = Vec::new();
    let read = within("the raw answer", async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e),
            }
            if let Some(done) = response_len(&buf) {
                buf.truncate(done);
                return Ok(());
            }
        }
    })
    .await;
    drop(writer);
    if let Err(e) = read {
        if buf.is_empty() {
            return Err(e);
        }
    }
    parse_response(&buf).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP response: {:?}", String::from_utf8_lossy(&buf)),
        )
    })
}

/// Where the first complete response in `buf` ends, if it is complete.
pub fn response_len(buf: &[u8]) -> Option<usize> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let lower = head.to_ascii_lowercase();
    if lower.contains("transfer-encoding: chunked") {
        let end = find(&buf[head_end..], b"0\r\n\r\n")?;
        return Some(head_end + end + 5);
    }
    let len = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())?;
    (buf.len() >= head_end + len).then_some(head_end + len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_response(buf: &[u8]) -> Option<Resp> {
    let head_end = find(buf, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let mut headers = HeaderMap::new();
    let mut chunked = false;
    for l in lines {
        let (k, v) = l.split_once(':')?;
        let name = HeaderName::from_bytes(k.trim().as_bytes()).ok()?;
        let value = HeaderValue::from_str(v.trim()).ok()?;
        if name == http::header::TRANSFER_ENCODING && v.trim().eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
        headers.append(name, value);
    }
    let rest = &buf[head_end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(Resp {
        status,
        headers,
        body: body.into(),
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-built JWTs
// ---------------------------------------------------------------------------------------------

pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// `header.payload.HMAC-SHA256(key)`, header and claims as given.
pub fn jwt_hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64(tag.as_ref()))
}

/// The header the gateway's own tokens carry.
pub fn hs256_header() -> Value {
    json!({"alg": "HS256", "typ": "JWT", "kid": "k1"})
}

/// Valid claims for alice, issued now, one hour to live.
pub fn good_claims() -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "1001",
        "name": "alice",
        "sid": "sess-hand",
        "plat": "web",
        "iat": now,
        "exp": now + 3600,
        "jti": "hand-built-1",
        "roles": ["admin"],
    })
}

/// The decoded claims of a compact JWT (no verification).
pub fn payload_of(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url payload"))
        .expect("JSON payload")
}

/// The value of one `authgate_requests_total` series on the admin `/metrics` (0 if absent).
pub async fn requests_total(admin: SocketAddr, route: &str, status: &str) -> u64 {
    let body = Probe::new(admin).get("/metrics", &[]).await.body;
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .filter(|l| l.starts_with("authgate_requests_total{"))
        .filter(|l| l.contains(&format!("route=\"{route}\"")))
        .filter(|l| l.contains(&format!("status=\"{status}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// One series' value on `/metrics` (0 when absent): the line `name{...} v` whose labels
/// include every one of `labels` (`name v` when `labels` is empty).
pub async fn metric(admin: &Probe, name: &str, labels: &[&str]) -> f64 {
    let body = admin.get("/metrics", &[]).await.body;
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .filter(|l| {
            let Some(rest) = l.strip_prefix(name) else {
                return false;
            };
            if labels.is_empty() {
                rest.starts_with(' ')
            } else {
                rest.starts_with('{') && labels.iter().all(|want| rest.contains(want))
            }
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
