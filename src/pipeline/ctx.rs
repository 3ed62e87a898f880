//! The one context a proxied request carries through the phases.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use http::Response;

use crate::app::{App, Live};
use crate::body::Body;
use crate::config::Config;
use crate::proxy::{ClientUpgrade, ConnInfo};
use crate::tokens::Claims;

/// What the phases know of one request beyond its parts. Each field says which phase sets it;
/// before that phase it holds its "nothing yet" value.
pub(crate) struct RequestCtx<'a, 'l> {
    pub app: &'a App,
    /// The config snapshot of this request: a reload never changes the rules mid-request.
    pub live: &'l Live,
    /// The connection the request came on.
    pub conn: ConnInfo,
    /// [`super::strip`]: the client asks for a WebSocket upgrade.
    pub websocket: bool,
    /// [`super::authenticate`]: who the request is; `None` on a public route and for an
    /// anonymous request on an optional one.
    pub identity: Option<Arc<Claims>>,
    /// [`super::csrf`]: the token came in the `[browser]` access cookie, so a silent refresh
    /// goes back in a `Set-Cookie`.
    pub via_cookie: bool,
    /// [`super::forward::prepare`]: the client half of a WebSocket upgrade.
    pub upgrade: Option<ClientUpgrade>,
    /// [`super::forward::prepare`]: set once the request body passed `max_body_bytes`.
    pub too_large: Arc<AtomicBool>,
}

impl<'a, 'l> RequestCtx<'a, 'l> {
    pub(crate) fn new(app: &'a App, live: &'l Live, conn: ConnInfo) -> Self {
        Self {
            app,
            live,
            conn,
            websocket: false,
            identity: None,
            via_cookie: false,
            upgrade: None,
            too_large: Arc::default(),
        }
    }

    /// The config of this request's snapshot.
    pub(crate) fn cfg(&self) -> &'l Config {
        &self.live.config
    }
}

/// What a phase that may answer by itself decided.
pub(crate) enum Flow {
    /// Go on with the next phase.
    Continue,
    /// This is the answer; no later phase runs.
    Answer(Response<Body>),
}
