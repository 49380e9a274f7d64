//! The `jti` replay cache rule (RFC 9449 §11.1; `docs/dpop.md`, "Replay cache"), as pure
//! logic over a key-value store with compare-and-swap, so that the filter can back it with
//! proxy-wasm shared data (one store for all Envoy worker threads of the VM).
//!
//! # Layout: time buckets in a ring
//! An entry is needed until `expires_at = iat + iat_window_past_seconds`; after that the
//! proof fails the `iat` check anyway. Entries are grouped by `expires_at` into *buckets* of
//! `bucket_seconds`; bucket `b` holds every entry with `b × bucket_seconds <= expires_at <
//! (b + 1) × bucket_seconds` and is wholly expired once `now >= (b + 1) × bucket_seconds`.
//! A replay carries the same `iat`, so it lands in the same bucket: one bucket is checked.
//!
//! Buckets live in a ring of `buckets` positions, each of `slots` shared-data keys
//! `fapi_guard.dpop.<api>.<layout>.<position>.<slot>`. A key's value is the bucket number it
//! holds (8 bytes) followed by at most `entries_per_slot` 8-byte entry tags. Shared data
//! cannot delete keys in Envoy, so expiry costs nothing instead: the first write of bucket
//! `b` to a position still holding an older, wholly expired bucket overwrites it. The ring has
//! `ceil((past + future) / bucket_seconds) + 1` positions, so a position is only ever reused
//! by a bucket whose predecessor has expired; that is checked on every write (a live older
//! bucket or a newer one refuses the proof: [`ReplayError::Unavailable`]), so a live entry is
//! never overwritten whatever the clock does. Keys are created on first use, so an idle
//! proxy holds none; memory is at most `buckets × slots` keys of `8 + 8 × entries_per_slot`
//! bytes (the budget, `docs/dpop.md`).
//!
//! # Slot and tag
//! [`JtiDigest`] is SHA-256 over the proof key's thumbprint and the `jti`, keyed with a
//! secret (the nonce secret when the policy has one, else a random key the first worker
//! creates in shared data, see [`ensure_shared_key`]), so a client cannot aim its `jti`s at
//! one slot. Its first 8 bytes pick the slot, the next 8 are the stored tag: two different
//! proofs share slot and tag with probability about 2^-64 per live entry of the slot (and
//! that would only refuse a proof, never accept a replay).
//!
//! # When a slot is full: probing, then refusal
//! A full slot sends the proof to the next slot (up to `max_probes`). Within a bucket a slot
//! only ever gains entries, so a lookup that walks the same sequence and stops at the first
//! slot that is not full sees every earlier insert of the same digest. When every probed
//! slot is full the proof is **refused** ([`ReplayError::Full`], 503), not accepted:
//! accepting it unrecorded would let it be replayed for the whole window, and evicting a live
//! entry would re-open an earlier proof. The policy sizes `slots` from the configured peak
//! rate with headroom, so that happens only beyond the documented budget.
//!
//! # Concurrency
//! Each insert is read, modify, write-with-CAS; a CAS conflict (another worker wrote the same
//! slot in between) retries. Two workers racing on the same `jti` therefore cannot both
//! succeed: the second one reads the first one's entry. A write to a *missing* key is sent
//! with the version [`CREATE_ONLY`]: the host ignores versions for missing keys (so it
//! creates the key) but refuses the write if another worker created the key in between
//! (its version is not `CREATE_ONLY`), so creation never overwrites another worker's entry.
//!
//! # Per-key budget (fairness)
//! [`KeyBudget`] limits the entries one proof key (`cnf.jkt`) may add per bucket on this
//! worker, so one client cannot fill the cache for everyone (`dpop_key_over_budget`, 429).

use std::cell::RefCell;
use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::policy::dpop::ReplayConfig;
use crate::shared_store::version_for_write;
pub use crate::shared_store::{MemoryStore, SharedStore, StoreError, CREATE_ONLY};

/// Why a `jti` was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Seen within the window: a replay.
    Replay,
    /// Every probed slot of the bucket holds `entries_per_slot` live entries: refuse.
    Full,
    /// CAS kept failing, the store failed, or the ring position holds a live other bucket:
    /// cannot record, so refuse (fail closed).
    Unavailable,
}

