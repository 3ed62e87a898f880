//! Long-lived connections of a session (WebSocket tunnels, streaming responses) and the task
//! the watcher (in `app`) that closes them when the session ends, on every instance.
//!
//! The store broadcasts ended session ids (Redis pub/sub across instances); a watcher task
//! wakes the registered streams of that session, which then stop. When revocations may have
//! been missed (`RECHECK_ALL`, or a lagging receiver) every registered session is checked
//! against the store again. Only tunnels and response bodies still unfinished after their
//! first poll are registered, so ordinary requests pay nothing but a wrapper.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{futures::OwnedNotified, Notify};

use crate::body::BodyError;
use crate::tokens::Claims;

/// The open streams of one session: registration number and a weak handle.
type Streams = Vec<(u64, Weak<Entry>)>;

/// The streams of every session with one open.
#[derive(Default)]
pub(crate) struct Registry {
    next: AtomicU64,
    by_session: Mutex<HashMap<Box<str>, Streams>>,
}

/// One registered stream: user and session, and the bell that ends it.
pub(crate) struct Entry {
    user_id: Box<str>,
    session_id: Box<str>,
    id: u64,
    bell: Arc<Notify>,
    registry: Weak<Registry>,
}

impl Entry {
    /// Resolves when the session ends.
    pub(crate) fn ended(&self) -> OwnedNotified {
        self.bell.clone().notified_owned()
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(reg) = self.registry.upgrade() {
            reg.remove(&self.session_id, self.id);
        }
    }
}

impl Registry {
    /// Registers a stream of `session_id`; dropping the returned entry unregisters it.
    pub(crate) fn register(self: &Arc<Self>, user_id: &str, session_id: &str) -> Arc<Entry> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            user_id: user_id.into(),
            session_id: session_id.into(),
            id,
            bell: Arc::new(Notify::new()),
            registry: Arc::downgrade(self),
        });
        let mut map = self.by_session.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(session_id.into())
            .or_default()
            .push((id, Arc::downgrade(&entry)));
        entry
    }

    fn remove(&self, session_id: &str, id: u64) {
        let mut map = self.by_session.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = map.get_mut(session_id) {
            v.retain(|(i, _)| *i != id);
            if v.is_empty() {
                map.remove(session_id);
            }
        }
    }

    /// Ends every stream of `session_id`.
    pub(crate) fn end(&self, session_id: &str) {
        let entries: Vec<Arc<Entry>> = {
            let map = self.by_session.lock().unwrap_or_else(|p| p.into_inner());
            map.get(session_id)
                .map(|v| v.iter().filter_map(|(_, w)| w.upgrade()).collect())
                .unwrap_or_default()
        };
        for e in entries {
            // notify_one keeps a permit if the stream is not waiting at this instant.
            e.bell.notify_one();
        }
    }

    /// Streams open now (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The (user id, session id) of every registered stream's session.
    pub(crate) fn sessions(&self) -> Vec<(Box<str>, Box<str>)> {
        let map = self.by_session.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter_map(|v| v.iter().find_map(|(_, w)| w.upgrade()))
            .map(|e| (e.user_id.clone(), e.session_id.clone()))
            .collect()
    }
}

pin_project_lite::pin_project! {
    /// A response body of a session that ends (with an error, so the client sees a cut
    /// stream, not a complete one) when its session ends: streams and bodies with a
    /// Content-Length alike (a download).
    ///
    /// Registering costs a lock and an allocation, so it happens only for a body that is
    /// still unfinished after a poll: most answers arrive whole in their first frame and
    /// never touch the registry. The end of a session between that first poll and the
    /// registration would go unnoticed; the first poll follows the answer's head at once,
    /// so that gap is no wider than the one between the session check and the answer.
    pub struct Revocable<B> {
        #[pin]
        inner: B,
        #[pin]
        ended: Option<OwnedNotified>,
        // Whom to register with, until the body is finished or registered.
        pending: Option<(Arc<Registry>, Arc<Claims>)>,
        entry: Option<Arc<Entry>>,
    }
}

