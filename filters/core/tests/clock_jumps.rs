//! Clock jumps (issue 13): every time-based check is a pure function of `now`, so a jump of
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
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig: p256::ecdsa::Signature = sk.sign(input.as_bytes());
    (policy, format!("{input}.{}", b64(&sig.to_bytes())))
}

#[test]
fn token_times_across_clock_jumps_and_extremes() {
    let (policy, tok) = signed_token(NOW);
    let ring = KeyRing::new(&policy);
    let run = |now: i64| {
        token::validate(
            &policy,
            &ring,
            &SoftwareVerifier,
            Presented {
                scheme: Scheme::Bearer,
                token: &tok,
            },
            now,
        )
        .map(|_| ())
    };
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
    let verified = token::validate(
        &policy,
        &ring,
        &SoftwareVerifier,
        Presented {
            scheme: Scheme::Bearer,
            token: &tok,
        },
        NOW,
    )
    .unwrap();
    let mut cache = TokenCache::new(16);
    let digest = token::token_sha256(&tok);
    cache.insert(digest.clone(), CachedToken::new(verified), NOW, 30);
    assert!(cache.get(&digest, NOW, 30).is_some());
    assert!(cache.get(&digest, NOW + 3600, 30).is_none());
    assert!(cache.get(&digest, i64::MAX, 30).is_none());
    // Inserting at extreme clocks never panics (expiry arithmetic saturates).
    for now in EXTREMES {
        let (_, other) = signed_token(NOW);
        let v = token::validate(
            &policy,
            &ring,
            &SoftwareVerifier,
            Presented {
                scheme: Scheme::Bearer,
                token: &other,
            },
            NOW,
        )
        .unwrap();
        cache.insert(format!("x{now}"), CachedToken::new(v), now, i64::MAX);
    }
}
