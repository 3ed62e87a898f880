//! An identity provider stand-in for `[[token.issuers]]`: a hyper server on 127.0.0.1:0 that
//! serves OpenID discovery (`<issuer>/.well-known/openid-configuration`, whose `jwks_uri` is
//! `<base>/jwks`) and a JWKS of keys the test generated ([`IdpKey`], RS256 / ES256 / EdDSA, each
//! signing tokens with any header and claims). The issuer is the base url `http://127.0.0.1:PORT`
//! or, with [`Idp::start_at`], a path under it (`<base>/realms/acme`).
//!
//! Everything can change mid-test: the key set ([`Idp::set_keys`], a rotation), how it answers
//! ([`Fault`]: closed connections, 500, non-JSON, 10 MB, never), `Cache-Control: max-age`.
//! It counts the requests it received per path; [`Idp::wait_for_fetches`] awaits them (bounded
//! by [`within`]), so a test never sleeps for the gateway's background fetches.
//!
//! [`Idp::start_tls`] serves the same over HTTPS (`https://127.0.0.1:PORT`) with the leaf of
//! `tests/fixtures/tls` ([`idp_ca_file`] is its CA); a request only counts once its TLS
//! handshake succeeded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use authgate::tokens::{keygen, KeyMaterial, KeyRing, KeySpec, TokenRules};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::jwt::AUDIENCE;
use super::wait::{now, within};

/// Where the IdP serves its JWKS (discovery's `jwks_uri` is the base url plus this).
pub const JWKS_PATH: &str = "/jwks";

/// The CA of [`Idp::start_tls`]'s certificate (for an issuer's `ca_file`).
pub fn idp_ca_file() -> PathBuf {
    tls_fixture("ca.pem")
}

fn tls_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// A TLS acceptor with the `localhost` / `127.0.0.1` leaf of `tests/fixtures/tls`.
fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{crypto::aws_lc_rs, ServerConfig};
    let certs = CertificateDer::pem_file_iter(tls_fixture("cert.pem"))
        .expect("test leaf")
        .collect::<Result<Vec<_>, _>>()
        .expect("test leaf PEM");
    let key = PrivateKeyDer::from_pem_file(tls_fixture("key.pem")).expect("test leaf key");
    let cfg = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the test leaf and its key");
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// Size of the [`Fault::Huge`] answer.
pub const HUGE_BYTES: usize = 10 * 1024 * 1024;

/// A key pair of the IdP's, with its public JWK.
#[derive(Clone)]
pub struct IdpKey {
    pub kid: String,
    pub alg: Algorithm,
    pub private_pem: String,
    /// SPKI `PUBLIC KEY` PEM (for `public_key_file`, and as the HS256 confusion secret).
    pub public_pem: String,
    /// The public JWK as served: `kty`, `kid`, `alg`, `use: "sig"` and the key's numbers.
    pub jwk: Value,
}

impl IdpKey {
    /// A fresh key pair for `alg` (RS256, ES256 or EdDSA; RS384 etc. sign with an RS256 key).
    pub fn generate(kid: &str, alg: Algorithm) -> IdpKey {
        let pair = keygen::generate(alg).expect("generate an IdP key");
        // The gateway's own key code renders the public JWK of a signing key.
        let ring = KeyRing::new(
            Some(KeySpec {
                kid: kid.to_owned(),
                algorithm: alg,
                material: KeyMaterial::PrivatePem(pair.private_pem.clone().into_bytes()),
            }),
            vec![],
            TokenRules {
                issuer: "idp".into(),
                audience: AUDIENCE.into(),
                leeway: std::time::Duration::from_secs(0),
                access_ttl: std::time::Duration::from_secs(3600),
            },
        )
        .expect("a ring of the IdP key");
        let jwk = ring.jwks().expect("an asymmetric JWKS")["keys"][0].clone();
        IdpKey {
            kid: kid.to_owned(),
            alg,
            private_pem: pair.private_pem,
            public_pem: pair.public_pem,
            jwk,
        }
    }

    /// The same key published with `use: "enc"` (an encryption key: not for signatures).
    pub fn for_encryption(mut self) -> IdpKey {
        self.jwk["use"] = json!("enc");
        self
    }

    /// The header this key's tokens carry: its `alg`, its `kid`, `typ: "JWT"`.
    pub fn header(&self) -> Header {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        h
    }

