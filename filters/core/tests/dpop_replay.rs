//! The replay cache rule (RFC 9449 §11.1, `docs/dpop.md`): entries live for the window in
//! time buckets, expired buckets are overwritten (shared data cannot delete keys), memory
//! stays bounded, a full bucket refuses instead of accepting, a cache sized for a peak rate
//! records every proof at that rate, concurrent writers (Envoy worker threads) cannot both
//! accept the same `jti`, and one proof key cannot take more than its budget.
#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::sync::{Arc, Barrier};

use fapi_guard_core::dpop::policy::{DpopPolicy, ReplayConfig};
use fapi_guard_core::dpop::replay::{
    check_and_record, ensure_shared_key, key_id, slot_key, JtiDigest, KeyBudget, MemoryStore,
    ReplayError, SharedStore, StoreError,
};

const NS: &str = "api";

fn digest(i: usize) -> JtiDigest {
    JtiDigest::new(b"", "jkt", &format!("jti-{i}"))
}

/// 10 s buckets, a ring of 8 (a 60 s + 10 s window), `slots` × `entries` per bucket.
fn small(slots: u32, entries: u32) -> ReplayConfig {
    ReplayConfig {
        bucket_seconds: 10,
        buckets: 8,
        slots,
        entries_per_slot: entries,
        max_probes: 8,
        per_key_per_bucket: 0,
        iat_past: 60,
    }
}

#[test]
fn seen_within_its_bucket_is_a_replay_and_the_bucket_is_reused_after_expiry() {
    let store = MemoryStore::new();
    let cfg = small(1, 4);
    let d = digest(1);
    // expires_at 160 is in bucket 16 (160..=169), wholly expired from 170 on.
    let steps = [
        ("first use", 160, 100, Ok(())),
        ("replay at once", 160, 100, Err(ReplayError::Replay)),
        (
            "replay at the entry's last second",
            160,
            160,
            Err(ReplayError::Replay),
        ),
        (
            "replay while the bucket lives",
            160,
            169,
            Err(ReplayError::Replay),
        ),
        // Bucket 24 has bucket 16's ring position (24 mod 8 = 16 mod 8): its first write
        // overwrites the expired bucket instead of growing the value.
        (
            "same digest in the next bucket at that position",
            240,
            170,
            Ok(()),
        ),
        ("and that is recorded", 240, 171, Err(ReplayError::Replay)),
    ];
    for (name, expires, now, want) in steps {
        assert_eq!(
            check_and_record(&store, cfg, NS, d, expires, now),
            want,
            "{name}"
        );
    }
    assert_eq!(store.len(), 1);
    assert_eq!(store.value_bytes(), 16, "bucket header + one tag");
}

#[test]
fn a_live_bucket_is_never_overwritten_whatever_the_clock_says() {
    let store = MemoryStore::new();
    let cfg = small(1, 4);
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(1), 165, 100),
        Ok(())
    );
    // Bucket 24 wants position 0 while bucket 16 is still live (a clock 70 s ahead): refused,
    // and bucket 16's entry survives.
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(2), 245, 169),
        Err(ReplayError::Unavailable)
    );
    // A newer bucket holds the position and an old proof arrives (clock stepped back).
    let newer = MemoryStore::new();
    assert_eq!(
        check_and_record(&newer, cfg, NS, digest(3), 245, 180),
        Ok(())
    );
    assert_eq!(
        check_and_record(&newer, cfg, NS, digest(4), 165, 160),
        Err(ReplayError::Unavailable)
    );
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(1), 165, 169),
        Err(ReplayError::Replay)
    );
}

#[test]
fn same_jti_under_another_key_is_a_different_entry() {
    let store = MemoryStore::new();
    let cfg = small(1, 4);
    let a = JtiDigest::new(b"", "jkt-a", "same");
    let b = JtiDigest::new(b"", "jkt-b", "same");
    assert_eq!(check_and_record(&store, cfg, NS, a, 200, 150), Ok(()));
    assert_eq!(check_and_record(&store, cfg, NS, b, 200, 150), Ok(()));
    assert_eq!(
        check_and_record(&store, cfg, NS, a, 200, 150),
        Err(ReplayError::Replay)
    );
}

