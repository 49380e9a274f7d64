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

/// Dry run (`mode: shadow`): the denial `reason` was decided but is not sent; counts
/// `fapi_guard.<filter>.shadow_denied.<reason>` and logs the reason code and the status it
/// would have had. The caller lets the request pass.
pub fn shadow(filter: &str, stats: &FilterStats, reason: Reason) {
    stats.shadow_denied(reason);
    let _ = proxy_wasm::hostcalls::log(
        LogLevel::Info,
        &format!(
            "fapi_guard.{filter}: shadow_denied reason={} status={} (mode shadow: passed)",
            reason.code(),
            reason.status()
        ),
    );
}

/// Denies (`Mode::Enforce`: returns true, the caller stops the request) or records a shadow
/// denial (`Mode::Shadow`: returns false, the caller lets the request continue).
pub fn deny_or_shadow(
    filter: &str,
    stats: &FilterStats,
    mode: fapi_guard_core::authz::Mode,
    reason: Reason,
    reply: &Reply,
) -> bool {
    match mode {
        fapi_guard_core::authz::Mode::Enforce => {
            deny_with(filter, stats, reason, reply);
            true
        }
        fapi_guard_core::authz::Mode::Shadow => {
            shadow(filter, stats, reason);
            false
        }
    }
}

/// Sends a rendered reply as the local response (in the chain plugin, the chain ends here).
pub fn send(reply: &Reply) {
    crate::chain::note_reply();
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let _ = proxy_wasm::hostcalls::send_http_response(reply.status, headers, Some(&reply.body));
}
