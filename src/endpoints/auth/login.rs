//! `POST {prefix}/login`, and issuing a new session's tokens.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tracing::Level;

use super::{captcha, json, read_body};
use crate::app::{App, Live};
use crate::audit::{self, Event, Subject};
use crate::auth::browser;
use crate::body::{full, Body};
use crate::config::Browser;
use crate::error::GatewayError;
use crate::login::lockout::{Lockout, Reservation};
use crate::login::{self, LoginIdentity, LoginOutcome};
use crate::logs::scope::{self, Ids};
use crate::notify::{About, Reason};
use crate::session::{Millis, NewSession, RefreshToken, Session};
use crate::tokens::{AccessIdentity, Claims};

/// A login: flood guard, platform, lock-out, captcha, the credential backend, then the
/// session. With `[browser]` on, an `application/x-www-form-urlencoded` body is a form login
/// ([`FormLogin`]): CSRF-checked, answered with the session's cookies and a 303.
pub(super) async fn login(
    app: &App,
    live: &Live,
    req: Request<Incoming>,
    ip: IpAddr,
    own_origin: Option<&str>,
) -> Result<Response<Body>, GatewayError> {
    if !live.login.is_enabled() {
        return Err(GatewayError::NotFound);
    }
    let Some(b) = live
        .config
        .browser
        .as_ref()
        .filter(|_| is_form(req.headers()))
    else {
        return attempt(app, live, req, ip, None).await;
    };
    // Login CSRF: another site must not log the browser into an account of its choosing.
    browser::origin_check(live, req.headers(), own_origin)?;
    let wants_json = wants_json(req.headers());
    let mut form = FormLogin {
        browser: b,
        return_to: "/".into(),
        wants_json,
    };
    match attempt(app, live, req, ip, Some(&mut form)).await {
        Ok(resp) if resp.status().is_client_error() || resp.status().is_server_error() => {
            // A legacy login's own refusal, relayed: told to the page as a failed login.
            let code = match resp.status() {
                StatusCode::TOO_MANY_REQUESTS => "account_locked",
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "invalid_credentials",
                _ => "bad_request",
            };
            Ok(if wants_json {
                resp
            } else {
                form.failed(live, code)
            })
        }
        Ok(resp) => Ok(resp),
        Err(e) if wants_json || e == GatewayError::CsrfFailed => Err(e),
        Err(e) => Ok(form.failed(live, e.code())),
    }
}

/// A login posted by a browser form.
struct FormLogin<'b> {
    browser: &'b Browser,
    /// Where to go afterwards (the form's `return_to`, made safe).
    return_to: String,
    /// `Accept` asks for JSON: answers stay JSON (no tokens in them), no redirects.
    wants_json: bool,
}

impl FormLogin<'_> {
    /// 303 back to the login page, with the error to show and `return_to` kept.
    fn failed(&self, live: &Live, code: &str) -> Response<Body> {
        let url = browser::login_page_url(live, self.browser, &self.return_to, Some(code));
        browser::redirect(StatusCode::SEE_OTHER, &url)
    }
}

pub(super) fn is_form(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// `Accept` lists `application/json`.
pub(super) fn wants_json(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.to_ascii_lowercase().contains("application/json"))
    })
}

/// A form's body as the users file reads it: a JSON object of the form's fields (all
/// strings, `return_to` left out). The legacy login gets the form as it came.
fn form_body(live: &Live, body: Bytes, form: &mut FormLogin<'_>) -> Result<Bytes, GatewayError> {
    let fields = login::form_fields(&body).map_err(GatewayError::BadRequest)?;
    let mut obj = serde_json::Map::new();
    for (k, v) in fields {
        if k == "return_to" {
            form.return_to = browser::safe_return_to(&v, &form.browser.allowed_return_hosts);
        } else {
            obj.insert(k, serde_json::Value::String(v));
        }
    }
    if live.login.passes_forms_on() {
        return Ok(body);
    }
    Ok(Bytes::from(serde_json::Value::Object(obj).to_string()))
}