#[test]
fn a_full_bucket_probes_then_refuses_and_replays_stay_refused() {
    let store = MemoryStore::new();
    // 2 slots x 3 entries: 6 entries per bucket, found through probing wherever they went.
    let cfg = small(2, 3);
    for i in 0..6 {
        assert_eq!(
            check_and_record(&store, cfg, NS, digest(i), 150 + i as i64 % 3, 100),
            Ok(()),
            "fill {i}"
        );
    }
    // Full of live entries: a new proof is refused (fail closed), old ones are still replays.
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(10), 155, 100),
        Err(ReplayError::Full)
    );
    for i in 0..6 {
        assert_eq!(
            check_and_record(&store, cfg, NS, digest(i), 150 + i as i64 % 3, 140),
            Err(ReplayError::Replay),
            "replay {i}"
        );
    }
    // Another bucket has its own room.
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(10), 165, 100),
        Ok(())
    );
    // Once bucket 15 has expired its position is reused by bucket 23.
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(11), 235, 160),
        Ok(())
    );
}

/// Proofs `0..n` arriving at `rate` per second from `start`, each with an `iat` up to 4 s in
/// the past; returns (accepted, first refusal).
fn run_at_rate(
    store: &dyn SharedStore,
    cfg: ReplayConfig,
    range: std::ops::Range<usize>,
    rate: usize,
    start: i64,
) -> (usize, Option<(usize, ReplayError)>) {
    let mut ok = 0;
    for i in range {
        let now = start + (i / rate) as i64;
        let iat = now - (i % 5) as i64;
        match check_and_record(store, cfg, NS, digest(i), iat + cfg.iat_past, now) {
            Ok(()) => ok += 1,
            Err(e) => return (ok, Some((i, e))),
        }
    }
    (ok, None)
}

#[test]
fn the_default_cache_holds_far_more_live_proofs_than_the_old_65536_and_refuses_the_oldest_replay() {
    // RFC 9449 §11.1: the old default (4096 slots x 16) refused every new proof beyond
    // 65,536 live ones. 200,000 proofs in 50 s (4,000/s), all live at the end: none refused.
    let cfg = DpopPolicy::default().replay;
    let store = MemoryStore::new();
    let start = 1_700_000_000;
    let n = 200_000;
    let (ok, refused) = run_at_rate(&store, cfg, 0..n, 4_000, start);
    assert_eq!((ok, refused), (n, None));
    let end = start + (n / 4_000) as i64;
    // The oldest live proof (iat = start, expires start + 60) and a few others are replays.
    for i in [0, 1, 4, 65_536, 65_537, 123_457, n - 1] {
        let iat = start + (i / 4_000) as i64 - (i % 5) as i64;
        assert_eq!(
            check_and_record(&store, cfg, NS, digest(i), iat + cfg.iat_past, end),
            Err(ReplayError::Replay),
            "replay of proof {i}"
        );
    }
}

#[test]
fn a_cache_sized_for_a_peak_records_every_proof_at_that_peak_for_ten_minutes_in_bounded_memory() {
    // A policy's peak sizes the cache (docs/dpop.md); run 10 simulated minutes at that peak:
    // nothing refused, the keys and bytes held stay within the layout's bound, and the
    // entries of the last window are all still replays.
    let (peak, minutes) = (1_000usize, 10);
    let cfg = ReplayConfig::sized(60, 10, peak as u64, 1 << 20);
    let store = MemoryStore::new();
    let start = 1_700_000_000;
    let n = peak * 60 * minutes;
    let (ok, refused) = run_at_rate(&store, cfg, 0..n, peak, start);
    assert_eq!((ok, refused), (n, None));
    assert!(store.len() as u64 <= u64::from(cfg.buckets) * u64::from(cfg.slots));
    assert!(store.value_bytes() as u64 <= cfg.max_value_bytes());
    // Live entries at the end: about peak x (60 s + one bucket); 8 bytes each plus headers.
    let live = peak * (60 + cfg.bucket_seconds as usize);
    assert!(
        store.value_bytes() <= live * 8 + store.len() * 8 + peak * 10 * 8,
        "{} bytes for ~{live} live proofs",
        store.value_bytes()
    );
    let end = start + (n / peak) as i64;
    let oldest_live = n - peak * 55;
    let iat = start + (oldest_live / peak) as i64 - (oldest_live % 5) as i64;
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(oldest_live), iat + 60, end),
        Err(ReplayError::Replay)
    );
}

