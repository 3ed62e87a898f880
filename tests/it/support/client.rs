//! Clients aimed at a gateway: [`Probe`] (a pooled HTTP/1.1 client plus a raw-socket one, for
//! requests that must go out byte for byte, with calls of the auth endpoints: login, refresh,
//! verify), an h2c client, [`Resp`] (an answer read whole,
//! with readers for the gateway's error shape and for what the echo upstream saw), and readers
//! of the admin `/metrics`.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::logs;
use super::wait::within;

/// An HTTP/1.1 client (pooled) and raw-socket client aimed at one gateway.
#[derive(Clone)]
pub struct Probe {
    pub addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Probe {
    pub fn new(addr: SocketAddr) -> Self {
        logs::capture();
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

    /// `POST path` with a JSON content type, a body and at most one extra header.
    pub async fn post(&self, path: &str, header: Option<(&str, &str)>, body: String) -> Resp {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(header);
        self.request("POST", path, &headers, Bytes::from(body))
            .await
    }

    /// `POST /auth/login` for `user` on `platform` (`None`: no `X-Platform` header).
    pub async fn login_on(&self, user: &str, password: &str, platform: Option<&str>) -> Resp {
        let body = json!({ "username": user, "password": password }).to_string();
        self.post("/auth/login", platform.map(|p| ("x-platform", p)), body)
            .await
    }

    /// `POST /auth/login` without `X-Platform` (the default platform, web).
    pub async fn login(&self, user: &str, password: &str) -> Resp {
        self.login_on(user, password, None).await
    }

    /// `POST /auth/refresh` with `refresh_token`.
    pub async fn refresh(&self, refresh_token: &str) -> Resp {
        let body = json!({ "refresh_token": refresh_token }).to_string();
        self.post("/auth/refresh", None, body).await
    }

    /// `method path` with `Authorization: Bearer access` and no body.
    pub async fn with_token(&self, method: &str, path: &str, access: &str) -> Resp {
        let auth = format!("Bearer {access}");
        self.request(method, path, &[("authorization", &auth)], Bytes::new())
            .await
    }

    /// `GET /auth/verify` as a forward-auth proxy asks it (the gateway must trust the test's
    /// loopback peer: `TRUST_LOOPBACK`): `X-Forwarded-Uri: uri`, method GET.
    pub async fn verify(&self, uri: &str, access: Option<&str>) -> Resp {
        let forwarded = [("x-forwarded-method", "GET"), ("x-forwarded-uri", uri)];
        self.verify_with(&forwarded, access).await
    }

    /// `GET /auth/verify` with exactly the forwarded headers given (name, value; none added)
    /// and `Authorization: Bearer access` if given.
    pub async fn verify_with(&self, forwarded: &[(&str, &str)], access: Option<&str>) -> Resp {
        let auth = access.map(|t| format!("Bearer {t}"));
        let mut h = forwarded.to_vec();
        if let Some(a) = auth.as_deref() {
            h.push(("authorization", a));
        }
        self.request("GET", "/auth/verify", &h, Bytes::new()).await
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

    /// Every `Set-Cookie` value of the answer, in order.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ascii Set-Cookie"))
            .collect()
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
    note_request(req.uri().query(), req.headers());
    let resp = within("a response", client.request(req))
        .await
        .expect("request reaches the gateway");
    let (parts, body) = resp.into_parts();
    let body = within("a response body", body.collect())
        .await
        .expect("response body")
        .to_bytes();
    let resp = Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    };
    note_response(&resp);
    resp
}

/// Tells the leak check ([`logs`]) what a request carried that must never be logged: its
/// query, its bearer token or other credentials, its cookie values.
fn note_request(query: Option<&str>, headers: &HeaderMap) {
    if let Some(q) = query {
        logs::query(q);
    }
    for v in headers.get_all(http::header::AUTHORIZATION) {
        let v = String::from_utf8_lossy(v.as_bytes());
        logs::secret(v.split_once(' ').map_or(&*v, |(_, cred)| cred));
    }
    for v in headers.get_all(http::header::COOKIE) {
        for pair in String::from_utf8_lossy(v.as_bytes()).split(';') {
            if let Some((_, value)) = pair.split_once('=') {
                logs::secret(value);
            }
        }
    }
}

/// The same for an answer: the values it sets in cookies, the tokens in its JSON.
fn note_response(resp: &Resp) {
    for v in resp.headers.get_all(http::header::SET_COOKIE) {
        let v = String::from_utf8_lossy(v.as_bytes());
        let pair = v.split(';').next().unwrap_or_default();
        if let Some((_, value)) = pair.split_once('=') {
            logs::secret(value);
        }
    }
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&resp.body) {
        for key in ["access_token", "refresh_token"] {
            if let Some(Value::String(t)) = map.get(key) {
                logs::secret(t);
            }
        }
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
    note_raw(&request);
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

/// [`note_request`] for a request written byte for byte (its head, as far as it parses).
fn note_raw(request: &[u8]) {
    let head_end = find(request, b"\r\n\r\n").unwrap_or(request.len());
    let head = String::from_utf8_lossy(&request[..head_end]);
    let mut lines = head.split("\r\n");
    let target = lines.next().and_then(|l| l.split(' ').nth(1));
    let query = target.and_then(|t| t.split_once('?')).map(|(_, q)| q);
    let mut headers = HeaderMap::new();
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.trim().as_bytes()),
            HeaderValue::from_str(v.trim()),
        ) {
            headers.append(k, v);
        }
    }
    note_request(query, &headers);
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

pub fn parse_response(buf: &[u8]) -> Option<Resp> {
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

/// The value of one `authgate_requests_total` series on the admin `/metrics` (0 if absent).
pub async fn requests_total(admin: &Probe, route: &str, status: &str) -> u64 {
    let body = admin.get("/metrics", &[]).await.body;
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
