//! Sends a denial: one log line with the stable reason code (never token content),
//! one counter, and the reply rendered by `fapi_guard_core::denial`.

use fapi_guard_core::denial::{ChallengeContext, Reason, Reply};
use proxy_wasm::types::LogLevel;

use crate::stats::FilterStats;

/// Logs, counts and sends the denial for `reason`.
pub fn deny(filter: &str, stats: &FilterStats, reason: Reason, ctx: &ChallengeContext<'_>) {
    stats.denied(reason);
    let _ = proxy_wasm::hostcalls::log(
        LogLevel::Info,
        &format!(
            "fapi_guard.{filter}: denied reason={} status={}",
            reason.code(),
            reason.status()
        ),
    );
    send(&reason.reply(ctx));
}

/// Sends a rendered reply as the local response.
pub fn send(reply: &Reply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let _ = proxy_wasm::hostcalls::send_http_response(reply.status, headers, Some(&reply.body));
}
