//! The issuer key ring and the JWKS refresh rules, as pure state (time injected).
//!
//! Rules (docs/checks.md §1.4): inline keys never change; remote keys are fetched at
//! start, refreshed every `refresh_seconds`, refetched when a token names an unknown `kid`
//! (at most once per `min_refetch_seconds`), retried with exponential backoff after a
//! failure, and the last good keys are kept through an outage or a garbage answer.
//! The glue shares fetched documents between worker threads (proxy-wasm shared data) and
//! feeds them in with [`KeyRing::install_shared`].

use crate::jose::{Alg, Jwks};
use crate::jwks_limits::JwksLimits;
use crate::policy::{KeySource, Policy, RemoteJwks};
use crate::shared_store::{version_for_write, SharedStore};
use crate::token::{KeyLookup, KeyProvider};

/// A policy period as a signed time, saturating (never wrapping negative: a negative period
/// would make every check "due"). Compile also bounds these fields.
fn seconds(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// What a fetch answer did to the key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// New keys installed.
    Updated,
    /// Same document as before.
    Unchanged,
    /// Non-200, not a JWKS, no usable key, or over a [`JwksLimits`] cap (`too_large`,
    /// `too_many_keys`): the previous keys stay.
    KeptLastGood(&'static str),
}

#[derive(Debug, Clone, Default)]
pub struct IssuerKeys {
    pub jwks: Option<Jwks>,
    /// The raw document the keys came from (to spot unchanged answers).
    pub document: Option<Vec<u8>>,
    pub last_success: Option<i64>,
    pub last_attempt: Option<i64>,
    /// Last fetch triggered by an unknown `kid` (the rate limit counts only those, so the
    /// first rotation after start is picked up at once).
    pub last_kid_refetch: Option<i64>,
    pub consecutive_failures: u32,
}

impl IssuerKeys {
    /// Whether a scheduled fetch is due at `now`.
    pub fn fetch_due(&self, now: i64, remote: &RemoteJwks) -> bool {
        let backoff_over = match self.last_attempt {
            None => true,
            Some(t) => now - t >= self.backoff_seconds(remote),
        };
        match self.last_success {
            None => backoff_over,
            Some(t) => now - t >= seconds(remote.refresh_seconds) && backoff_over,
        }
    }

    /// Whether an unknown `kid` may trigger a fetch now (rate limit).
    pub fn kid_refetch_allowed(&self, now: i64, remote: &RemoteJwks) -> bool {
        match self.last_kid_refetch {
            None => true,
            Some(t) => now - t >= seconds(remote.min_refetch_seconds),
        }
    }

    /// Records a fetch triggered by an unknown `kid`.
    pub fn note_kid_refetch(&mut self, now: i64) {
        self.last_kid_refetch = Some(now);
    }

    /// Exponential backoff after failures: 1, 2, 4 ... seconds, capped at the refresh period.
    /// The one backoff rule: the schedule ([`Self::fetch_due`]) and the shared fetch lease
    /// ([`apply_answer`]) both use it.
    pub fn backoff_seconds(&self, remote: &RemoteJwks) -> i64 {
        if self.consecutive_failures == 0 {
            return 0;
        }
        let exp = 1i64 << self.consecutive_failures.min(20).saturating_sub(1);
        exp.min(seconds(remote.refresh_seconds)).max(1)
    }

    pub fn note_attempt(&mut self, now: i64) {
        self.last_attempt = Some(now);
    }

    /// Applies a fetch answer (`status` None = no answer / timeout), without size caps.
    pub fn apply_fetch(&mut self, now: i64, status: Option<u32>, body: &[u8]) -> FetchOutcome {
        self.apply_fetch_limited(now, status, body, JwksLimits::NONE)
    }

    /// Applies a fetch answer, refusing one over `limits` (counted as a failure: backoff).
    pub fn apply_fetch_limited(
        &mut self,
        now: i64,
        status: Option<u32>,
        body: &[u8],
        limits: JwksLimits,
    ) -> FetchOutcome {
        self.last_attempt = Some(now);
        let outcome = match status {
            Some(200) => match limits.check(body) {
                Ok(()) => self.install(body, now),
                Err(why) => FetchOutcome::KeptLastGood(why),
            },
            Some(_) => FetchOutcome::KeptLastGood("http_status"),
            None => FetchOutcome::KeptLastGood("no_answer"),
        };
        match outcome {
            FetchOutcome::KeptLastGood(_) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1)
            }
            _ => self.consecutive_failures = 0,
        }
        outcome
    }

    /// Installs a JWKS document fetched elsewhere (another worker) or here.
    pub fn install(&mut self, body: &[u8], fetched_at: i64) -> FetchOutcome {
        if self.document.as_deref() == Some(body) {
            self.last_success = Some(self.last_success.map_or(fetched_at, |t| t.max(fetched_at)));
            return FetchOutcome::Unchanged;
        }
        match Jwks::parse(body) {
            Ok(jwks) if !jwks.keys.is_empty() => {
                self.jwks = Some(jwks);
                self.document = Some(body.to_vec());
                self.last_success = Some(fetched_at);
                FetchOutcome::Updated
            }
            Ok(_) => FetchOutcome::KeptLastGood("no_usable_key"),
            Err(_) => FetchOutcome::KeptLastGood("not_a_jwks"),
        }
    }
}

