//! Waiting, bounded: [`within`] for anything a test awaits and [`poll_until`] for what the
//! gateway cannot announce, so that a regression fails instead of hanging; and the one
//! wall-clock [`now`] of the tests, for what no gateway's clock reaches (hand-built tokens, the
//! demo). A test that needs a token, session or lock to end moves the gateway's clock
//! (`Gateway::advance`) rather than waiting, and compares with `Gateway::now`.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upper bound for anything a test awaits, so a regression fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(10);

/// Unix seconds now, by the wall clock (a gateway's own time is `Gateway::now`).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Awaits `f` for at most [`WAIT`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Asks `ask` every 50 ms until `done` holds for its answer, for at most [`WAIT`]; the last
/// answer. For events the gateway cannot announce (a store coming back).
pub async fn poll_until<T, F, Fut>(what: &str, mut ask: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = ask().await;
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
