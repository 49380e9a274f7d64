//! Sends a denial: one log line with the stable reason code (never token content),
//! one counter, and the reply rendered by `fapi_guard_core::denial`.

use fapi_guard_core::denial::{ChallengeContext, Reason, Reply};
use fapi_guard_core::shadow::{self, ShadowRequest};
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

/// Filter state (Envoy, for this stream) saying a shadow refusal was recorded: the filters
/// after the one that recorded it do not count the request again.
const SHADOW_REFUSED_PROPERTY: &str = "fapi_guard.shadow_refused";

/// Dry run (`mode: shadow`): the denial `reason` was decided but is not sent. The first
/// refusal of a request is counted (`fapi_guard.<filter>.shadow_denied.<reason>`) and logged
/// with the request it is about (`fapi_guard_core::shadow`); a later filter's refusal of the
/// same request is not (in enforce mode the request would have stopped at the first, and the
/// later ones, e.g. `no_verified_token` after a token refusal, follow from it). The caller lets
/// the request pass.
pub fn shadow(filter: &str, stats: &FilterStats, reason: Reason, who: ShadowRequest) {
    let earlier = match crate::chain::shadow_refused() {
        Some(refused) => refused,
        None => proxy_wasm::hostcalls::get_property(vec![SHADOW_REFUSED_PROPERTY])
            .ok()
            .flatten()
            .is_some(),
    };
    if earlier {
        return;
    }
    if !crate::chain::mark_shadow_refused() {
        let _ = proxy_wasm::hostcalls::set_property(vec![SHADOW_REFUSED_PROPERTY], Some(b"1"));
    }
    stats.shadow_denied(reason);
    let _ = proxy_wasm::hostcalls::log(LogLevel::Info, &shadow::log_line(filter, reason, &who));
}

/// Denies (`Mode::Enforce`: returns true, the caller stops the request) or records a shadow
/// denial (`Mode::Shadow`: returns false, the caller lets the request continue). `who` names
/// the request for the shadow log line (built only in shadow mode).
pub fn deny_or_shadow(
    filter: &str,
    stats: &FilterStats,
    mode: fapi_guard_core::authz::Mode,
    reason: Reason,
    reply: &Reply,
    who: impl FnOnce() -> ShadowRequest,
) -> bool {
    match mode {
        fapi_guard_core::authz::Mode::Enforce => {
            deny_with(filter, stats, reason, reply);
            true
        }
        fapi_guard_core::authz::Mode::Shadow => {
            shadow(filter, stats, reason, who());
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