    /// `claims` signed with this key under [`IdpKey::header`].
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(&self.header(), claims)
    }

    /// `claims` signed with this key under `header` (its `alg` must be of this key's family:
    /// an RSA key signs RS256, RS384, RS512).
    pub fn sign_with(&self, header: &Header, claims: &Value) -> String {
        let key = match self.alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_der(&self.der()),
            Algorithm::EdDSA => EncodingKey::from_ed_der(&self.der()),
            _ => EncodingKey::from_rsa_pem(self.private_pem.as_bytes()).expect("RSA PEM"),
        };
        jsonwebtoken::encode(header, claims, &key).expect("sign an IdP token")
    }

    fn der(&self) -> Vec<u8> {
        pem::parse(&self.private_pem)
            .expect("PKCS#8 PEM")
            .into_contents()
    }
}

/// How the IdP answers every request (all paths), changeable mid-test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Discovery and JWKS as they should be.
    None,
    /// The request is read, then the connection closed without an answer.
    Down,
    /// 500 with a text body.
    Status500,
    /// 200 `application/json` whose body is HTML.
    NotJson,
    /// 200 with a valid JWKS of the current keys padded to [`HUGE_BYTES`].
    Huge,
    /// The request is read and never answered.
    Hang,
}

struct State {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    base: String,
    /// The path of the issuer under the base url ("" or e.g. "/realms/acme").
    issuer_path: String,
    keys: Vec<IdpKey>,
    fault: Fault,
    max_age: Option<u64>,
    hits: HashMap<String, usize>,
}

