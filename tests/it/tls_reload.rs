//! TLS termination (ALPN h2 and http/1.1) and live reload (admin API, file change, bad file).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::support::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn connector(alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(fixture("ca.pem")).expect("test CA");
    roots.add(ca).expect("CA accepted");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}

/// A TLS connection to `gw` as `localhost` (checked against the test CA), offering `alpn`.
async fn tls_connect(gw: &Gateway, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    connector(alpn)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

async fn tls_gateway() -> Gateway {
    let conf = Conf::new().server(&format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}",
        fixture("cert.pem"),
        fixture("key.pem")
    ));
    Gateway::start(conf).await
}

#[tokio::test]
async fn tls_negotiates_h2_by_alpn_and_proxies() {
    tls_h2_client(&[b"h2", b"http/1.1"]).await;
}

#[tokio::test]
async fn tls_serves_h2_by_prior_knowledge_without_alpn() {
    tls_h2_client(&[]).await;
}

async fn tls_h2_client(alpn: &[&[u8]]) {
    let gw = tls_gateway().await;
    let tls = tls_connect(&gw, alpn).await;
    let negotiated = tls.get_ref().1.alpn_protocol();
    assert_eq!(negotiated, alpn.first().copied());
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let token = gw.mint(&alice());
    let req = Request::get("https://localhost/api/x")
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.expect("h2 request");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["headers"]["x-user-id"][0], "1001");
    assert_eq!(body["headers"]["x-forwarded-proto"][0], "https");
    assert_eq!(
        body["version"], "HTTP/1.1",
        "the upstream is spoken to in HTTP/1.1"
    );
}

#[tokio::test]
async fn tls_serves_http1_clients() {
    tls_http1_client(&[b"http/1.1"]).await;
}

#[tokio::test]
async fn tls_serves_http1_clients_without_alpn() {
    tls_http1_client(&[]).await;
}

async fn tls_http1_client(alpn: &[&[u8]]) {
    let gw = tls_gateway().await;
    let tls = tls_connect(&gw, alpn).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/api/x")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "TLS does not bypass auth"
    );
    assert_eq!(gw.upstream.hits(), 0);
}