/// Bytes of one stored entry (the tag).
pub const ENTRY_LEN: usize = 8;
/// Bytes of a slot value's header (the bucket number).
pub const HEADER_LEN: usize = 8;
const DIGEST_LEN: usize = 16;
/// CAS retries per slot before giving up; each conflict means another worker wrote it.
const MAX_ATTEMPTS: usize = 16;

/// Identifies one proof in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JtiDigest([u8; DIGEST_LEN]);

impl JtiDigest {
    /// Digest of (proof key thumbprint, `jti`), keyed with `key` (may be empty).
    pub fn new(key: &[u8], jkt: &str, jti: &str) -> JtiDigest {
        let mut h = Sha256::new();
        h.update(b"fapi-guard/dpop-jti/v1\0");
        h.update((key.len() as u64).to_be_bytes());
        h.update(key);
        h.update((jkt.len() as u64).to_be_bytes());
        h.update(jkt.as_bytes());
        h.update(jti.as_bytes());
        let full = h.finalize();
        let mut d = [0u8; DIGEST_LEN];
        for (to, from) in d.iter_mut().zip(full.iter()) {
            *to = *from;
        }
        JtiDigest(d)
    }

    /// The digest's bytes (the shared store's key, `replay_store`).
    pub fn bytes(&self) -> [u8; DIGEST_LEN] {
        self.0
    }

    fn slot(&self, slots: u32) -> u32 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        (u64::from_be_bytes(b) % u64::from(slots.max(1))) as u32
    }

    fn tag(&self) -> [u8; ENTRY_LEN] {
        let mut t = [0u8; ENTRY_LEN];
        t.copy_from_slice(&self.0[8..]);
        t
    }
}

impl ReplayConfig {
    /// The bucket an entry expiring at `expires_at` belongs to.
    pub fn bucket_of(&self, expires_at: i64) -> i64 {
        expires_at.div_euclid(self.bucket_seconds.max(1))
    }

    /// Whether every entry of bucket `b` has expired at `now`.
    fn expired(&self, b: i64, now: i64) -> bool {
        b.saturating_add(1)
            .saturating_mul(self.bucket_seconds.max(1))
            <= now
    }

    /// The most entries the cache can hold (`buckets × slots × entries_per_slot`).
    pub fn capacity(&self) -> u64 {
        u64::from(self.buckets) * u64::from(self.slots) * u64::from(self.entries_per_slot)
    }

    /// The most bytes of values the cache can hold in shared data (Envoy adds its own
    /// per-key overhead: the key string and a hash-map node, `docs/dpop.md`).
    pub fn max_value_bytes(&self) -> u64 {
        u64::from(self.buckets)
            * u64::from(self.slots)
            * (HEADER_LEN as u64 + ENTRY_LEN as u64 * u64::from(self.entries_per_slot))
    }
}

/// The shared-data key of one slot at one ring position. The layout (bucket length, ring
/// and slot counts) is part of the name, so a policy that changes it never reads values
/// written under another layout as its own.
pub fn slot_key(namespace: &str, cfg: &ReplayConfig, position: u32, slot: u32) -> String {
    format!(
        "fapi_guard.dpop.{namespace}.{}s{}x{}.{position}.{slot}",
        cfg.bucket_seconds, cfg.buckets, cfg.slots
    )
}

/// The bucket number a slot value holds, and its tags. A value too short for the header
/// (never written by this code) holds nothing.
fn parse(value: &[u8]) -> Option<(i64, &[u8])> {
    let header: [u8; HEADER_LEN] = value.get(..HEADER_LEN)?.try_into().ok()?;
    let tags = value.get(HEADER_LEN..)?;
    // Only complete entries; a torn tail (never written by this code) is dropped.
    let whole = tags.len() - tags.len() % ENTRY_LEN;
    Some((i64::from_be_bytes(header), tags.get(..whole)?))
}

enum SlotOutcome {
    Recorded,
    Full,
}

