//! The admin listener: `/healthz`, `/readyz`, `/metrics` without a token; `/admin/*` behind
//! the admin bearer token: a user's sessions (list, revoke), one session (revoke), reload,
//! and clearing a username's lock-out.
//!
//! Every error here is the contract's JSON `{"error", "message"}` through [`GatewayError`]
//! (§6, §7): unknown path 404 `not_found`, wrong method 405 `method_not_allowed` with `Allow`,
//! no admin token 401 `missing_token`, a wrong one 401 `invalid_token` (both with
//! `WWW-Authenticate`), an id that is not UTF-8 400 `bad_request`, a store error 503.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::{App, Live};
use crate::audit::{self, Event, Subject};
use crate::body::{full, Body};
use crate::endpoints::auth::{json, session_json};
use crate::error::GatewayError;
use crate::notify::Reason;
use crate::proxy::ConnInfo;
use crate::session::{EndReason, Millis};

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `/readyz`'s body when the store answers: ready, and (without making the gateway unready:
/// its own tokens and the other issuers' still work) each issuer that has no keys yet.
fn readiness(live: &Live) -> String {
    let mut out = String::from("ready\n");
    for issuer in live.config.token.keys.issuers() {
        if !issuer.has_keys() {
            out.push_str(&format!(
                "issuer without keys: {} (its tokens get 503 issuer_unavailable)\n",
                issuer.name()
            ));
        }
    }
    out
}

/// Answers one request on the admin listener.
pub(crate) async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match (req.method().as_str(), path.as_str()) {
        ("GET" | "HEAD", "/healthz") => text(StatusCode::OK, "ok\n"),
        ("GET" | "HEAD", "/readyz") => match app.store.ping().await {
            Ok(()) => text(StatusCode::OK, readiness(&app.live())),
            Err(e) => {
                // The store's own "session store lost" line tells it once.
                tracing::debug!(error = %e, "not ready: session store unreachable");
                GatewayError::StoreUnavailable.into_response()
            }
        },
        ("GET", "/metrics") => {
            if let Ok(n) = app.store.active_count(app.clock.now_ms()).await {
                metrics::gauge!("authgate_sessions_active").set(n as f64);
            }
            app.in_flight.publish();
            let mut r = Response::new(full(crate::metrics::prometheus().render()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (_, "/healthz" | "/readyz") => GatewayError::method_not_allowed("GET, HEAD"),
        (_, "/metrics") => GatewayError::method_not_allowed("GET"),
        (_, p) if p == "/admin" || p.starts_with("/admin/") => {
            match admin_api(&app, &req, conn).await {
                Ok(r) => r,
                Err(AdminError::Gateway(e)) => e.into_response(),
                Err(AdminError::Method(allow)) => GatewayError::method_not_allowed(allow),
            }
        }
        _ => GatewayError::NotFound.into_response(),
    }
}

/// Why an admin call failed: one of the contract's errors, or a method the path does not
/// take (405, with the methods it does).
enum AdminError {
    Gateway(GatewayError),
    Method(&'static str),
}

impl From<GatewayError> for AdminError {
    fn from(e: GatewayError) -> Self {
        Self::Gateway(e)
    }
}

impl From<crate::session::StoreError> for AdminError {
    fn from(e: crate::session::StoreError) -> Self {
        Self::Gateway(e.into())
    }
}

/// The bearer token of an admin call: missing, or the one given.
enum Bearer<'a> {
    Missing,
    Given(&'a str),
}

fn bearer(req: &Request<Incoming>) -> Bearer<'_> {
    let Some(v) = req.headers().get(header::AUTHORIZATION) else {
        return Bearer::Missing;
    };
    // Not text, or another scheme: a wrong token, not a missing one.
    let v = v.to_str().unwrap_or_default();
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .unwrap_or_default();
    Bearer::Given(token.trim())
}

/// Whether the request carries the admin bearer token (compared in constant time): `Err`
/// with the 401 to answer if not.
fn authorise(expected: &str, req: &Request<Incoming>) -> Result<(), GatewayError> {
    match bearer(req) {
        Bearer::Missing => Err(GatewayError::MissingToken),
        Bearer::Given(given) if tokens_match(given, expected) => Ok(()),
        Bearer::Given(_) => Err(GatewayError::AdminUnauthorized),
    }
}

/// Compares the SHA-256 digests of the two tokens in constant time: a comparison of the tokens
/// themselves stops at a length mismatch, which tells a caller timing it how long the admin
/// token is; digests are always 32 bytes.
fn tokens_match(given: &str, expected: &str) -> bool {
    use aws_lc_rs::digest::{digest, SHA256};
    let (a, b) = (
        digest(&SHA256, given.as_bytes()),
        digest(&SHA256, expected.as_bytes()),
    );
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_ref(), b.as_ref()).is_ok()
}

/// `/admin/*`: a user's sessions (list, revoke all), one session (revoke), reload, a
/// username's lock-out (clear).
async fn admin_api(
    app: &Arc<App>,
    req: &Request<Incoming>,
    conn: ConnInfo,
) -> Result<Response<Body>, AdminError> {
    let live = app.live();
    let Some(expected) = live.config.server.admin_token.as_deref() else {
        // Admin API off (its token variable is unset): as if it did not exist.
        return Err(GatewayError::NotFound.into());
    };
    authorise(expected, req)?;
    let ip = Some(conn.peer.ip());
    let segs = path_segments(req)?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let t = app.clock.now_ms();
    match (req.method().as_str(), segs.as_slice()) {
        ("GET", ["admin", "users", uid, "sessions"]) => {
            let list = app.store.list(uid, t).await?;
            let items: Vec<_> = list.iter().map(|s| session_json(s, None)).collect();
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "sessions": items }),
            ))
        }
        ("DELETE", ["admin", "users", uid, "sessions"]) => {
            let ended = app
                .store
                .end_all_sessions(uid, EndReason::Revoked, t)
                .await?;
            for s in &ended {
                app.notify
                    .session_ended(crate::app::about(s), Reason::Revoked);
            }
            let n = ended.len();
            let who = Subject {
                user_id: Some(uid),
                ip,
                ..Default::default()
            };
            audit::record(Event::AdminRevoke, who);
            Ok(json(StatusCode::OK, &serde_json::json!({ "revoked": n })))
        }
        ("DELETE", ["admin", "sessions", sid]) => revoke_session(app, sid, ip, t).await,
        ("DELETE", ["admin", "lockouts", username]) => unlock(app, &live, username, ip).await,
        ("POST", ["admin", "reload"]) => {
            let source = live.config.source.clone();
            drop(live);
            Ok(reload(app, &source).await)
        }
        (_, ["admin", "users", _, "sessions"]) => Err(AdminError::Method("GET, DELETE")),
        (_, ["admin", "sessions", _] | ["admin", "lockouts", _]) => {
            Err(AdminError::Method("DELETE"))
        }
        (_, ["admin", "reload"]) => Err(AdminError::Method("POST")),
        _ => Err(GatewayError::NotFound.into()),
    }
}

