//! Silent refresh, for the proxy path and `/auth/verify` alike: [`hand_back`] decides (an own
//! token of a session near its expiry, whose user still exists), has the token minted (once
//! for all concurrent requests of the session, by [`crate::tokens::silent`]), puts it in the
//! answer and counts it.

use http::header::{self, HeaderMap, HeaderValue};

use super::browser;
use crate::app::{App, Live};
use crate::tokens::Claims;

/// Puts a fresh access token in `refresh_header` of the answer `h` (never cached, readable by
/// a browser app) when `claims` are of an own token near its expiry, and counts it. A token
/// that came in the `[browser]` access cookie (`via_cookie`) gets its successor in a
/// `Set-Cookie` for that cookie instead: the token stays out of reach of scripts.
pub(crate) fn hand_back(
    app: &App,
    live: &Live,
    claims: &Claims,
    h: &mut HeaderMap,
    via_cookie: bool,
) {
    if claims.is_foreign() {
        // Never minted here, so never refreshed here: the client goes back to its provider.
        return;
    }
    let t = &live.config.token;
    let Some(fresh) =
        app.refresher
            .maybe_refresh(&t.keys, claims, t.silent_refresh_window, app.clock.now())
    else {
        return;
    };
    // A user no longer in the users file gets no new token (in stateful mode the reload ended
    // the session anyway; in stateless mode this is what ends its access). Looked up only
    // inside the window, not on every authenticated request.
    if live.login.has_user_id(&claims.sub) == Some(false) {
        return;
    }
    match live.config.browser.as_ref().filter(|_| via_cookie) {
        Some(b) => browser::set_access_cookie(h, b, &fresh, live.lifetimes.refresh_ttl),
        None => {
            let Ok(v) = HeaderValue::from_str(&fresh) else {
                return;
            };
            h.insert(t.refresh_header.clone(), v);
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                live.expose_refresh.clone(),
            );
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    metrics::counter!("authgate_silent_refreshes_total").increment(1);
}
