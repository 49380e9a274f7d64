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

use fapi_guard_core::engine::Worker;
use fapi_guard_core::jwks_limits;
use fapi_guard_core::jwks_store::FetchOutcome;
use fapi_guard_core::policy::RemoteJwks;

use crate::shared::HostSharedData;
use proxy_wasm::types::LogLevel;

/// Starts a fetch of issuer `index`'s JWKS when `Worker::begin_fetch` says this worker sends
/// it (not in flight here, the shared lease taken); marks it in flight. The call token.
pub fn start(worker: &Worker, index: usize, now: i64) -> Option<u32> {
    let remote = worker.policy.remote_jwks(index)?;
    if !worker.begin_fetch(&HostSharedData, index, now) {
        return None;
    }
    let token = dispatch(remote)?;
    sent(worker, index, remote);
    Some(token)
}

/// Sends issuer `index`'s fetch the pipeline asked for (it took the lease); marks it in flight.
pub fn send(worker: &Worker, index: usize) -> Option<u32> {
    let remote = worker.policy.remote_jwks(index)?;
    let token = dispatch(remote)?;
    sent(worker, index, remote);
    Some(token)
}

/// A fetch went out: in flight, and the issuer's fetch counters exist (at 0) from its first
/// fetch, so the first failure is already an increase (`rate()`) for the alert rules.
fn sent(worker: &Worker, index: usize, remote: &RemoteJwks) {
    for counter in ["fetch_ok", "fetch_failed"] {
        let _ = proxy_wasm::hostcalls::define_metric(
            proxy_wasm::types::MetricType::Counter,
            &format!("fapi_guard.token.{}", issuer_stat(counter, remote)),
        );
    }
    worker.fetch_sent(index);
}

/// A fetch of issuer `index` answered (in `on_http_call_response`): installs it
/// (`Worker::fetch_answered`), then sets the issuer's gauges, counts and logs it.
pub fn answered(worker: &Worker, index: usize, body_size: usize) {
    let (status, body) = read_answer(body_size);
    let now = crate::clock::now_seconds();
    let outcome = worker.fetch_answered(&HostSharedData, index, now, status, &body);
    if let (Some(outcome), Some(remote)) = (outcome, worker.policy.remote_jwks(index)) {
        let failed_at = matches!(outcome, FetchOutcome::KeptLastGood(_)).then_some(now);
        crate::gauges::jwks(&worker.ring.borrow(), index, remote, failed_at);
        report(remote, &outcome);
    }
}

/// `jwks.<counter>.<issuer>`: a counter of the token step per issuer (the last part is the
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

/// Counts and logs a fetch's outcome.
fn report(remote: &RemoteJwks, outcome: &FetchOutcome) {
    match outcome {
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
}