impl<B> Revocable<B> {
    /// The body of `claims`' session; registered with `registry` if it is not finished after
    /// a poll. (Claims without a session id have nothing to be registered under.)
    pub(crate) fn new(inner: B, registry: Arc<Registry>, claims: Arc<Claims>) -> Self {
        let pending = claims.sid.is_some().then_some((registry, claims));
        Self {
            inner,
            ended: None,
            pending,
            entry: None,
        }
    }
}

/// The session of a stream ended.
#[derive(Debug, thiserror::Error)]
#[error("the session ended")]
pub(crate) struct SessionEnded;

impl<B> http_body::Body for Revocable<B>
where
    B: http_body::Body<Data = Bytes, Error = BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        let cut = || Poll::Ready(Some(Err(Box::new(SessionEnded) as BodyError)));
        if let Some(ended) = this.ended.as_mut().as_pin_mut() {
            if ended.poll(cx).is_ready() {
                return cut();
            }
        }
        let frame = this.inner.as_mut().poll_frame(cx);
        if this.pending.is_some() {
            let finished = match &frame {
                Poll::Ready(None | Some(Err(_))) => true,
                Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
                Poll::Pending => false,
            };
            let pending = this.pending.take();
            if let (false, Some((registry, claims))) = (finished, pending) {
                if let Some(sid) = claims.sid.as_deref() {
                    let entry = registry.register(&claims.sub, sid);
                    this.ended.set(Some(entry.ended()));
                    *this.entry = Some(entry);
                    // Polled once now, so that a body waiting for its upstream is woken by
                    // the end too.
                    if let Some(ended) = this.ended.as_mut().as_pin_mut() {
                        if ended.poll(cx).is_ready() {
                            return cut();
                        }
                    }
                }
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body fed from a channel, one frame per message.
    struct Chan(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for Chan {
        type Data = Bytes;
        type Error = BodyError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    fn claims(sid: &str) -> Arc<Claims> {
        let c = serde_json::json!({"iss": "i", "aud": "a", "sub": "u", "sid": sid, "exp": 1});
        Arc::new(serde_json::from_value(c).unwrap())
    }

    #[tokio::test]
    async fn a_body_finished_in_its_first_frame_is_never_registered() {
        let reg = Arc::new(Registry::default());
        let whole = crate::body::full("the whole answer");
        let mut body = std::pin::pin!(Revocable::new(whole, reg.clone(), claims("s1")));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "the whole answer");
        assert!(reg.is_empty(), "registered although complete");
        assert!(body.frame().await.is_none());
        assert!(reg.is_empty());
    }

    #[tokio::test]
    async fn an_unfinished_body_registers_and_is_cut_when_its_session_ends() {
        let reg = Arc::new(Registry::default());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut body = std::pin::pin!(Revocable::new(Chan(rx), reg.clone(), claims("s1")));
        tx.try_send(Bytes::from_static(b"part")).unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        assert_eq!(reg.len(), 1, "an unfinished body is registered");
        // Waiting for more when the session ends: woken, and cut.
        let ender = {
            let reg = reg.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                reg.end("s1");
            })
        };
        let next = tokio::time::timeout(std::time::Duration::from_secs(1), body.frame())
            .await
            .expect("woken by the end");
        assert!(next.unwrap().is_err(), "cut with an error");
        ender.await.unwrap();
        drop(tx);
    }

    #[tokio::test]
    async fn end_wakes_only_that_sessions_streams() {
        let reg = Arc::new(Registry::default());
        let a = reg.register("u", "s1");
        let b = reg.register("u", "s2");
        assert_eq!(reg.len(), 2);
        reg.end("s1");
        tokio::time::timeout(std::time::Duration::from_secs(1), a.ended())
            .await
            .expect("s1 woken");
        let woke_b = tokio::time::timeout(std::time::Duration::from_millis(50), b.ended()).await;
        assert!(woke_b.is_err(), "s2 must not be woken");
        drop(a);
        assert_eq!(reg.len(), 1);
        drop(b);
        assert!(reg.is_empty());
    }
}
