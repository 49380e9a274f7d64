//! Remote JWKS fetching through an Envoy cluster (proxy-wasm `dispatch_http_call`), shared
//! by all worker threads through proxy-wasm shared data:
//! - `fapi_guard.jwks|<uri>` holds the last good document and when it was fetched;
//! - `fapi_guard.jwks_lease|<uri>` holds "fetching until <t>", taken with compare-and-swap,
//!   so one worker fetches while the others pick the result up on their next tick.
//!
//! The refresh rules, when to fetch (`begin_fetch`, `due_fetches`), the lease and the backoff
//! are in `fapi_guard_core::jwks_store` (on a `SharedStore`); this file only sends the fetch,
//! reads its answer, counts, sets the JWKS gauges (`gauges::jwks`) and logs.

use std::time::Duration;

use fapi_guard_core::jwks_limits;
use fapi_guard_core::jwks_store::{self, FetchOutcome, KeyRing};
use fapi_guard_core::policy::RemoteJwks;

use crate::shared::HostSharedData;
use proxy_wasm::types::LogLevel;

/// Picks up a document another worker stored. Returns the new CAS if it changed.
pub fn sync_from_shared(
    ring: &mut KeyRing,
    index: usize,
    remote: &RemoteJwks,
    seen_cas: Option<u32>,
) -> Option<u32> {
    jwks_store::sync_from_shared(&HostSharedData, ring, index, remote, seen_cas)
}

/// Starts a fetch of issuer `index`'s JWKS when `jwks_store::begin_fetch` says this worker
/// sends it (not in flight here, lease taken); marks it in flight. Returns the call token.
pub fn start_fetch(
    ring: &mut KeyRing,
    in_flight: &mut [bool],
    index: usize,
    remote: &RemoteJwks,
    now: i64,
) -> Option<u32> {
    if !jwks_store::begin_fetch(&HostSharedData, ring, in_flight, index, remote, now) {
        return None;
    }
    let token = dispatch(remote)?;
    // The issuer's fetch counters exist (at 0) from its first fetch, so the first failure
    // is already an increase (`rate()`) for the alert rules.
    for counter in ["fetch_ok", "fetch_failed"] {
        let _ = proxy_wasm::hostcalls::define_metric(
            proxy_wasm::types::MetricType::Counter,
            &format!("fapi_guard.token.{}", issuer_stat(counter, remote)),
        );
    }
    if let Some(f) = in_flight.get_mut(index) {
        *f = true;
    }
    Some(token)
}

/// `jwks.<counter>.<issuer>`: a counter of the token filter per issuer (the last part is the
/// `issuer` label, envoy/stats_config.py).
fn issuer_stat(counter: &str, remote: &RemoteJwks) -> String {
    format!("jwks.{counter}.{}", remote.issuer)
}

/// Sends the GET for `remote`; returns the call token.
pub fn dispatch(remote: &RemoteJwks) -> Option<u32> {
    let headers = vec![
        (":method", "GET"),
        (":path", remote.path.as_str()),
        (":authority", remote.authority.as_str()),
        ("accept", "application/jwk-set+json, application/json"),
    ];
    match proxy_wasm::hostcalls::dispatch_http_call(
        &remote.cluster,
        headers,
        None,
        vec![],
        Duration::from_millis(remote.timeout_ms),
    ) {
        Ok(token) => Some(token),
        Err(e) => {
            let _ = proxy_wasm::hostcalls::log(
                LogLevel::Warn,
                &format!(
                    "fapi_guard.token: jwks fetch could not be sent (cluster `{}`): {e:?}",
                    remote.cluster
                ),
            );
            None
        }
    }
}

/// Reads the answer of a finished call (in `on_http_call_response`). Copies at most
/// `jwks_limits::JWKS_BYTES_CEILING + 1` bytes into the VM: a larger answer is over every
/// `jwks_max_bytes` cap and is refused as `too_large` (docs/checks.md §1.4) without copying it.
pub fn read_answer(body_size: usize) -> (Option<u32>, Vec<u8>) {
    let status = proxy_wasm::hostcalls::get_map_value(
        proxy_wasm::types::MapType::HttpCallResponseHeaders,
        ":status",
    )
    .ok()
    .flatten()
    .and_then(|s| s.parse().ok());
    let body = proxy_wasm::hostcalls::get_buffer(
        proxy_wasm::types::BufferType::HttpCallResponseBody,
        0,
        body_size.min(jwks_limits::JWKS_BYTES_CEILING.saturating_add(1)),
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    (status, body)
}

/// Applies an answer (`jwks_store::apply_answer`: ring, shared document, lease and backoff),
/// then counts and logs it. `status` None means the call failed or timed out.
pub fn apply_answer(
    ring: &mut KeyRing,
    index: usize,
    remote: &RemoteJwks,
    now: i64,
    status: Option<u32>,
    body: &[u8],
) -> Option<FetchOutcome> {
    let outcome =
        jwks_store::apply_answer(&HostSharedData, ring, index, remote, now, status, body)?;
    let failed_at = matches!(outcome, FetchOutcome::KeptLastGood(_)).then_some(now);
    crate::gauges::jwks(ring, index, remote, failed_at);
    match &outcome {
        FetchOutcome::Updated | FetchOutcome::Unchanged => {
            crate::stats::FilterStats::bump("token", &issuer_stat("fetch_ok", remote));
        }
        FetchOutcome::KeptLastGood(why) => {
            crate::stats::FilterStats::bump("token", &issuer_stat("fetch_failed", remote));
            // Size caps (`issuers[i].jwks_max_bytes` / `jwks_max_keys`) get their own counter.
            if matches!(*why, "too_large" | "too_many_keys") {
                let name = issuer_stat(&format!("refused_{why}"), remote);
                crate::stats::FilterStats::bump("token", &name);
            }
            let _ = proxy_wasm::hostcalls::log(
                LogLevel::Warn,
                &format!(
                    "fapi_guard.token: jwks fetch from `{}` failed ({why}); keeping last good keys",
                    remote.uri
                ),
            );
        }
    }
    Some(outcome)
}
