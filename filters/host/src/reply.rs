//! Sends a denial: one log line with the stable reason code (never token content),
//! one counter, and the reply rendered by `fapi_guard_core::denial`.

use fapi_guard_core::denial::{ChallengeContext, Reason, Reply};
use proxy_wasm::types::LogLevel;

use crate::stats::FilterStats;

/// Logs, counts and sends the denial for `reason`.
pub fn deny(filter: &str, stats: &FilterStats, reason: Reason, ctx: &ChallengeContext<'_>) {
    deny_with(filter, stats, reason, &reason.reply(ctx));
}

/// Logs, counts and sends a denial whose reply the caller rendered (from `reason.reply`).
/// A 503 is logged as a warning: the guard could not decide, an operator should look.
pub fn deny_with(filter: &str, stats: &FilterStats, reason: Reason, reply: &Reply) {
    stats.denied(reason);
    let level = if reply.status == 503 {
        LogLevel::Warn
    } else {
        LogLevel::Info
    };
    let _ = proxy_wasm::hostcalls::log(
        level,
        &format!(
            "fapi_guard.{filter}: denied reason={} status={}",
            reason.code(),
            reply.status
        ),
    );
    send(reply);
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
