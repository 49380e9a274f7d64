//! Clock jumps (§1.10): every time-based check is a pure function of `now`, so a jump of
//! the proxy's clock is a jump of `now`. A replayed proof stays refused whichever way the clock
//! jumps (the replay cache and the `iat` window together, RFC 9449 §11.1), nonces from another
//! window are refused (RFC 9449 §8), and extreme clocks never panic (overflow) nor pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/dpop.rs"]
mod support;

use fapi_guard_core::cache::{CachedToken, TokenCache};
use fapi_guard_core::denial::{Reason, Scheme};
use fapi_guard_core::dpop::replay::MemoryStore;
use fapi_guard_core::dpop::{evaluate, nonce, KeyBudget};
use fapi_guard_core::jose::SoftwareVerifier;
use fapi_guard_core::jwks_store::KeyRing;
use fapi_guard_core::policy::Policy;
use fapi_guard_core::token::{self, Presented};
use p256::ecdsa::signature::Signer;
use serde_json::json;
use support::*;

const EXTREMES: [i64; 4] = [i64::MIN, -1, 0, i64::MAX];

#[test]
fn replayed_proof_stays_refused_across_clock_jumps() {
    let key = Key::es(31);
    let (policy, dpop) = policy(json!({}));
    let store = MemoryStore::new();
    let tok = token(Some(&key.jkt()));
    let proof = key.sign(&key.header(), &claims("jump"));
    let run = |now: i64| {
        let hdrs = [proof.as_str()];
        evaluate(
            &policy,
            &dpop,
            &request(&hdrs),
            Some(&tok),
            &SoftwareVerifier,
            &store,
            &KeyBudget::new(),
            now,
        )
        .map(|_| ())
        .map_err(|d| d.reason)
    };
    assert_eq!(run(NOW), Ok(()));
    let steps = [
        ("same second", NOW, Reason::DpopReplay),
        ("forward 2 s", NOW + 2, Reason::DpopReplay),
        ("back 1 h", NOW - 3600, Reason::DpopIatOutOfWindow),
        (
            "forward 1 h (entry expired)",
            NOW + 3600,
            Reason::DpopIatOutOfWindow,
        ),
        ("back to where it was", NOW + 1, Reason::DpopReplay),
    ];
    for (name, now, want) in steps {
        assert_eq!(run(now), Err(want), "{name}");
    }
    for now in EXTREMES {
        assert!(run(now).is_err(), "now={now}");
    }
}

#[test]
fn nonce_from_another_window_is_refused() {
    let secret = b64(&[5u8; 32]);
    let (_, dpop) = policy(json!({"nonce": {"secret": secret, "window_seconds": 300}}));
    let cfg = dpop.nonce.as_ref().unwrap();
    let n = nonce::issue(cfg, NOW);
    assert!(nonce::verify(cfg, &n, NOW));
    assert!(
        nonce::verify(cfg, &n, NOW + 300),
        "valid for the next window too"
    );
    for now in [NOW - 600, NOW - 300 * 3, NOW + 3600] {
        assert!(!nonce::verify(cfg, &n, now), "now={now}");
    }
    for now in EXTREMES {
        assert!(!nonce::verify(cfg, &n, now), "now={now}");
        let _ = nonce::issue(cfg, now);
    }
}

fn signed_token(now: i64) -> (Policy, String) {
    signed_token_with(now, json!({}))
}

/// A token issued at `now - 10`, valid for 300 s, with `extra` claims merged in.
fn signed_token_with(now: i64, extra: serde_json::Value) -> (Policy, String) {
    let sk = p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).unwrap();
    let point = sk.verifying_key().to_sec1_point(false);
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                     "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())});
    let p = json!({"api": {"name": "t", "audience": "api"},
                   "issuers": [{"issuer": "https://issuer.test", "jwks": {"keys": [jwk]}}],
                   "token": {"schemes": ["Bearer"]}});
    let policy = Policy::from_json(p.to_string().as_bytes()).unwrap();
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"});
    let claims = json!({"iss": "https://issuer.test", "sub": "u", "aud": "api", "client_id": "c",
                        "jti": "j", "iat": now - 10, "exp": now + 300, "scope": "patient/*.rs"});
    let mut claims = claims;
    if let (Some(c), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig: p256::ecdsa::Signature = sk.sign(input.as_bytes());
    (policy, format!("{input}.{}", b64(&sig.to_bytes())))
}

/// The full token check of `tok` presented as Bearer at `now` (software verifier).
fn validate_bearer(
    policy: &Policy,
    ring: &KeyRing,
    tok: &str,
    now: i64,
) -> Result<fapi_guard_core::claims::VerifiedToken, Reason> {
    token::validate(
        policy,
        ring,
        &SoftwareVerifier,
        Presented {
            scheme: Scheme::Bearer,
            token: tok,
        },
        now,
    )
}

