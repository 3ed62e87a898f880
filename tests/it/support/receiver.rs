//! A receiver of `[notify]`'s session events, as an app behind the gateway would run one: a
//! hyper server on port 0 that checks each event's `X-Authgate-Signature` (HMAC-SHA256 of
//! `"<t>.<body>"` under its secret, `t` at most [`TOLERANCE`] old) with its own code, keeps
//! every delivery, and answers as the test scripts it: 200, another status, 200 after a
//! delay, or nothing until released. A delivery whose signature does not verify is answered
//! 400, as a real receiver would refuse a forgery.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authgate::body::{full, Body};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::wait::{now, within};

/// The secret the test gateways sign with (env `T_NOTIFY`), 32 bytes and more.
pub const NOTIFY_SECRET: &str = "notify-secret-for-the-tests-0123456789";

/// How old a signature's timestamp may be (seconds), as Stripe's libraries default to.
pub const TOLERANCE: u64 = 300;

/// How the receiver answers one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    Status(u16),
    /// 200, after this long.
    After(Duration),
    /// No answer until [`Receiver::release`] (then 200).
    Hang,
}

/// One POST as it reached the receiver.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub body: Bytes,
    pub json: Value,
    pub signature: String,
    pub content_type: Option<String>,
    /// The receiver's own check of the signature.
    pub verified: Result<(), String>,
    pub at: Instant,
    pub path: String,
}

impl Delivery {
    /// `(session_id, event, reason)`; the reason `"-"` when null.
    pub fn what(&self) -> (String, String, String) {
        let s = |k: &str| self.json[k].as_str().unwrap_or("-").to_owned();
        (s("session_id"), s("event"), s("reason"))
    }
}

struct State {
    /// Answers in order; the last one repeats.
    script: Mutex<Vec<Answer>>,
    got: Mutex<Vec<Delivery>>,
    /// Bumped at each delivery (waiters watch it).
    count: watch::Sender<usize>,
    /// Bumped to let hanging deliveries answer.
    released: watch::Sender<u64>,
    /// Deliveries being held (Hang) right now.
    holding: watch::Sender<usize>,
    secret: Vec<u8>,
}

/// A running receiver; it stops with the test (its task is aborted on drop).
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
        // Hanging deliveries answer so their connections close.
        self.release();
    }
}

impl Receiver {
    /// A receiver verifying with [`NOTIFY_SECRET`] and answering `script` in order (the last
    /// answer repeats).
    pub async fn start(script: &[Answer]) -> Receiver {
        Self::with_secret(script, NOTIFY_SECRET.as_bytes()).await
    }

    pub async fn with_secret(script: &[Answer], secret: &[u8]) -> Receiver {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let state = Arc::new(State {
            script: Mutex::new(script.to_vec()),
            got: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            released: watch::channel(0).0,
            holding: watch::channel(0).0,
            secret: secret.to_vec(),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { addr, state, task }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers from now on.
    pub fn set(&self, script: &[Answer]) {
        *self.state.script.lock().unwrap() = script.to_vec();
    }

    /// Lets every held delivery answer (200).
    pub fn release(&self) {
        self.state.released.send_modify(|n| *n += 1);
    }

    /// Every delivery so far.
    pub fn got(&self) -> Vec<Delivery> {
        self.state.got.lock().unwrap().clone()
    }

    /// Waits (bounded) until at least `n` deliveries arrived; all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        let mut rx = self.state.count.subscribe();
        within(
            &format!("{n} session events at the receiver"),
            rx.wait_for(|c| *c >= n),
        )
        .await
        .expect("receiver state");
        self.got()
    }

    /// Waits (bounded) until exactly `n` deliveries are being held (Hang).
    pub async fn wait_holding(&self, n: usize) {
        let mut rx = self.state.holding.subscribe();
        within(&format!("{n} held deliveries"), rx.wait_for(|c| *c == n))
            .await
            .expect("receiver state");
    }

    /// Deliveries being held now.
    pub fn holding(&self) -> usize {
        *self.state.holding.borrow()
    }
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let signature = req
        .headers()
        .get("x-authgate-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = req.uri().path().to_owned();
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let verified = verify(&st.secret, &signature, &body, now(), TOLERANCE);
    let answer = {
        let mut script = st.script.lock().unwrap();
        if script.len() > 1 {
            script.remove(0)
        } else {
            script[0]
        }
    };
    let ok = verified.is_ok();
    st.got.lock().unwrap().push(Delivery {
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        body,
        signature,
        content_type,
        verified,
        at: Instant::now(),
        path,
    });
    st.count.send_modify(|n| *n += 1);
    if !ok {
        return status(StatusCode::BAD_REQUEST);
    }
    match answer {
        Answer::Ok => status(StatusCode::OK),
        Answer::Status(s) => status(StatusCode::from_u16(s).expect("a status")),
        Answer::After(d) => {
            tokio::time::sleep(d).await;
            status(StatusCode::OK)
        }
        Answer::Hang => {
            let mut rx = st.released.subscribe();
            st.holding.send_modify(|n| *n += 1);
            let _ = rx.changed().await;
            st.holding.send_modify(|n| *n -= 1);
            status(StatusCode::OK)
        }
    }
}

fn status(s: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = s;
    r
}

/// The receiver's check, written from the contract alone: `t=<unix seconds>,v1=<hex>`, the
/// hex being HMAC-SHA256 of `"<t>.<body>"` under `secret` (compared in constant time), and
/// `t` no more than `tolerance` seconds from `now`.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<(), String> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<u64>().ok(),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(format!("malformed signature header {header:?}"));
    };
    if now.abs_diff(t) > tolerance {
        return Err(format!("timestamp {t} is too old (now {now})"));
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    let given: Vec<u8> = (0..v1.len() / 2)
        .filter_map(|i| u8::from_str_radix(v1.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    aws_lc_rs::hmac::verify(&key, &msg, &given).map_err(|_| "signature mismatch".to_owned())
}