/// Every issuer's keys for one policy, in policy order.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    pub issuers: Vec<IssuerKeys>,
    /// Bumped whenever any key set changes (the token cache follows it).
    pub generation: u64,
}

impl KeyRing {
    pub fn new(policy: &Policy) -> KeyRing {
        let issuers = policy
            .issuers
            .iter()
            .map(|i| match &i.keys {
                KeySource::Inline(jwks) => IssuerKeys {
                    jwks: Some(jwks.clone()),
                    ..Default::default()
                },
                KeySource::Remote(_) => IssuerKeys::default(),
            })
            .collect();
        KeyRing {
            issuers,
            generation: 1,
        }
    }

    /// Installs a shared document for issuer `index`; returns true when keys changed.
    pub fn install_shared(&mut self, index: usize, body: &[u8], fetched_at: i64) -> bool {
        let Some(keys) = self.issuers.get_mut(index) else {
            return false;
        };
        let changed = keys.install(body, fetched_at) == FetchOutcome::Updated;
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// Applies a fetch this worker made; returns the outcome.
    pub fn apply_fetch(
        &mut self,
        index: usize,
        now: i64,
        status: Option<u32>,
        body: &[u8],
    ) -> Option<FetchOutcome> {
        self.apply_fetch_limited(index, now, status, body, JwksLimits::NONE)
    }

    /// [`Self::apply_fetch`] with the issuer's size caps.
    pub fn apply_fetch_limited(
        &mut self,
        index: usize,
        now: i64,
        status: Option<u32>,
        body: &[u8],
        limits: JwksLimits,
    ) -> Option<FetchOutcome> {
        let keys = self.issuers.get_mut(index)?;
        let outcome = keys.apply_fetch_limited(now, status, body, limits);
        if outcome == FetchOutcome::Updated {
            self.generation += 1;
        }
        Some(outcome)
    }
}

impl KeyProvider for KeyRing {
    fn lookup(&self, issuer_index: usize, kid: Option<&str>, alg: Alg) -> KeyLookup<'_> {
        match self.issuers.get(issuer_index).and_then(|i| i.jwks.as_ref()) {
            None => KeyLookup::NotLoaded,
            Some(jwks) => match jwks.select(kid, alg) {
                Some(k) => KeyLookup::Found(k),
                None => KeyLookup::NoMatch,
            },
        }
    }
}

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

// ---------- sharing between workers (proxy-wasm shared data, through `SharedStore`) ----------

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap
)]
mod tests {
    use super::*;
    use crate::shared_store::MemoryStore;

    fn remote() -> RemoteJwks {
        RemoteJwks {
            uri: "http://127.0.0.1/jwks".into(),
            issuer: "https://issuer.test".into(),
            cluster: "c".into(),
            api: "a".into(),
            authority: "127.0.0.1".into(),
            path: "/jwks".into(),
            refresh_seconds: 300,
            min_refetch_seconds: 30,
            timeout_ms: 1000,
            limits: JwksLimits::DEFAULT,
        }
    }

    fn ec_key(kid: &str) -> String {
        format!(
            r#"{{"kty":"EC","crv":"P-256","kid":"{kid}","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}}"#
        )
    }

