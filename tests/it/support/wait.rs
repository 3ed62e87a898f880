//! Waiting, bounded: [`within`] for anything a test awaits, so that a regression fails instead
//! of hanging; the one wall-clock [`now`] of the tests.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upper bound for anything a test awaits, so a regression fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(10);

/// Unix seconds now.
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
