//! The issuer key ring and the JWKS refresh rules, as pure state (time injected).
//!
//! Rules (docs/checks.md §1.4): inline keys never change; remote keys are fetched at
//! start, refreshed every `refresh_seconds`, refetched when a token names an unknown `kid`
//! (at most once per `min_refetch_seconds`), retried with exponential backoff after a
//! failure, and the last good keys are kept through an outage or a garbage answer.
//! The glue shares fetched documents between worker threads (proxy-wasm shared data) and
//! feeds them in with [`KeyRing::install_shared`].
//!
//! Rooms: [`key_ring`] the key sets and their schedule, [`sharing`] the documents and fetch
//! lease shared between workers.

pub mod key_ring;
pub mod sharing;

pub use key_ring::{FetchOutcome, IssuerKeys, KeyRing};
pub use sharing::{
    apply_answer, begin_fetch, decode_shared, doc_key, due_fetches, encode_shared,
    lease_hold_seconds, lease_key, set_lease, sync_from_shared, take_lease,
};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap
)]
mod tests {
    use super::*;
    use crate::jwks_limits::JwksLimits;
    use crate::policy::{Policy, RemoteJwks};
    use crate::shared_store::{MemoryStore, SharedStore};

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