/// A running identity provider stand-in (see the module's doc). Stops when dropped.
pub struct Idp {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Bumped on every request received, after its path was counted.
    seen: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Idp {
    /// An IdP whose issuer is its base url, serving `keys`.
    pub async fn start(keys: Vec<IdpKey>) -> Idp {
        Self::start_at("", keys).await
    }

    /// An IdP whose issuer is `<base><issuer_path>` (e.g. "/realms/acme"), serving `keys`.
    pub async fn start_at(issuer_path: &str, keys: Vec<IdpKey>) -> Idp {
        Self::launch(issuer_path, keys, None).await
    }

    /// An IdP over HTTPS (`https://127.0.0.1:PORT`, a certificate of the test CA
    /// [`idp_ca_file`]), its issuer the base url, serving `keys`.
    pub async fn start_tls(keys: Vec<IdpKey>) -> Idp {
        Self::launch("", keys, Some(tls_acceptor())).await
    }

    async fn launch(
        issuer_path: &str,
        keys: Vec<IdpKey>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind IdP");
        let addr = listener.local_addr().expect("IdP addr");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = Arc::new(Mutex::new(State {
            base: format!("{scheme}://{addr}"),
            issuer_path: issuer_path.trim_end_matches('/').to_owned(),
            keys,
            fault: Fault::None,
            max_age: None,
            hits: HashMap::new(),
        }));
        let (seen, _) = watch::channel(0u64);
        let task = tokio::spawn(serve(listener, tls, state.clone(), seen.clone()));
        Idp {
            addr,
            state,
            seen,
            task,
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` for [`Idp::start_tls`]).
    pub fn base(&self) -> String {
        self.state().base.clone()
    }

    /// The issuer (`iss`) of its tokens: the base url plus the issuer path.
    pub fn issuer(&self) -> String {
        format!("{}{}", self.base(), self.state().issuer_path)
    }

    /// The JWKS url (what discovery names as `jwks_uri`).
    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.base())
    }

    /// The discovery document's path.
    pub fn discovery_path(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.state().issuer_path
        )
    }

    /// Serves `keys` from now on (a rotation: the old ones are gone).
    pub fn set_keys(&self, keys: Vec<IdpKey>) {
        self.state().keys = keys;
    }

    /// Answers every request with `fault` from now on ([`Fault::None`]: normally again).
    pub fn set_fault(&self, fault: Fault) {
        self.state().fault = fault;
    }

    /// `Cache-Control: max-age=N` on discovery and JWKS answers (`None`: no such header).
    pub fn set_max_age(&self, max_age: Option<u64>) {
        self.state().max_age = max_age;
    }

    /// Requests received for `path` (whatever the answer, if any).
    pub fn hits(&self, path: &str) -> usize {
        self.state().hits.get(path).copied().unwrap_or(0)
    }

    /// Requests received for the JWKS.
    pub fn fetches(&self) -> usize {
        self.hits(JWKS_PATH)
    }

    /// Waits (bounded) until `path` has received at least `n` requests.
    pub async fn wait_for_hits(&self, path: &str, n: usize) {
        let mut seen = self.seen.subscribe();
        within(&format!("{n} requests for {path} on the IdP"), async {
            // Subscribed before the first look: no request can slip between look and wait.
            while self.hits(path) < n {
                seen.changed().await.expect("the IdP runs");
            }
        })
        .await
    }

    /// Waits (bounded) until the JWKS has been asked for at least `n` times in all.
    pub async fn wait_for_fetches(&self, n: usize) {
        self.wait_for_hits(JWKS_PATH, n).await
    }

    /// Valid claims of this IdP for user `sub`: `iss`, `aud` [`AUDIENCE`], `iat` now, one hour
    /// to live (long enough for the tests that move a gateway's clock).
    pub fn claims(&self, sub: &str) -> Value {
        let now = now();
        json!({
            "iss": self.issuer(),
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "exp": now + 3600,
        })
    }

    /// The `[[token.issuers]]` block of this IdP (discovery, audience [`AUDIENCE`]) with
    /// `extra` lines (e.g. `algorithms = ["RS256"]`).
    pub fn issuer_toml(&self, extra: &str) -> String {
        format!(
            "[[token.issuers]]\nissuer = {:?}\naudiences = [{AUDIENCE:?}]\n{extra}\n",
            self.issuer()
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("IdP state")
    }
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<Mutex<State>>,
    seen: watch::Sender<u64>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (state, seen, tls) = (state.clone(), seen.clone(), tls.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let answer = answer(&req, &state, &seen);
                async move {
                    match answer {
                        Answer::Now(resp) => Ok(resp),
                        Answer::Close => Err(std::io::Error::other("the IdP is down")),
                        Answer::Never => std::future::pending().await,
                    }
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
                // A client that refuses the certificate ends here, before any request.
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            }
        });
    }
}

enum Answer {
    Now(Response<Full<Bytes>>),
    /// Close the connection without an answer.
    Close,
    /// Never answer.
    Never,
}

/// Counts the request, then answers it as the state says.
fn answer(req: &Request<Incoming>, state: &Mutex<State>, seen: &watch::Sender<u64>) -> Answer {
    let path = req.uri().path().to_owned();
    let st = &mut *state.lock().expect("IdP state");
    *st.hits.entry(path.clone()).or_insert(0) += 1;
    seen.send_modify(|n| *n += 1);
    let base = st.base.clone();
    let jwks = || json!({ "keys": st.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    let body = match st.fault {
        Fault::Down => return Answer::Close,
        Fault::Hang => return Answer::Never,
        Fault::Status500 => return Answer::Now(reply(500, "text/plain", "internal error".into())),
        Fault::NotJson => {
            let html = "<html><body>Service Unavailable</body></html>";
            return Answer::Now(reply(200, "application/json", html.into()));
        }
        Fault::Huge => {
            let mut doc = jwks();
            let text = doc.to_string();
            doc["padding"] = json!(" ".repeat(HUGE_BYTES.saturating_sub(text.len())));
            return Answer::Now(reply(200, "application/json", doc.to_string().into()));
        }
        Fault::None if path == JWKS_PATH => jwks(),
        Fault::None if path == format!("{}/.well-known/openid-configuration", st.issuer_path) => {
            let issuer = format!("{base}{}", st.issuer_path);
            json!({
                "issuer": issuer,
                "jwks_uri": format!("{base}{JWKS_PATH}"),
                "authorization_endpoint": format!("{issuer}/protocol/openid-connect/auth"),
                "token_endpoint": format!("{issuer}/protocol/openid-connect/token"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
            })
        }
        Fault::None => return Answer::Now(reply(404, "text/plain", "not found".into())),
    };
    let mut resp = reply(200, "application/json", body.to_string().into());
    if let Some(secs) = st.max_age {
        let value = format!("public, max-age={secs}");
        resp.headers_mut()
            .insert(http::header::CACHE_CONTROL, value.parse().expect("header"));
    }
    Answer::Now(resp)
}

fn reply(status: u16, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).expect("status");
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}