/// Records `digest` in bucket `bucket`'s slot `slot`, or says why not.
fn record_in_slot(
    store: &dyn SharedStore,
    cfg: &ReplayConfig,
    key: &str,
    bucket: i64,
    tag: [u8; ENTRY_LEN],
    now: i64,
) -> Result<SlotOutcome, ReplayError> {
    let cap = cfg.entries_per_slot as usize;
    for _ in 0..MAX_ATTEMPTS {
        let (value, cas) = store.get(key);
        let held = value.as_deref().and_then(parse);
        let new_value = match held {
            Some((b, tags)) if b == bucket => {
                if tags.chunks_exact(ENTRY_LEN).any(|t| t == tag) {
                    return Err(ReplayError::Replay);
                }
                if tags.len() / ENTRY_LEN >= cap {
                    return Ok(SlotOutcome::Full);
                }
                let mut v = Vec::with_capacity(HEADER_LEN + tags.len() + ENTRY_LEN);
                v.extend_from_slice(&bucket.to_be_bytes());
                v.extend_from_slice(tags);
                v.extend_from_slice(&tag);
                v
            }
            // An older bucket at this ring position: overwrite it only if wholly expired.
            // A live older bucket or a newer one means the clock or the ring is off: refuse
            // rather than forget a live entry.
            Some((b, _)) if b > bucket || !cfg.expired(b, now) => {
                return Err(ReplayError::Unavailable)
            }
            _ => {
                let mut v = Vec::with_capacity(HEADER_LEN + ENTRY_LEN);
                v.extend_from_slice(&bucket.to_be_bytes());
                v.extend_from_slice(&tag);
                v
            }
        };
        match store.set(key, &new_value, version_for_write(cas)) {
            Ok(()) => return Ok(SlotOutcome::Recorded),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Failed) => return Err(ReplayError::Unavailable),
        }
    }
    Err(ReplayError::Unavailable)
}

/// Records `digest` until `expires_at`, or says why not. One read and one write of one slot
/// in the common case; more only when slots are full (probing) or workers collide (CAS).
pub fn check_and_record(
    store: &dyn SharedStore,
    cfg: ReplayConfig,
    namespace: &str,
    digest: JtiDigest,
    expires_at: i64,
    now: i64,
) -> Result<(), ReplayError> {
    let bucket = cfg.bucket_of(expires_at);
    let position = bucket.rem_euclid(i64::from(cfg.buckets.max(1))) as u32;
    let slots = cfg.slots.max(1);
    let first = digest.slot(slots);
    let tag = digest.tag();
    for probe in 0..cfg.max_probes.clamp(1, slots) {
        let slot = (first + probe) % slots;
        let key = slot_key(namespace, &cfg, position, slot);
        match record_in_slot(store, &cfg, &key, bucket, tag, now)? {
            SlotOutcome::Recorded => return Ok(()),
            SlotOutcome::Full => continue,
        }
    }
    Err(ReplayError::Full)
}

/// Length of the random replay key.
pub const SHARED_KEY_LEN: usize = 32;

/// The replay-digest key every worker of this proxy must use: the one stored under
/// `fapi_guard.dpop.<namespace>.key`, created from `fresh` (random bytes from the caller) by
/// whichever worker gets there first: the write is create-only ([`CREATE_ONLY`]), so exactly
/// one `fresh` wins and every other worker reads that one. None if the store fails.
pub fn ensure_shared_key(
    store: &dyn SharedStore,
    namespace: &str,
    fresh: &[u8; SHARED_KEY_LEN],
) -> Option<Vec<u8>> {
    let key = format!("fapi_guard.dpop.{namespace}.key");
    for _ in 0..MAX_ATTEMPTS {
        let cas = match store.get(&key) {
            (Some(v), _) if v.len() == SHARED_KEY_LEN => return Some(v),
            (_, cas) => cas,
        };
        match store.set(&key, fresh, version_for_write(cas)) {
            Ok(()) => return Some(fresh.to_vec()),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Failed) => return None,
        }
    }
    None
}

/// A proof key as the budget counts it (first 8 bytes of SHA-256 of the thumbprint).
pub fn key_id(jkt: &str) -> u64 {
    let h = Sha256::digest(jkt.as_bytes());
    let mut b = [0u8; 8];
    for (to, from) in b.iter_mut().zip(h.iter()) {
        *to = *from;
    }
    u64::from_be_bytes(b)
}

/// Per proof key, how many entries it added to each live bucket, on this worker thread
/// (the Wasm VM of one worker is single-threaded; no shared state, no extra host call).
///
/// Fairness rule (`docs/dpop.md`, "One client cannot fill the cache"): a key may add at
/// most `per_key_per_bucket` entries to one bucket. Legitimate clients spread their proofs
/// over buckets as time passes, so this is a budget of `per_key_per_bucket × (buckets − 1)`
/// live entries per key and worker, about `max_live_proofs_per_key`; a client over it is
/// refused (429) until its next bucket starts, and its refused proofs are not recorded.
/// Memory: one map entry per (key, live bucket); buckets are dropped as they expire.
#[derive(Debug, Default)]
pub struct KeyBudget {
    /// Ring position → (bucket number, count per key id).
    buckets: RefCell<Vec<(i64, HashMap<u64, u32>)>>,
    /// Ring position → (bucket number, entries this worker recorded in it), whether or not the
    /// per-key budget is on: this worker's share of the cache's occupancy ([`Self::live_entries`]).
    recorded: RefCell<Vec<(i64, u64)>>,
}