/// ALPN is binding (RFC 7301): a client that agreed on one protocol and speaks another gets
/// no answer in the other, and nothing reaches the upstream.
#[tokio::test]
async fn tls_client_speaking_http1_after_agreeing_on_h2_gets_no_http1_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = tls_gateway().await;
    let mut tls = tls_connect(&gw, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(b"GET /public/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = within(
        "the gateway to end the connection",
        tls.read_to_end(&mut got),
    )
    .await;
    assert!(
        !got.starts_with(b"HTTP/1"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn tls_client_speaking_h2_after_agreeing_on_http1_is_refused() {
    let gw = tls_gateway().await;
    let tls = tls_connect(&gw, &[b"http/1.1"]).await;
    let answer = async {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let req = Request::get("https://localhost/public/x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        send.send_request(req).await
    };
    let r = within("the h2 attempt to fail", answer).await;
    assert!(
        r.is_err(),
        "an h2 answer after ALPN http/1.1: {:?}",
        r.map(|r| r.status())
    );
    assert_eq!(gw.upstream.hits(), 0);
}

const RELOAD_SECRET: &str = "reload-test-secret-0123456789abcdef";

fn reload_config(upstream: std::net::SocketAddr, public_prefix: &str) -> String {
    reload_config_with(
        upstream,
        &format!(
            r#"
[[routes]]
path = "{public_prefix}"
upstream = "up"
auth = "public"
"#
        ),
    )
}

/// The reload test config with `routes` first, then the catch-all `/` (required).
fn reload_config_with(upstream: std::net::SocketAddr, routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
admin_token_env = "T_RELOAD_ADMIN"

[token]
algorithm = "HS256"
secret_env = "T_RELOAD_SECRET"

[session]
mode = "stateless"

[login]
backend = "none"

[[upstreams]]
name = "up"
urls = ["http://{upstream}"]
{routes}
[[routes]]
path = "/"
upstream = "up"
auth = "required"
"#
    )
}

/// A gateway started from a real file (so reload reads the file again).
async fn file_gateway(dir: &Path, upstream: &Upstream) -> (authgate::server::Handle, PathBuf) {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, reload_config(upstream.addr, "/public")).unwrap();
    set_env();
    let loaded = authgate::config::load(&path).expect("config loads");
    let app = authgate::app::App::new(loaded.config);
    let handle = authgate::server::start(app).await.unwrap();
    (handle, path)
}

fn set_env() {
    // These names are used by this module alone, and always set to the same values.
    std::env::set_var("T_RELOAD_SECRET", RELOAD_SECRET);
    std::env::set_var("T_RELOAD_ADMIN", "reload-admin-token");
}

#[tokio::test]
async fn admin_reload_swaps_routes_and_a_bad_file_changes_nothing() {
    let upstream = Upstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let (handle, path) = file_gateway(dir.path(), &upstream).await;
    let gw = Probe::new(handle.addr);
    let admin = Probe::new(handle.admin_addr.unwrap());
    let auth = [("authorization", "Bearer reload-admin-token")];
    assert_eq!(gw.get("/docs/x", &[]).await.status, 401);

    std::fs::write(&path, reload_config(upstream.addr, "/docs")).unwrap();
    let r = admin
        .request("POST", "/admin/reload", &auth, Bytes::new())
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        gw.get("/docs/x", &[]).await.status,
        200,
        "the new public route serves"
    );
    assert_eq!(
        gw.get("/public/x", &[]).await.status,
        401,
        "the old one is gone"
    );

    std::fs::write(&path, "[server]\nlisten = 5\n").unwrap();
    let r = admin
        .request("POST", "/admin/reload", &auth, Bytes::new())
        .await;
    assert_eq!(r.status, 400);
    assert!(
        String::from_utf8_lossy(&r.body).contains("server.listen"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        gw.get("/docs/x", &[]).await.status,
        200,
        "the old config keeps serving"
    );

    let r = admin
        .request("POST", "/admin/reload", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 401, "reload needs the admin token");
    handle.shutdown().await;
}

#[tokio::test]
async fn a_changed_file_is_picked_up_without_a_signal() {
    let upstream = Upstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let (handle, path) = file_gateway(dir.path(), &upstream).await;
    authgate::reload::spawn(handle.app.clone(), path.clone());
    let gw = Probe::new(handle.addr);
    assert_eq!(gw.get("/docs/x", &[]).await.status, 401);
    // Editors replace the file by renaming a new one over it.
    let tmp = dir.path().join(".gateway.toml.swp");
    std::fs::write(&tmp, reload_config(upstream.addr, "/docs")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    // The watcher debounces for 200 ms; poll the observable effect, bounded.
    let mut status = 0;
    for _ in 0..100 {
        status = gw.get("/docs/x", &[]).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the renamed-in file was reloaded");
    handle.shutdown().await;
}

#[tokio::test]
async fn requests_are_counted_under_their_route_across_a_reload_that_reorders_routes() {
    // Route patterns of their own: the metrics registry is shared by every test.
    let route =
        |p: &str| format!("[[routes]]\npath = \"{p}\"\nupstream = \"up\"\nauth = \"public\"\n");
    let upstream = Upstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let (handle, path) = file_gateway(dir.path(), &upstream).await;
    let gw = Probe::new(handle.addr);
    let admin = Probe::new(handle.admin_addr.unwrap());
    let auth = [("authorization", "Bearer reload-admin-token")];
    let reload = |routes: String| {
        std::fs::write(&path, reload_config_with(upstream.addr, &routes)).unwrap();
        admin.request("POST", "/admin/reload", &auth, Bytes::new())
    };

    assert_eq!(reload(route("/rc-a") + &route("/rc-b")).await.status, 200);
    assert_eq!(gw.get("/rc-a/x", &[]).await.status, 200);
    // /rc-a moves from the first route to the third; /rc-b from the second to the first.
    let swapped = route("/rc-b") + &route("/rc-x") + &route("/rc-a");
    assert_eq!(reload(swapped).await.status, 200);
    assert_eq!(gw.get("/rc-a/x", &[]).await.status, 200);
    assert_eq!(gw.get("/rc-a/y", &[]).await.status, 200);
    assert_eq!(gw.get("/rc-b/x", &[]).await.status, 200);
    assert_eq!(requests_total(&admin, "/rc-a", "200").await, 3);
    assert_eq!(requests_total(&admin, "/rc-b", "200").await, 1);
    assert_eq!(requests_total(&admin, "/rc-x", "200").await, 0);
    handle.shutdown().await;
}
