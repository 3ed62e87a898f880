//! A bare hyper-util reverse proxy with no auth and no header work, for the benchmark only:
//! it measures what the stack itself costs, so `BENCHMARKS.md` can tell the gateway's own
//! overhead from hyper's. `cargo run --release --example bare_proxy -- LISTEN UPSTREAM`.

use std::convert::Infallible;

use http::Uri;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:18600".into());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:18500".into());
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Body> =
        Client::builder(TokioExecutor::new()).build(connector);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let client = client.clone();
                let uri: Uri = format!("http://{upstream}{}", req.uri().path())
                    .parse()
                    .unwrap();
                async move {
                    let (mut parts, body) = req.into_parts();
                    parts.uri = uri;
                    let req = Request::from_parts(parts, body.boxed());
                    let resp = match client.request(req).await {
                        Ok(r) => r.map(|b| b.boxed()),
                        Err(_) => {
                            let mut r = hyper::Response::new(
                                http_body_util::Empty::new().map_err(|n| match n {}).boxed(),
                            );
                            *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                            r
                        }
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