#[test]
fn two_workers_at_the_peak_share_the_cache_without_refusals() {
    // Two threads stand in for two Envoy workers, each at half the peak, on one store.
    let peak = 4_000usize;
    let cfg = ReplayConfig::sized(60, 10, peak as u64, 1 << 20);
    let store = Arc::new(MemoryStore::new());
    let n = peak * 40;
    let handles: Vec<_> = (0..2)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                // Worker w takes every other proof.
                let mut ok = 0;
                for i in (w..n).step_by(2) {
                    let now = 1_700_000_000 + (i / peak) as i64;
                    let r = check_and_record(&*store, cfg, NS, digest(i), now + 60, now);
                    assert_eq!(r, Ok(()), "proof {i}");
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, n);
}

#[test]
fn sizing_follows_the_window_and_the_peak() {
    let d = ReplayConfig::sized(60, 10, 40_000, 65_536);
    assert_eq!((d.bucket_seconds, d.buckets), (10, 8));
    // 40,000/s x 10 s x 1.25 / 64 entries per slot.
    assert_eq!(d.slots, 7_813);
    assert_eq!(d.capacity(), 8 * 7_813 * 64);
    assert_eq!(d.max_value_bytes(), 8 * 7_813 * (8 + 64 * 8));
    assert_eq!(d.per_key_per_bucket, 65_536_u32.div_ceil(7));
    assert_eq!(DpopPolicy::default().replay, d);
    // The layout is part of the key names.
    assert_ne!(
        slot_key(NS, &d, 0, 0),
        slot_key(NS, &ReplayConfig::sized(60, 10, 20_000, 65_536), 0, 0)
    );
}

#[test]
fn keyed_digest_changes_the_slot_layout() {
    // With a secret key a client cannot predict which slot its jti lands in.
    let differ = (0..64)
        .filter(|i| {
            let a = JtiDigest::new(b"", "jkt", &format!("j{i}"));
            let b = JtiDigest::new(b"secret-key-from-policy", "jkt", &format!("j{i}"));
            a != b
        })
        .count();
    assert_eq!(differ, 64);
}

#[test]
fn one_key_over_its_budget_waits_others_do_not() {
    let cfg = ReplayConfig {
        per_key_per_bucket: 3,
        ..small(4, 64)
    };
    let budget = KeyBudget::new();
    let (flooder, other) = (key_id("jkt-flood"), key_id("jkt-other"));
    let now = 1_000;
    let expires = now + 60; // bucket 106, next bucket from 1070 = iat 1010
    for _ in 0..3 {
        assert_eq!(budget.check(&cfg, flooder, expires, now), Ok(()));
        budget.record(&cfg, flooder, expires);
    }
    assert_eq!(budget.check(&cfg, flooder, expires, now), Err(10));
    assert_eq!(budget.check(&cfg, flooder, expires, now + 7), Err(3));
    assert_eq!(budget.check(&cfg, other, expires, now), Ok(()));
    // Its next bucket has room again, and the expired bucket's counts are dropped.
    assert_eq!(budget.check(&cfg, flooder, expires + 10, now + 10), Ok(()));
    budget.record(&cfg, flooder, expires + 80);
    assert_eq!(budget.check(&cfg, flooder, expires + 80, now + 80), Ok(()));
    assert_eq!(budget.tracked_keys(), 1);
}

/// The occupancy gauge (docs/platform-guide.md, "Metrics"): a worker counts what it recorded
/// until the bucket expires, with or without the per-key budget, and two workers' counts add up
/// to the entries the shared cache holds.
#[test]
fn live_entries_count_recorded_proofs_until_their_bucket_expires() {
    let store = MemoryStore::new();
    let cfg = small(4, 64); // per-key budget off
    let (a, b) = (KeyBudget::new(), KeyBudget::new());
    let now = 1_000;
    assert_eq!(a.live_entries(&cfg, now), 0);
    for i in 0..5 {
        let expires = now + 60 + (i as i64) * 10; // buckets 106..110
        check_and_record(&store, cfg, NS, digest(i), expires, now).unwrap();
        (if i % 2 == 0 { &a } else { &b }).record(&cfg, key_id("jkt"), expires);
    }
    assert_eq!(a.live_entries(&cfg, now) + b.live_entries(&cfg, now), 5);
    assert_eq!(
        (a.live_entries(&cfg, now), b.live_entries(&cfg, now)),
        (3, 2)
    );
    // Bucket 106 (expires_at 1060..1069) is wholly expired at 1070: one entry of `a` leaves.
    assert_eq!(a.live_entries(&cfg, 1_069), 3);
    assert_eq!(a.live_entries(&cfg, 1_070), 2);
    // Everything has expired once the last bucket (110) has.
    assert_eq!(a.live_entries(&cfg, 1_110) + b.live_entries(&cfg, 1_110), 0);
    // A later proof reuses the ring position of an expired bucket: counted from 0.
    a.record(&cfg, key_id("jkt"), 1_140); // bucket 114, position 2 (was 106)
    assert_eq!(a.live_entries(&cfg, 1_110), 1);
}

