//! Upstreams for the gateway to proxy to: hyper servers on port 0 that count what reaches
//! them (an echo upstream that answers with what it saw, one whose answers the test streams by
//! hand), and an address nothing listens on.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use authgate::body::{full, Body, BodyError};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

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
    type Error = BodyError;

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