/// One attempt, from the body to the answer.
async fn attempt(
    app: &App,
    live: &Live,
    req: Request<Incoming>,
    ip: IpAddr,
    mut form: Option<&mut FormLogin<'_>>,
) -> Result<Response<Body>, GatewayError> {
    if !app.flood.allow(ip) {
        metrics::counter!("authgate_logins_total", "result" => "flood").increment(1);
        return Err(GatewayError::RateLimited);
    }
    let mut headers = req.headers().clone();
    // The legacy login gets the client's own cookies, as the proxied app does: the gateway's
    // only as `identity.forward_authorization` says.
    if let Some(b) = &live.config.browser {
        browser::strip_cookies(&mut headers, b, live.config.identity.forward_authorization);
    }
    let platform = platform(live, &headers)?;
    let mut body = read_body(live, req).await?;
    if let Some(f) = form.as_deref_mut() {
        body = form_body(live, body, f)?;
    }
    let username = login::username_of(&body, &live.config.login.username_pointer)
        .map_err(GatewayError::BadRequest)?;
    let t = app.clock.now_ms();
    let lockout = &live.lockout;
    // Who an attempt's audit lines are about before anyone is authenticated.
    let anon = Subject {
        ip: Some(ip),
        platform: Some(&platform),
        ..Default::default()
    };
    let user = username.as_deref();
    if let Some(wait) = lockout.check(&app.store, user, ip, t).await? {
        return Err(locked(wait, anon, user));
    }
    // Before the reservation: a refused captcha is no attempt at the password.
    captcha::gate(app, live, &body, user, ip, anon, t).await?;
    let reservation = lockout.reserve(&app.store, user, ip, t).await?;
    if let Some(wait) = reservation.refused {
        return Err(locked(wait, anon, user));
    }
    let attempt = Attempt {
        app,
        lockout,
        user,
        ip,
        t,
        anon,
        reservation,
    };
    let outcome = live.login.authenticate(body, &headers, ip).await;
    attempt
        .settle(live, outcome, &platform, &headers, form.as_deref())
        .await
}

/// One login attempt past the lock-out check, holding its reservation: every outcome either
/// records a failure, a success, or releases the reservation.
struct Attempt<'a> {
    app: &'a App,
    lockout: &'a Lockout,
    user: Option<&'a str>,
    ip: IpAddr,
    t: Millis,
    anon: Subject<'a>,
    reservation: Reservation,
}

impl Attempt<'_> {
    /// The answer to the backend's outcome, with the lock-out and the counters kept.
    async fn settle(
        self,
        live: &Live,
        outcome: LoginOutcome,
        platform: &str,
        headers: &HeaderMap,
        form: Option<&FormLogin<'_>>,
    ) -> Result<Response<Body>, GatewayError> {
        match outcome {
            LoginOutcome::Success(mut identity) => {
                let store = &self.app.store;
                self.lockout
                    .record_success(store, self.user, self.ip)
                    .await?;
                let set_cookies = std::mem::take(&mut identity.set_cookies);
                let issued = issue(self.app, live, identity, platform, headers, self.ip).await?;
                let mut resp = match form {
                    None => issued.token_pair(live)?,
                    Some(f) => issued.cookies(live, f)?,
                };
                relay_cookies(resp.headers_mut(), set_cookies);
                metrics::counter!("authgate_logins_total", "result" => "success").increment(1);
                Ok(resp)
            }
            LoginOutcome::InvalidCredentials => {
                self.failed().await?;
                Err(GatewayError::InvalidCredentials)
            }
            LoginOutcome::Rejected {
                upstream_body,
                set_cookies,
            } => {
                self.failed().await?;
                Ok(rejected(upstream_body, set_cookies))
            }
            LoginOutcome::Relay {
                response,
                counts_as_failure,
            } => {
                if counts_as_failure {
                    self.failed().await?;
                } else {
                    self.release().await?;
                }
                Ok(response)
            }
            other => {
                self.release().await?;
                Err(refusal(other))
            }
        }
    }

    /// A failed attempt: counted, audited, recorded against the lock-out (which may lock).
    /// While the lock-out runs on this instance's fallback (Redis unreachable) the attempt is
    /// counted there but answered 503 `store_unavailable`, as a right password is then (no
    /// session can be stored): an outage must not tell a wrong password from a right one.
    async fn failed(&self) -> Result<(), GatewayError> {
        metrics::counter!("authgate_logins_total", "result" => "failure").increment(1);
        audit::record_for_username(Event::LoginFailed, self.anon, self.user);
        let locked = self
            .lockout
            .record_failure(
                &self.app.store,
                self.user,
                self.ip,
                &self.reservation,
                self.t,
            )
            .await?;
        if let Some(wait) = locked {
            audit::record_for_username(Event::AccountLocked, self.anon, self.user);
            scope::note(
                Level::INFO,
                format!(
                    "login locked after repeated failures, for {} s",
                    wait.as_secs()
                ),
            );
        }
        if self.app.store.lockout_degraded() {
            return Err(GatewayError::StoreUnavailable);
        }
        Ok(())
    }

    /// An attempt that says nothing about the credentials: its reservation is given back.
    async fn release(&self) -> Result<(), GatewayError> {
        Ok(self
            .lockout
            .release(&self.app.store, self.user, self.ip)
            .await?)
    }
}

