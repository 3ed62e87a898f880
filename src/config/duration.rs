//! Durations written as `"500ms"`, `"30s"`, `"10m"`, `"2h"`, `"30d"`.

use std::time::Duration;

/// Parses a duration string; `None` when it is not of the accepted form.
pub fn parse(s: &str) -> Option<Duration> {
    let _ = s;
    todo!("duration::parse")
}
