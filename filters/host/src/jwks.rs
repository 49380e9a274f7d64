//! Remote JWKS fetching through an Envoy cluster (proxy-wasm `dispatch_http_call`), shared
//! by all worker threads through proxy-wasm shared data:
//! - `fapi_guard.jwks|<uri>` holds the last good document and when it was fetched;
//! - `fapi_guard.jwks_lease|<uri>` holds "fetching until <t>", taken with compare-and-swap,
//!   so one worker fetches while the others pick the result up on their next tick.
//!
//! The refresh rules themselves are in `fapi_guard_core::jwks_store`.

use std::time::Duration;

use fapi_guard_core::jwks_store::{decode_shared, encode_shared, FetchOutcome, KeyRing};
use fapi_guard_core::policy::RemoteJwks;
use fapi_guard_core::shared_store::{version_for_write, SharedStore};

use crate::shared::HostSharedData;
use proxy_wasm::types::LogLevel;

// Namespaced per API and filter: Istio gives every plugin of a proxy one shared-data namespace.
fn doc_key(remote: &RemoteJwks) -> String {
    format!("fapi_guard.token.{}.jwks|{}", remote.api, remote.uri)
}

fn lease_key(remote: &RemoteJwks) -> String {
    format!("fapi_guard.token.{}.jwks_lease|{}", remote.api, remote.uri)
}

/// Picks up a document another worker stored. Returns the new CAS if it changed.
pub fn sync_from_shared(
    ring: &mut KeyRing,
    index: usize,
    remote: &RemoteJwks,
    seen_cas: Option<u32>,
) -> Option<u32> {
    let (bytes, cas) = proxy_wasm::hostcalls::get_shared_data(&doc_key(remote)).ok()?;
    if cas == seen_cas {
        return None;
    }
    let bytes = bytes?;
    let (fetched_at, body) = decode_shared(&bytes)?;
    ring.install_shared(index, body, fetched_at);
    cas
}

/// Tries to take the fetch lease for `hold_seconds`. False if another worker holds it.
/// Compare-and-swap (create-only when the key is new), so two workers cannot both take it.
pub fn take_lease(remote: &RemoteJwks, now: i64, hold_seconds: i64) -> bool {
    let key = lease_key(remote);
    let (current, cas) = HostSharedData.get(&key);
    let held_until: i64 = current
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if held_until > now {
        return false;
    }
    let until = (now + hold_seconds).to_string();
    HostSharedData
        .set(&key, until.as_bytes(), version_for_write(cas))
        .is_ok()
}

/// Extends (or shortens) the lease after a result, e.g. to hold back during backoff.
pub fn set_lease(remote: &RemoteJwks, until: i64) {
    let _ = proxy_wasm::hostcalls::set_shared_data(
        &lease_key(remote),
        Some(until.to_string().as_bytes()),
        None,
    );
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

/// Reads the answer of a finished call (in `on_http_call_response`).
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
        body_size,
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    (status, body)
}

/// Applies an answer to the ring, shares good documents, and sets the lease for backoff.
/// `status` None means the call failed or timed out.
pub fn apply_answer(
    ring: &mut KeyRing,
    index: usize,
    remote: &RemoteJwks,
    now: i64,
    status: Option<u32>,
    body: &[u8],
) -> Option<FetchOutcome> {
    let outcome = ring.apply_fetch(index, now, status, body)?;
    match &outcome {
        FetchOutcome::Updated | FetchOutcome::Unchanged => {
            let _ = proxy_wasm::hostcalls::set_shared_data(
                &doc_key(remote),
                Some(&encode_shared(now, body)),
                None,
            );
            set_lease(remote, now);
            crate::stats::FilterStats::bump("token", "jwks.fetch_ok");
        }
        FetchOutcome::KeptLastGood(why) => {
            let failures = ring
                .issuers
                .get(index)
                .map_or(1, |k| k.consecutive_failures);
            let backoff = 1i64 << failures.clamp(1, 20).saturating_sub(1);
            set_lease(remote, now + backoff.min(remote.refresh_seconds as i64));
            crate::stats::FilterStats::bump("token", "jwks.fetch_failed");
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