/// The legacy app refused the login: 401 `invalid_credentials`, with its own answer beside
/// ours (`upstream`) and its cookies relayed.
fn rejected(
    upstream_body: Option<serde_json::Value>,
    set_cookies: Vec<HeaderValue>,
) -> Response<Body> {
    let e = GatewayError::InvalidCredentials;
    let mut r = e.clone().into_response();
    if let Some(legacy) = upstream_body {
        let mut body = serde_json::json!({
            "error": e.code(),
            "message": e.message(),
            "upstream": legacy,
        });
        if let Some(id) = scope::request_id() {
            body["request_id"] = id.into();
        }
        *r.body_mut() = full(body.to_string());
    }
    relay_cookies(r.headers_mut(), set_cookies);
    r
}

/// The answer to an outcome that is neither a success nor a verdict on the credentials.
fn refusal(outcome: LoginOutcome) -> GatewayError {
    match outcome {
        LoginOutcome::BadRequest(m) => GatewayError::BadRequest(m),
        LoginOutcome::Unavailable => GatewayError::UpstreamUnavailable,
        LoginOutcome::BadIdentity { field } => GatewayError::UpstreamIdentity(match field {
            "user_id" => "the legacy login answered a user id that cannot be sent as a header",
            "user_name" => "the legacy login answered a user name that cannot be sent as a header",
            "tenant" => "the legacy login answered a tenant that cannot be sent as a header",
            _ => "the legacy login answered a role that cannot be sent as a header",
        }),
        LoginOutcome::Busy => GatewayError::LoginBusy,
        // Settled by the caller; never passed here.
        LoginOutcome::Success(_)
        | LoginOutcome::InvalidCredentials
        | LoginOutcome::Rejected { .. }
        | LoginOutcome::Relay { .. } => GatewayError::Internal,
    }
}

/// The platform a login is for: the configured header, else the default; unknown is a 400.
fn platform(live: &Live, headers: &HeaderMap) -> Result<String, GatewayError> {
    let p = &live.config.platforms;
    let Some(v) = headers.get(&p.header) else {
        return Ok(p.default.clone());
    };
    let v = v
        .to_str()
        .map_err(|_| GatewayError::BadRequest("unknown platform"))?
        .trim();
    p.allowed
        .iter()
        .find(|a| a.as_str() == v)
        .cloned()
        .ok_or(GatewayError::BadRequest("unknown platform"))
}

fn header_text(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(255).collect())
}

/// The legacy login's `Set-Cookie` values, on the gateway's own answer to the login.
fn relay_cookies(h: &mut HeaderMap, set_cookies: Vec<HeaderValue>) {
    for v in set_cookies {
        h.append(header::SET_COOKIE, v);
    }
}

/// A login refused by the lock-out: counted, audited, 429 with `Retry-After`.
fn locked(wait: std::time::Duration, anon: Subject<'_>, user: Option<&str>) -> GatewayError {
    metrics::counter!("authgate_logins_total", "result" => "locked").increment(1);
    audit::record_for_username(Event::AccountLocked, anon, user);
    GatewayError::AccountLocked { retry_after: wait }
}

/// A session just created, with its refresh token: answered as the token pair (JSON logins)
/// or as the `[browser]` cookies (form logins).
struct Issued {
    session: Session,
    refresh_token: RefreshToken,
    upstream_body: Option<serde_json::Value>,
    /// Unix seconds of the login.
    t: u64,
}

impl Issued {
    fn token_pair(self, live: &Live) -> Result<Response<Body>, GatewayError> {
        let mut pair = token_pair(live, &self.session, self.refresh_token.as_str(), self.t)?;
        if let Some(body) = self.upstream_body {
            pair["upstream"] = body;
        }
        Ok(json(StatusCode::OK, &pair))
    }