impl KeyBudget {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Err(retry_after_seconds)` when `key` already added its budget to the bucket of
    /// `expires_at`; `retry_after` is when its proofs with a current `iat` reach the next
    /// bucket.
    pub fn check(
        &self,
        cfg: &ReplayConfig,
        key: u64,
        expires_at: i64,
        now: i64,
    ) -> Result<(), u32> {
        if cfg.per_key_per_bucket == 0 {
            return Ok(());
        }
        let bucket = cfg.bucket_of(expires_at);
        let used = self
            .buckets
            .borrow()
            .iter()
            .find(|(b, _)| *b == bucket)
            .and_then(|(_, m)| m.get(&key).copied())
            .unwrap_or(0);
        if used < cfg.per_key_per_bucket {
            return Ok(());
        }
        // The next bucket starts at (bucket + 1) × w; a proof with `iat` = t reaches it when
        // t + past >= that.
        let next = bucket
            .saturating_add(1)
            .saturating_mul(cfg.bucket_seconds.max(1));
        let wait = next.saturating_sub(cfg.iat_past).saturating_sub(now);
        Err(wait.clamp(1, cfg.bucket_seconds.max(1)) as u32)
    }

    /// Counts one recorded entry of `key` in the bucket of `expires_at`.
    pub fn record(&self, cfg: &ReplayConfig, key: u64, expires_at: i64) {
        let bucket = cfg.bucket_of(expires_at);
        let ring = cfg.buckets.max(1) as usize;
        // `ring` ≤ u32::MAX fits an i64; `rem_euclid` is in 0..ring.
        let position = usize::try_from(bucket.rem_euclid(i64::try_from(ring).unwrap_or(i64::MAX)))
            .unwrap_or(0);
        self.tally(ring, position, bucket);
        if cfg.per_key_per_bucket == 0 {
            return;
        }
        let mut buckets = self.buckets.borrow_mut();
        if buckets.len() != ring {
            *buckets = vec![(i64::MIN, HashMap::new()); ring];
        }
        if let Some((b, counts)) = buckets.get_mut(position) {
            if *b != bucket {
                if *b > bucket {
                    // An older bucket than the one held (clock step back): not counted; the
                    // shared cache still records the proof.
                    return;
                }
                // The held bucket is older and has expired (same ring arithmetic as the
                // shared cache): its counts are dropped.
                *b = bucket;
                counts.clear();
            }
            let c = counts.entry(key).or_insert(0);
            *c = c.saturating_add(1);
        }
    }

    /// Counts one entry of bucket `bucket` (at ring `position`) in this worker's tally; a
    /// position's expired bucket is replaced, as in the shared cache.
    fn tally(&self, ring: usize, position: usize, bucket: i64) {
        let mut recorded = self.recorded.borrow_mut();
        if recorded.len() != ring {
            *recorded = vec![(i64::MIN, 0); ring];
        }
        if let Some((b, n)) = recorded.get_mut(position) {
            if *b < bucket {
                *b = bucket;
                *n = 0;
            }
            if *b == bucket {
                *n = n.saturating_add(1);
            }
        }
    }

    /// Entries this worker recorded that are still live at `now` (their bucket has not
    /// expired). The workers' sum is the cache's occupancy: every recorded proof is counted
    /// by exactly the worker that recorded it (`docs/platform-guide.md`, "Metrics").
    pub fn live_entries(&self, cfg: &ReplayConfig, now: i64) -> u64 {
        self.recorded
            .borrow()
            .iter()
            .filter(|(b, _)| *b != i64::MIN && !cfg.expired(*b, now))
            .map(|(_, n)| *n)
            .sum()
    }

    /// Keys counted in live buckets (tests, memory reports).
    pub fn tracked_keys(&self) -> usize {
        self.buckets.borrow().iter().map(|(_, m)| m.len()).sum()
    }
}
