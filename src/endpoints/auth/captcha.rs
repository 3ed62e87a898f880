//! `GET {prefix}/captcha` (a new challenge), and the captcha step of `POST {prefix}/login`
//! ([`gate`]), both over [`crate::login::captcha`].

use std::net::IpAddr;

use http::{Response, StatusCode};

use super::json;
use crate::app::{App, Live};
use crate::audit::{self, Event, Subject};
use crate::body::Body;
use crate::config::CaptchaMode;
use crate::error::GatewayError;
use crate::login::captcha::{self, Verdict};
use crate::session::Millis;

/// Is the captcha endpoint there at all? Not with `mode = "off"`, nor without login.
pub(super) fn offered(live: &Live) -> bool {
    live.config.login.captcha.mode != CaptchaMode::Off && live.login.is_enabled()
}

/// A new challenge: 200 `{"captcha_id","image":"data:image/png;base64,...","expires_in"}`,
/// never cached. Each IP gets [`captcha::FLOOD_LIMIT_PER_SECOND`] a second (then 429
/// `rate_limited`), so a flood renders and stores nothing beyond that.
pub(super) async fn get(
    app: &App,
    live: &Live,
    ip: IpAddr,
) -> Result<Response<Body>, GatewayError> {
    if !app.captcha_flood.allow(ip) {
        metrics::counter!("authgate_captchas_total", "result" => "flood").increment(1);
        return Err(GatewayError::RateLimited);
    }
    let c = captcha::issue(&app.store, &live.config.login.captcha, app.clock.now_ms()).await?;
    metrics::counter!("authgate_captchas_total", "result" => "issued").increment(1);
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "captcha_id": c.id,
            "image": format!("data:image/png;base64,{}", c.png_base64),
            "expires_in": c.expires_in,
        }),
    ))
}

/// The captcha step of one login: `Ok` to go on to the credentials, or 401
/// `captcha_required` / `invalid_captcha` (audited as `captcha_failed` with the attempted
/// `username`, counted, and never a failed login for the lock-out).
pub(super) async fn gate(
    app: &App,
    live: &Live,
    body: &[u8],
    username: Option<&str>,
    ip: IpAddr,
    anon: Subject<'_>,
    t: Millis,
) -> Result<(), GatewayError> {
    let verdict = captcha::check(&app.store, &live.config.login, body, username, ip, t).await?;
    let refused = match verdict {
        Verdict::NotRequired => return Ok(()),
        Verdict::Passed => {
            metrics::counter!("authgate_captchas_total", "result" => "passed").increment(1);
            return Ok(());
        }
        Verdict::Required => GatewayError::CaptchaRequired,
        Verdict::Invalid => GatewayError::InvalidCaptcha,
    };
    let code = refused.code();
    metrics::counter!("authgate_captchas_total", "result" => code).increment(1);
    audit::record_attempt(Event::CaptchaFailed, anon, username, code);
    Err(refused)
}