#[test]
fn token_times_across_clock_jumps_and_extremes() {
    let (policy, tok) = signed_token(NOW);
    let ring = KeyRing::new(&policy);
    let run = |now: i64| validate_bearer(&policy, &ring, &tok, now).map(|_| ());
    assert_eq!(run(NOW), Ok(()));
    assert_eq!(run(NOW + 3600), Err(Reason::Expired));
    assert!(
        run(NOW - 3600).is_err(),
        "iat in the future after a jump back"
    );
    for now in EXTREMES {
        assert!(run(now).is_err(), "now={now}");
    }
}

#[test]
fn cached_token_is_not_served_after_a_jump_past_exp() {
    let (policy, tok) = signed_token(NOW);
    let ring = KeyRing::new(&policy);
    let verified = validate_bearer(&policy, &ring, &tok, NOW).unwrap();
    let mut cache = TokenCache::new(16);
    let digest = token::token_sha256(&tok);
    cache.insert(digest.clone(), CachedToken::new(verified), NOW, 30);
    assert!(cache.get(&digest, NOW, 30).is_some());
    assert!(cache.get(&digest, NOW + 3600, 30).is_none());
    assert!(cache.get(&digest, i64::MAX, 30).is_none());
    // Inserting at extreme clocks never panics (expiry arithmetic saturates).
    for now in EXTREMES {
        let (_, other) = signed_token(NOW);
        let v = validate_bearer(&policy, &ring, &other, NOW).unwrap();
        cache.insert(format!("x{now}"), CachedToken::new(v), now, i64::MAX);
    }
}

/// §1.7, §1.10: a cached token is served only while the full check would accept it
/// on the proxy clock as it reads now. After a jump back, `iat`/`nbf` beyond `now + skew`
/// must not be served from the cache (the full check names the reason); a jump forward past
/// `exp + skew` expires the entry; a small jump inside the validity still hits.
#[test]
fn cached_token_follows_the_clock_both_ways() {
    const SKEW: i64 = 10;
    for (name, extra, back_reason) in [
        ("iat only", json!({}), Reason::IssuedInFuture),
        ("nbf after iat", json!({"nbf": NOW}), Reason::NotYetValid),
    ] {
        let (policy, tok) = signed_token_with(NOW, extra);
        let ring = KeyRing::new(&policy);
        let full = |now: i64| validate_bearer(&policy, &ring, &tok, now);
        let mut cache = TokenCache::new(16);
        cache.insert(tok.clone(), CachedToken::new(full(NOW).unwrap()), NOW, SKEW);
        // The cache agrees with the full check at every clock reading around the token's
        // validity: NOW - 10 (iat), NOW (nbf), NOW + 300 (exp), each +/- the skew.
        for now in [
            NOW - 3600,
            NOW - 10 - SKEW - 1,
            NOW - 10 - SKEW,
            NOW - SKEW - 1,
            NOW - SKEW,
            NOW - 5,
            NOW,
            NOW + 300 + SKEW - 1,
            NOW + 300 + SKEW,
            NOW + 3600,
            i64::MIN,
            i64::MAX,
        ] {
            let hit = cache.get(&tok, now, SKEW).is_some();
            assert_eq!(hit, full(now).is_ok(), "{name}: now={now}");
        }
        assert!(
            cache.get(&tok, NOW - 3600, SKEW).is_none(),
            "{name}: jump back"
        );
        assert_eq!(full(NOW - 3600).map(|_| ()), Err(back_reason), "{name}");
        assert!(
            cache.get(&tok, NOW + 3600, SKEW).is_none(),
            "{name}: jump forward"
        );
        // Back to a clock inside the validity: the entry serves again (nothing was lost).
        assert!(
            cache.get(&tok, NOW + 1, SKEW).is_some(),
            "{name}: back inside"
        );
    }
}

/// At capacity, entries the clock no longer allows (either way) are dropped first.
#[test]
fn full_cache_drops_entries_outside_their_validity_first() {
    let (policy, tok) = signed_token_with(NOW, json!({"nbf": NOW}));
    let ring = KeyRing::new(&policy);
    let verified = validate_bearer(&policy, &ring, &tok, NOW).unwrap();
    let mut cache = TokenCache::new(2);
    cache.insert("a".into(), CachedToken::new(verified.clone()), NOW, 10);
    cache.insert("b".into(), CachedToken::new(verified.clone()), NOW, 10);
    // The clock went back an hour: both are not yet valid and make room.
    cache.insert("c".into(), CachedToken::new(verified), NOW - 3600, 10);
    assert_eq!(cache.len(), 1);
    assert!(cache.get("c", NOW, 10).is_some());
}