    /// The three cookies, then 303 to `return_to`, or (`Accept: application/json`) the
    /// pair without its tokens.
    fn cookies(self, live: &Live, form: &FormLogin<'_>) -> Result<Response<Body>, GatewayError> {
        let (access, claims) = access_for(live, &self.session, self.t)?;
        let mut resp = if form.wants_json {
            let mut v = serde_json::json!({
                "session_id": self.session.id,
                "platform": self.session.platform,
                "user": { "id": self.session.user_id, "name": self.session.user_name },
                "access_token_expires_at": claims.exp,
                "refresh_token_expires_at": self.session.expires_at.as_secs(),
            });
            if let Some(body) = self.upstream_body {
                v["upstream"] = body;
            }
            json(StatusCode::OK, &v)
        } else {
            browser::redirect(StatusCode::SEE_OTHER, &form.return_to)
        };
        let max_age = cookie_max_age(&self.session, self.t);
        browser::set_session_cookies(
            resp.headers_mut(),
            form.browser,
            &access,
            self.refresh_token.as_str(),
            max_age,
            None,
        );
        Ok(resp)
    }
}

/// How long a session's cookies live: until the session's own expiry (its idle limit, or
/// `max_lifetime` if sooner).
pub(super) fn cookie_max_age(s: &Session, t: u64) -> std::time::Duration {
    std::time::Duration::from_secs(s.expires_at.as_secs().saturating_sub(t))
}

/// Creates the session (ending the oldest beyond the platform limit).
async fn issue(
    app: &App,
    live: &Live,
    identity: LoginIdentity,
    platform: &str,
    headers: &HeaderMap,
    ip: IpAddr,
) -> Result<Issued, GatewayError> {
    let cfg = &live.config;
    // The store keeps milliseconds; the tokens' iat/exp are whole seconds.
    let t_ms = app.clock.now_ms();
    let t = t_ms.as_secs();
    let new = NewSession {
        user_id: identity.user_id.clone(),
        user_name: identity.user_name.clone(),
        tenant: identity.tenant.clone(),
        roles: identity.roles.clone(),
        platform: platform.to_owned(),
        device: header_text(headers, "x-device-id"),
        ip: ip.to_string(),
        user_agent: header_text(headers, header::USER_AGENT),
    };
    let limit = cfg.platforms.max_sessions.get(platform).copied();
    let created = app.store.create(new, limit, live.lifetimes, t_ms).await?;
    for (kicked, on) in created.kicked.iter().zip(&created.kicked_platforms) {
        app.notify.session_ended(
            About {
                session_id: kicked,
                user_id: &identity.user_id,
                platform: on,
            },
            Reason::Replaced,
        );
        audit::record(
            Event::SessionReplaced,
            Subject {
                user_id: Some(&identity.user_id),
                session_id: Some(kicked),
                platform: Some(on),
                ip: Some(ip),
            },
        );
    }
    let s = &created.session;
    scope::set_who(Arc::new(Ids {
        user_id: s.user_id.clone(),
        session_id: Some(s.id.clone()),
    }));
    audit::record(
        Event::Login,
        Subject {
            user_id: Some(&s.user_id),
            session_id: Some(&s.id),
            platform: Some(platform),
            ip: Some(ip),
        },
    );
    app.notify.login(crate::app::about(s));
    Ok(Issued {
        session: created.session,
        refresh_token: created.refresh_token,
        upstream_body: identity.upstream_body,
        t,
    })
}

/// The access token for a session, minted now.
pub(super) fn access_for(
    live: &Live,
    s: &Session,
    t: u64,
) -> Result<(String, Claims), GatewayError> {
    let id = AccessIdentity {
        sub: s.user_id.clone(),
        name: Some(s.user_name.clone()),
        sid: Some(s.id.clone()),
        plat: Some(s.platform.clone()),
        tenant: s.tenant.clone(),
        roles: (!s.roles.is_empty()).then(|| s.roles.clone()),
    };
    live.config.token.keys.mint(&id, t).map_err(|e| {
        scope::note(Level::ERROR, format!("signing an access token failed: {e}"));
        GatewayError::Internal
    })
}

pub(super) fn token_pair(
    live: &Live,
    s: &Session,
    refresh_token: &str,
    t: u64,
) -> Result<serde_json::Value, GatewayError> {
    let (access, claims) = access_for(live, s, t)?;
    Ok(serde_json::json!({
        "token_type": "Bearer",
        "access_token": access,
        "expires_in": claims.exp.saturating_sub(t),
        "access_token_expires_at": claims.exp,
        "refresh_token": refresh_token,
        // Rounded down: never a second the store would not honour.
        "refresh_token_expires_at": s.expires_at.as_secs(),
        "session_id": s.id,
        "platform": s.platform,
        "user": { "id": s.user_id, "name": s.user_name },
    }))
}