/// A store whose first `n` CAS writes fail, as if another worker wrote in between.
struct Contended {
    inner: MemoryStore,
    fail: std::sync::atomic::AtomicUsize,
}

impl SharedStore for Contended {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            return Err(StoreError::CasMismatch);
        }
        self.inner.set(key, value, cas)
    }
}

#[test]
fn cas_conflicts_retry_then_fail_closed() {
    let cfg = small(4, 4);
    let few = Contended {
        inner: MemoryStore::new(),
        fail: 3.into(),
    };
    assert_eq!(check_and_record(&few, cfg, NS, digest(1), 200, 100), Ok(()));
    let endless = Contended {
        inner: MemoryStore::new(),
        fail: 1_000.into(),
    };
    assert_eq!(
        check_and_record(&endless, cfg, NS, digest(1), 200, 100),
        Err(ReplayError::Unavailable)
    );
}

#[test]
fn racing_workers_accept_a_jti_once() {
    // Threads stand in for Envoy workers sharing one store; every round all of them submit
    // the same jti at once. Slots are created first, as the filter does at configure time.
    let store = Arc::new(MemoryStore::new());
    let cfg = small(2, 64);
    let threads = 8;
    for round in 0..40 {
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let store = store.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    check_and_record(&*store, cfg, NS, digest(round), 10_000, 100)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let accepted = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(accepted, 1, "round {round}: {results:?}");
        assert!(results.iter().all(|r| matches!(
            r,
            Ok(()) | Err(ReplayError::Replay) | Err(ReplayError::Unavailable)
        )));
    }
    assert!(store.len() <= 2, "one bucket, two slots");
}

/// What another worker does, once, right after this worker's first read.
type OtherWorker<'a> = Box<dyn FnOnce(&MemoryStore) + 'a>;

/// A store that lets another worker act right after this worker's first read.
struct Interleaved<'a> {
    inner: &'a MemoryStore,
    other: std::cell::Cell<Option<OtherWorker<'a>>>,
}

impl SharedStore for Interleaved<'_> {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        let got = self.inner.get(key);
        if let Some(f) = self.other.take() {
            f(self.inner);
        }
        got
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        self.inner.set(key, value, cas)
    }
}

#[test]
fn workers_agree_on_one_random_replay_key() {
    let store = MemoryStore::new();
    let a = ensure_shared_key(&store, "api", &[1; 32]).unwrap();
    let b = ensure_shared_key(&store, "api", &[2; 32]).unwrap();
    assert_eq!(a, vec![1; 32]);
    assert_eq!(b, a, "the second worker uses the first worker's key");
    assert_eq!(
        ensure_shared_key(&store, "other-api", &[3; 32]).unwrap(),
        vec![3; 32]
    );
}

#[test]
fn racing_key_creation_still_converges() {
    // Worker B creates the key between worker A's read (missing) and A's write: A's
    // create-only write must not overwrite it.
    let store = MemoryStore::new();
    let racing = Interleaved {
        inner: &store,
        other: std::cell::Cell::new(Some(Box::new(|s: &MemoryStore| {
            ensure_shared_key(s, "api", &[2; 32]).unwrap();
        }))),
    };
    let a = ensure_shared_key(&racing, "api", &[1; 32]).unwrap();
    assert_eq!(
        a,
        vec![2; 32],
        "A's create-only write fails and A takes B's key"
    );
    assert_eq!(
        ensure_shared_key(&store, "api", &[9; 32]).unwrap(),
        vec![2; 32]
    );
}

#[test]
fn creating_a_missing_slot_never_overwrites_a_racing_worker() {
    // Worker B records a jti in a slot that A saw missing; A's record must not erase it.
    let cfg = small(1, 8);
    let store = MemoryStore::new();
    let racing = Interleaved {
        inner: &store,
        other: std::cell::Cell::new(Some(Box::new(move |s: &MemoryStore| {
            check_and_record(s, cfg, NS, digest(1), 100, 0).unwrap();
        }))),
    };
    check_and_record(&racing, cfg, NS, digest(2), 100, 0).unwrap();
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(1), 100, 0),
        Err(ReplayError::Replay)
    );
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(2), 100, 0),
        Err(ReplayError::Replay)
    );
}
