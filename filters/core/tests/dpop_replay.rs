//! The replay cache rule (checklist §2.10, RFC 9449 §11.1): entries live for the window,
//! memory stays bounded, a full slot refuses instead of accepting, and concurrent writers
//! (Envoy worker threads) cannot both accept the same `jti`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Barrier};

use fapi_guard_core::dpop::policy::ReplayConfig;
use fapi_guard_core::dpop::replay::{
    check_and_record, ensure_shared_key, ensure_slot, slot_key, JtiDigest, MemoryStore,
    ReplayError, SharedStore, StoreError,
};

const NS: &str = "api";

fn digest(i: usize) -> JtiDigest {
    JtiDigest::new(b"", "jkt", &format!("jti-{i}"))
}

#[test]
fn seen_within_window_is_a_replay_and_expires_after() {
    let store = MemoryStore::new();
    let cfg = ReplayConfig {
        slots: 8,
        entries_per_slot: 4,
    };
    let d = digest(1);
    let steps = [
        ("first use", 100, Ok(())),
        ("replay at once", 100, Err(ReplayError::Replay)),
        (
            "replay at the last second of the window",
            160,
            Err(ReplayError::Replay),
        ),
        (
            "after expiry the entry is gone (the iat check refuses such a proof anyway)",
            161,
            Ok(()),
        ),
    ];
    for (name, now, want) in steps {
        assert_eq!(
            check_and_record(&store, cfg, NS, d, 160, now),
            want,
            "{name}"
        );
    }
}

#[test]
fn same_jti_under_another_key_is_a_different_entry() {
    let store = MemoryStore::new();
    let cfg = ReplayConfig {
        slots: 1,
        entries_per_slot: 4,
    };
    let a = JtiDigest::new(b"", "jkt-a", "same");
    let b = JtiDigest::new(b"", "jkt-b", "same");
    assert_eq!(check_and_record(&store, cfg, NS, a, 200, 100), Ok(()));
    assert_eq!(check_and_record(&store, cfg, NS, b, 200, 100), Ok(()));
    assert_eq!(
        check_and_record(&store, cfg, NS, a, 200, 100),
        Err(ReplayError::Replay)
    );
}

#[test]
fn full_slot_refuses_new_proofs_until_entries_expire() {
    let store = MemoryStore::new();
    let cfg = ReplayConfig {
        slots: 1,
        entries_per_slot: 3,
    };
    for i in 0..3 {
        assert_eq!(
            check_and_record(&store, cfg, NS, digest(i), 150 + i as i64, 100),
            Ok(()),
            "fill {i}"
        );
    }
    // Full of live entries: a new proof is refused (fail closed), old ones are still replays.
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(10), 200, 100),
        Err(ReplayError::Full)
    );
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(0), 200, 100),
        Err(ReplayError::Replay)
    );
    // Once the first entry expires its room is reused; the others still count.
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(10), 200, 151),
        Ok(())
    );
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(11), 200, 151),
        Err(ReplayError::Full)
    );
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(2), 200, 151),
        Err(ReplayError::Replay)
    );
}

#[test]
fn memory_is_bounded_by_slots_times_entries() {
    let store = MemoryStore::new();
    let cfg = ReplayConfig {
        slots: 16,
        entries_per_slot: 4,
    };
    let (mut ok, mut full) = (0, 0);
    for i in 0..10_000 {
        match check_and_record(&store, cfg, NS, digest(i), 1_000, 100) {
            Ok(()) => ok += 1,
            Err(ReplayError::Full) => full += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 64, "exactly slots × entries accepted");
    assert_eq!(full, 10_000 - 64);
    assert!(store.len() <= 16);
    assert!(store.value_bytes() <= 16 * 4 * 24);
    // After the window everything is reusable again.
    assert_eq!(
        check_and_record(&store, cfg, NS, digest(20_000), 2_000, 1_001),
        Ok(())
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
    let cfg = ReplayConfig {
        slots: 4,
        entries_per_slot: 4,
    };
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
    let cfg = ReplayConfig {
        slots: 2,
        entries_per_slot: 64,
    };
    for s in 0..cfg.slots {
        assert!(ensure_slot(&*store, NS, s));
        assert!(
            !ensure_slot(&*store, NS, s),
            "second ensure does not overwrite"
        );
    }
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
    assert!(store.get(&slot_key(NS, 0)).0.is_some());
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
    let cfg = ReplayConfig {
        slots: 1,
        entries_per_slot: 8,
    };
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