    #[test]
    fn oversize_answers_are_refused_and_the_last_good_keys_stay() {
        let mut r = remote();
        r.limits = JwksLimits {
            max_bytes: 4096,
            max_keys: 3,
        };
        let store = MemoryStore::new();
        let mut ring = KeyRing {
            issuers: vec![IssuerKeys::default()],
            generation: 1,
        };
        let good = format!(r#"{{"keys":[{}]}}"#, ec_key("old"));
        assert_eq!(
            apply_answer(&store, &mut ring, 0, &r, 100, Some(200), good.as_bytes()),
            Some(FetchOutcome::Updated)
        );
        let generation = ring.generation;
        // Valid keys, but padded one byte over the cap.
        let mut big = format!(r#"{{"keys":[{}],"pad":""}}"#, ec_key("new"));
        let pad = 4097 - big.len();
        big.insert_str(big.len() - 2, &"x".repeat(pad));
        assert_eq!(big.len(), 4097);
        assert_eq!(
            apply_answer(&store, &mut ring, 0, &r, 200, Some(200), big.as_bytes()),
            Some(FetchOutcome::KeptLastGood("too_large"))
        );
        // One byte less is at the cap: accepted.
        let mut exact = format!(r#"{{"keys":[{}],"pad":""}}"#, ec_key("new"));
        exact.insert_str(exact.len() - 2, &"x".repeat(pad - 1));
        assert_eq!(exact.len(), 4096);
        let mut other = ring.clone();
        assert_eq!(
            other.apply_fetch_limited(0, 201, Some(200), exact.as_bytes(), r.limits),
            Some(FetchOutcome::Updated)
        );
        // Too many keys (each valid), under the byte cap.
        let many = format!(
            r#"{{"keys":[{}]}}"#,
            (0..4)
                .map(|i| ec_key(&format!("k{i}")))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(many.len() < 4096);
        assert_eq!(
            apply_answer(&store, &mut ring, 0, &r, 300, Some(200), many.as_bytes()),
            Some(FetchOutcome::KeptLastGood("too_many_keys"))
        );
        // The old keys stay, nothing new was shared, and the failures back off.
        assert_eq!(ring.generation, generation);
        let jwks = ring.issuers[0].jwks.as_ref().unwrap();
        assert_eq!(jwks.keys.len(), 1);
        assert_eq!(jwks.keys[0].kid.as_deref(), Some("old"));
        let (shared, _) = store.get(&doc_key(&r));
        assert_eq!(decode_shared(&shared.unwrap()).unwrap().1, good.as_bytes());
        assert_eq!(ring.issuers[0].consecutive_failures, 2);
        assert!(!take_lease(&store, &r, 300, 2), "held for the backoff");
    }

    #[test]
    fn default_limits_accept_a_large_real_world_jwks() {
        // Ten RSA-4096-sized entries with an x5c certificate each (~2.5 KB per key).
        let key = format!(
            r#"{{"kty":"RSA","kid":"k","n":"{}","e":"AQAB","x5c":["{}"]}}"#,
            "A".repeat(683),
            "M".repeat(1800)
        );
        let doc = format!(r#"{{"keys":[{}]}}"#, vec![key; 10].join(","));
        assert!(doc.len() > 20_000);
        assert_eq!(JwksLimits::DEFAULT.check(doc.as_bytes()), Ok(()));
        assert_eq!(
            JwksLimits::DEFAULT.check(&vec![b' '; 64 * 1024 + 1]),
            Err("too_large")
        );
    }

    #[test]
    fn schedule_backoff_and_kid_rate_limit() {
        let r = remote();
        let mut k = IssuerKeys::default();
        assert!(k.fetch_due(0, &r), "first fetch at start");
        assert_eq!(
            k.apply_fetch(0, None, b""),
            FetchOutcome::KeptLastGood("no_answer")
        );
        assert!(!k.fetch_due(0, &r), "backoff after a failure");
        assert!(k.fetch_due(1, &r));
        assert_eq!(
            k.apply_fetch(1, Some(500), b""),
            FetchOutcome::KeptLastGood("http_status")
        );
        assert!(!k.fetch_due(2, &r));
        assert!(k.fetch_due(3, &r), "2 s backoff after two failures");
        assert!(
            k.kid_refetch_allowed(10, &r),
            "the first unknown kid may refetch"
        );
        k.note_kid_refetch(10);
        assert!(
            !k.kid_refetch_allowed(39, &r),
            "then at most once per min_refetch_seconds"
        );
        assert!(k.kid_refetch_allowed(40, &r));
    }

    #[test]
    fn shared_encoding_roundtrips() {
        let enc = encode_shared(42, b"{\"keys\":[]}");
        assert_eq!(decode_shared(&enc), Some((42, &b"{\"keys\":[]}"[..])));
        assert_eq!(decode_shared(b"garbage"), None);
    }

    #[test]
    fn lease_is_taken_once_and_held_for_the_backoff() {
        let r = remote();
        let store = MemoryStore::new();
        let policy_ring = || KeyRing {
            issuers: vec![IssuerKeys::default()],
            generation: 1,
        };
        let mut ring = policy_ring();
        assert_eq!(lease_hold_seconds(&r), 2);
        assert!(take_lease(&store, &r, 100, 2));
        assert!(!take_lease(&store, &r, 101, 2), "another worker holds it");
        // Two failures: the lease is held for the same 2 s backoff the schedule uses.
        apply_answer(&store, &mut ring, 0, &r, 101, None, b"");
        apply_answer(&store, &mut ring, 0, &r, 102, Some(500), b"");
        let backoff = ring.issuers[0].backoff_seconds(&r);
        assert_eq!(backoff, 2);
        assert!(!take_lease(&store, &r, 103, 2));
        assert!(take_lease(&store, &r, 104, 2));
        assert!(!ring.issuers[0].fetch_due(103, &r));
        assert!(ring.issuers[0].fetch_due(104, &r));
        // A good answer is shared and picked up by another worker's ring.
        let doc = br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        assert_eq!(
            apply_answer(&store, &mut ring, 0, &r, 105, Some(200), doc),
            Some(FetchOutcome::Updated)
        );
        assert!(take_lease(&store, &r, 105, 2), "released after success");
        let mut other = policy_ring();
        let seen = sync_from_shared(&store, &mut other, 0, &r, None);
        assert!(seen.is_some());
        assert!(other.issuers[0].jwks.is_some());
        assert_eq!(sync_from_shared(&store, &mut other, 0, &r, seen), None);
    }

    #[test]
    fn a_fetch_begins_once_per_lease_and_never_while_in_flight() {
        let r = remote();
        let store = MemoryStore::new();
        let mut ring = KeyRing {
            issuers: vec![IssuerKeys::default()],
            generation: 1,
        };
        assert!(
            !begin_fetch(&store, &mut ring, &[true], 0, &r, 100),
            "this worker's fetch is in flight"
        );
        assert!(
            !begin_fetch(&store, &mut ring, &[], 0, &r, 100),
            "unknown index"
        );
        assert_eq!(ring.issuers[0].last_attempt, None, "nothing recorded");
        assert!(begin_fetch(&store, &mut ring, &[false], 0, &r, 100));
        assert_eq!(ring.issuers[0].last_attempt, Some(100));
        // Another worker (its own ring, same store) is held off by the lease until it ends.
        let mut other = KeyRing {
            issuers: vec![IssuerKeys::default()],
            generation: 1,
        };
        assert!(!begin_fetch(&store, &mut other, &[false], 0, &r, 101));
        assert_eq!(other.issuers[0].last_attempt, None);
        assert!(begin_fetch(&store, &mut other, &[false], 0, &r, 102));
    }

    #[test]
    fn due_fetches_follow_the_schedule_of_remote_issuers_only() {
        let policy = Policy::from_json(
            br#"{"api": {"name": "a", "audience": "aud"}, "issuers": [
              {"issuer": "https://inline", "jwks": {"keys": [{"kty":"EC","crv":"P-256","kid":"k","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}},
              {"issuer": "https://remote", "jwks_uri": "http://127.0.0.1/jwks", "jwks_cluster": "c"}]}"#,
        )
        .unwrap();
        let mut ring = KeyRing::new(&policy);
        assert_eq!(due_fetches(&policy, &ring, 0), vec![1], "remote, at start");
        let remote = policy.remote_jwks(1).unwrap().clone();
        ring.issuers[1].apply_fetch(0, None, b"");
        assert!(due_fetches(&policy, &ring, 0).is_empty(), "backoff");
        assert_eq!(due_fetches(&policy, &ring, 1), vec![1]);
        ring.issuers[1].last_success = Some(1);
        ring.issuers[1].consecutive_failures = 0;
        let refresh = i64::try_from(remote.refresh_seconds).unwrap();
        assert!(due_fetches(&policy, &ring, refresh).is_empty());
        assert_eq!(due_fetches(&policy, &ring, 1 + refresh), vec![1]);
    }

    #[test]
    fn huge_timeouts_and_refresh_periods_do_not_wrap() {
        let mut r = remote();
        r.timeout_ms = u64::MAX;
        r.refresh_seconds = u64::MAX;
        assert!(lease_hold_seconds(&r) > 0);
        let mut k = IssuerKeys::default();
        assert!(k.fetch_due(0, &r));
        k.apply_fetch(0, Some(500), b"");
        assert!(!k.fetch_due(0, &r), "backoff, not a negative period");
        k.last_success = Some(0);
        k.consecutive_failures = 0;
        assert!(
            !k.fetch_due(1_000_000, &r),
            "refresh far away, not every tick"
        );
        k.note_kid_refetch(0);
        r.min_refetch_seconds = u64::MAX;
        assert!(!k.kid_refetch_allowed(1_000_000, &r));
    }
}
