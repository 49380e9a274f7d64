//! The `jti` replay cache rule (RFC 9449 §11.1; checklist §2.10), as pure logic over a
//! key-value store with compare-and-swap, so that the filter can back it with proxy-wasm
//! shared data (one store for all Envoy worker threads of the VM).
//!
//! # Layout
//! A fixed number of *slots* (policy `replay_cache.slots`), each one shared-data key
//! `fapi_guard.dpop.<api>.<slot>`. A slot's value is a short list of entries
//! `(digest: 16 bytes, expires_at: i64 big-endian)`, at most `entries_per_slot` of them.
//! The digest is SHA-256 over the proof key's thumbprint and the `jti`, keyed with a secret
//! (the nonce secret when the policy has one, else a random key the first worker creates in
//! shared data, see [`ensure_shared_key`]), so a client cannot aim its `jti`s at one slot;
//! the slot is the digest modulo the number of slots.
//! Memory is bounded by `slots × entries_per_slot × 24` bytes plus Envoy's per-key overhead.
//!
//! # Eviction rule
//! An entry lives until `expires_at = iat + iat_window_past_seconds`: after that the proof's
//! `iat` is outside the acceptance window and the proof is refused by the `iat` check anyway,
//! so the entry is no longer needed. Expired entries are dropped whenever their slot is
//! written. Nothing else is ever evicted.
//!
//! # When a slot is full
//! If a slot already holds `entries_per_slot` live entries, the new proof is **refused**
//! (`dpop_replay_cache_full`, 503), not accepted: accepting it without recording its `jti`
//! would let that proof be replayed freely for the whole window, and evicting a live entry
//! would re-open an earlier proof for replay, and an attacker able to fill a slot could use
//! either to replay a captured proof. The refusal is short-lived (entries expire within the
//! window), visible in stats, and the client retries with a new proof (new `jti`, likely
//! another slot). Size the cache for the peak rate: `slots × entries_per_slot` several times
//! larger than (requests per second × (past + future window)).
//!
//! # Concurrency
//! Each insert is read, modify, write-with-CAS; a CAS conflict (another worker wrote the same
//! slot in between) retries. Two workers racing on the same `jti` therefore cannot both
//! succeed: the second one reads the first one's entry. A write to a *missing* key is sent
//! with the version [`CREATE_ONLY`]: the host ignores versions for missing keys (so it
//! creates the key) but refuses the write if another worker created the key in between
//! (its version is not `CREATE_ONLY`), so creation never overwrites another worker's entry.

use sha2::{Digest, Sha256};

use super::policy::ReplayConfig;
use crate::shared_store::version_for_write;
pub use crate::shared_store::{MemoryStore, SharedStore, StoreError, CREATE_ONLY};

/// Why a `jti` was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Seen within the window: a replay.
    Replay,
    /// The slot holds `entries_per_slot` live entries: refuse (see module doc).
    Full,
    /// CAS kept failing, or the store failed: cannot record, so refuse (fail closed).
    Unavailable,
}

const ENTRY_LEN: usize = 24;
const DIGEST_LEN: usize = 16;
/// CAS retries before giving up; each conflict means another worker wrote this very slot.
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
        d.copy_from_slice(&full[..DIGEST_LEN]);
        JtiDigest(d)
    }

    fn slot(&self, slots: u32) -> u32 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        (u64::from_be_bytes(b) % u64::from(slots.max(1))) as u32
    }
}

/// The shared-data key of one slot.
pub fn slot_key(namespace: &str, slot: u32) -> String {
    format!("fapi_guard.dpop.{namespace}.{slot}")
}

fn parse(value: &[u8]) -> Vec<([u8; DIGEST_LEN], i64)> {
    // Only complete entries; a torn tail (never written by this code) is dropped.
    value
        .chunks_exact(ENTRY_LEN)
        .map(|c| {
            let mut d = [0u8; DIGEST_LEN];
            d.copy_from_slice(&c[..DIGEST_LEN]);
            let mut e = [0u8; 8];
            e.copy_from_slice(&c[DIGEST_LEN..]);
            (d, i64::from_be_bytes(e))
        })
        .collect()
}

fn encode(entries: &[([u8; DIGEST_LEN], i64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for (d, e) in entries {
        out.extend_from_slice(d);
        out.extend_from_slice(&e.to_be_bytes());
    }
    out
}

/// Records `digest` until `expires_at`, or says why not. One read and one write of one slot
/// in the common case.
pub fn check_and_record(
    store: &dyn SharedStore,
    cfg: ReplayConfig,
    namespace: &str,
    digest: JtiDigest,
    expires_at: i64,
    now: i64,
) -> Result<(), ReplayError> {
    let key = slot_key(namespace, digest.slot(cfg.slots));
    let cap = cfg.entries_per_slot as usize;
    for _ in 0..MAX_ATTEMPTS {
        let (value, cas) = store.get(&key);
        let mut entries = parse(value.as_deref().unwrap_or_default());
        // Eviction rule: an entry past its expiry is no longer needed.
        entries.retain(|(_, exp)| *exp >= now);
        if entries.iter().any(|(d, _)| *d == digest.0) {
            return Err(ReplayError::Replay);
        }
        if entries.len() >= cap {
            return Err(ReplayError::Full);
        }
        entries.push((digest.0, expires_at));
        match store.set(&key, &encode(&entries), version_for_write(cas)) {
            Ok(()) => return Ok(()),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Failed) => return Err(ReplayError::Unavailable),
        }
    }
    Err(ReplayError::Unavailable)
}

/// Creates slot `slot` empty if it does not exist yet (the filter calls this for every slot
/// at configuration time, so later writes are all CAS-protected). Returns whether it wrote.
pub fn ensure_slot(store: &dyn SharedStore, namespace: &str, slot: u32) -> bool {
    let key = slot_key(namespace, slot);
    match store.get(&key) {
        (Some(_), _) => false,
        (None, _) => store.set(&key, &[], Some(CREATE_ONLY)).is_ok(),
    }
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
