//! Sharing fetched documents between worker threads (proxy-wasm shared data, through
//! [`SharedStore`]): the encoding of a stored document, its keys, the fetch lease that lets one
//! worker fetch at a time, and the steps the host runs around a fetch.

use super::key_ring::{FetchOutcome, KeyRing};
use crate::policy::{Policy, RemoteJwks};
use crate::shared_store::{version_for_write, SharedStore};

/// Shared-data encoding of a fetched JWKS: `<fetched_at>\n<document>`.
pub fn encode_shared(fetched_at: i64, body: &[u8]) -> Vec<u8> {
    let mut v = format!("{fetched_at}\n").into_bytes();
    v.extend_from_slice(body);
    v
}

pub fn decode_shared(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let nl = bytes.iter().position(|b| *b == b'\n')?;
    let (ts, body) = bytes.split_at(nl);
    let ts = std::str::from_utf8(ts).ok()?.parse().ok()?;
    Some((ts, body.get(1..)?))
}

/// Shared-data key of the last good document. Namespaced per API and filter: Istio gives
/// every plugin of a proxy one shared-data namespace (docs/checks.md §1, shared-data isolation).
pub fn doc_key(remote: &RemoteJwks) -> String {
    format!("fapi_guard.token.{}.jwks|{}", remote.api, remote.uri)
}

/// Shared-data key of the fetch lease ("fetching until <t>").
pub fn lease_key(remote: &RemoteJwks) -> String {
    format!("fapi_guard.token.{}.jwks_lease|{}", remote.api, remote.uri)
}

/// How long a fetch holds the lease: its timeout, rounded up, plus a second.
pub fn lease_hold_seconds(remote: &RemoteJwks) -> i64 {
    i64::try_from(remote.timeout_ms / 1000)
        .unwrap_or(i64::MAX)
        .saturating_add(1)
}

/// Picks up a document another worker stored. Returns the new version if it changed.
pub fn sync_from_shared(
    store: &impl SharedStore,
    ring: &mut KeyRing,
    index: usize,
    remote: &RemoteJwks,
    seen: Option<u32>,
) -> Option<u32> {
    let (bytes, version) = store.get(&doc_key(remote));
    if version.is_none() || version == seen {
        return None;
    }
    let bytes = bytes?;
    let (fetched_at, body) = decode_shared(&bytes)?;
    ring.install_shared(index, body, fetched_at);
    version
}

/// Tries to take the fetch lease until `now + hold_seconds`. False if another worker holds it.
/// Compare-and-swap (create-only when the key is new), so two workers cannot both take it.
pub fn take_lease(
    store: &impl SharedStore,
    remote: &RemoteJwks,
    now: i64,
    hold_seconds: i64,
) -> bool {
    let key = lease_key(remote);
    let (current, version) = store.get(&key);
    let held_until: i64 = current
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if held_until > now {
        return false;
    }
    let until = now.saturating_add(hold_seconds).to_string();
    store
        .set(&key, until.as_bytes(), version_for_write(version))
        .is_ok()
}

/// The remote issuers (indexes) whose scheduled fetch is due at `now`
/// ([`IssuerKeys::fetch_due`]: at start, every refresh period, after the backoff).
pub fn due_fetches(policy: &Policy, ring: &KeyRing, now: i64) -> Vec<usize> {
    (0..policy.issuers.len())
        .filter(|&i| match (policy.remote_jwks(i), ring.issuers.get(i)) {
            (Some(remote), Some(keys)) => keys.fetch_due(now, remote),
            _ => false,
        })
        .collect()
}

/// Whether this worker sends a fetch of issuer `index`'s JWKS at `now` (docs/checks.md §1.4):
/// never while its own fetch of it is in flight (`in_flight[index]`; an unknown index counts
/// as in flight), and only when it takes the shared lease ([`take_lease`]), so one worker
/// fetches and the others pick the document up. Records the attempt when it does; the glue
/// then sends the call and marks it in flight.
pub fn begin_fetch(
    store: &impl SharedStore,
    ring: &mut KeyRing,
    in_flight: &[bool],
    index: usize,
    remote: &RemoteJwks,
    now: i64,
) -> bool {
    if in_flight.get(index).copied().unwrap_or(true) {
        return false;
    }
    if !take_lease(store, remote, now, lease_hold_seconds(remote)) {
        return false;
    }
    if let Some(k) = ring.issuers.get_mut(index) {
        k.note_attempt(now);
    }
    true
}

/// Sets the lease to `until` (after a result: `now`, or `now + backoff` to hold back).
pub fn set_lease(store: &impl SharedStore, remote: &RemoteJwks, until: i64) {
    let _ = store.set(&lease_key(remote), until.to_string().as_bytes(), None);
}

/// Applies this worker's fetch answer (`status` None: no answer or timeout) to the ring,
/// shares a good document with the other workers and releases the lease; after a failure the
/// lease is held for the backoff ([`IssuerKeys::backoff_seconds`]), so no worker refetches
/// before it.
pub fn apply_answer(
    store: &impl SharedStore,
    ring: &mut KeyRing,
    index: usize,
    remote: &RemoteJwks,
    now: i64,
    status: Option<u32>,
    body: &[u8],
) -> Option<FetchOutcome> {
    let outcome = ring.apply_fetch_limited(index, now, status, body, remote.limits)?;
    match &outcome {
        FetchOutcome::Updated | FetchOutcome::Unchanged => {
            let _ = store.set(&doc_key(remote), &encode_shared(now, body), None);
            set_lease(store, remote, now);
        }
        FetchOutcome::KeptLastGood(_) => {
            let backoff = ring
                .issuers
                .get(index)
                .map_or(1, |k| k.backoff_seconds(remote).max(1));
            set_lease(store, remote, now.saturating_add(backoff));
        }
    }
    Some(outcome)
}