/// The path's segments, percent-decoded (a user id may hold spaces, `/` or non-ASCII).
fn path_segments(req: &Request<Incoming>) -> Result<Vec<String>, GatewayError> {
    req.uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .map(|raw| {
            percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| GatewayError::BadRequest("an id in the path is not valid UTF-8"))
        })
        .collect()
}

/// `DELETE /admin/sessions/{id}`: 204, or 404 when no such session is active.
async fn revoke_session(
    app: &App,
    sid: &str,
    ip: Option<std::net::IpAddr>,
    t: Millis,
) -> Result<Response<Body>, AdminError> {
    let Some(ended) = app.store.end_by_id(sid, EndReason::Revoked, t).await? else {
        return Err(GatewayError::NotFound.into());
    };
    app.notify
        .session_ended(crate::app::about(&ended), Reason::Revoked);
    let uid = crate::session::user_id_of(sid);
    audit::record(
        Event::AdminRevoke,
        Subject {
            user_id: uid.as_deref(),
            session_id: Some(sid),
            ip,
            ..Default::default()
        },
    );
    Ok(no_content())
}

/// `DELETE /admin/lockouts/{username}`: the username's failures and lock forgotten.
async fn unlock(
    app: &App,
    live: &Live,
    username: &str,
    ip: Option<std::net::IpAddr>,
) -> Result<Response<Body>, AdminError> {
    if username.trim().is_empty() {
        return Err(GatewayError::BadRequest("a username is required").into());
    }
    live.lockout.unlock(&app.store, username).await?;
    tracing::info!(%username, "lock-out cleared by an admin");
    let who = Subject {
        ip,
        ..Default::default()
    };
    audit::record_for_username(Event::AdminUnlock, who, Some(username));
    Ok(no_content())
}

/// `POST /admin/reload`: 200, or 400 with the new config's problems (the old one serves on).
async fn reload(app: &Arc<App>, source: &std::path::Path) -> Response<Body> {
    match crate::reload::reload(app, source).await {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({ "reloaded": true })),
        Err(e) => {
            let problems: Vec<String> = e.0.iter().map(|p| p.to_string()).collect();
            let mut body = serde_json::json!({
                "error": "bad_request",
                "message": "the new config has problems; the old config keeps serving",
                "problems": problems,
            });
            if let Some(id) = crate::logs::scope::request_id() {
                body["request_id"] = id.into();
            }
            json(StatusCode::BAD_REQUEST, &body)
        }
    }
}

fn no_content() -> Response<Body> {
    let mut r = Response::new(crate::body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

#[cfg(test)]
mod tests {

    #[test]
    fn admin_tokens_are_compared_as_fixed_size_digests() {
        assert!(super::tokens_match(
            "admin-token-value",
            "admin-token-value"
        ));
        for other in [
            "",
            "a",
            "admin-token-valu",
            "admin-token-value ",
            "admin-token-valuE",
        ] {
            assert!(
                !super::tokens_match(other, "admin-token-value"),
                "{other:?}"
            );
        }
    }
}
