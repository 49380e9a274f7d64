//! Host time, as Unix seconds.

use std::time::UNIX_EPOCH;

/// The host's current time in Unix seconds (0 if the host cannot tell: every
/// time check then fails closed, as tokens are never valid at the epoch).
pub fn now_seconds() -> i64 {
    proxy_wasm::hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0)
}
