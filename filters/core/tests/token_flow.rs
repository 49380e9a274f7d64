//! The token filter's sequence (`token_flow::check`, docs/checks.md §1.4, §1.10): cache,
//! scheme binding, validation, keys from other workers, rate-limited refetch and the retry,
//! with a recording key fetcher in place of shared data and `dispatch_http_call`.
#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::cell::{Cell, RefCell};

use fapi_guard_core::b64;
use fapi_guard_core::cache::TokenCache;
use fapi_guard_core::denial::Reason;
use fapi_guard_core::jose::verify::VerifyError;
use fapi_guard_core::jose::{Alg, PublicKey, SignatureVerifier, SoftwareVerifier};
use fapi_guard_core::jwks_store::KeyRing;
use fapi_guard_core::policy::Policy;
use fapi_guard_core::scheme::Scheme;
use fapi_guard_core::token::Presented;
use fapi_guard_core::token_flow::{check, Checked, KeyFetcher, TokenWorker};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::json;

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://issuer.test";

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32].into()).unwrap()
}

fn jwks(kid: &str) -> Vec<u8> {
    let point = signing_key().verifying_key().to_sec1_point(false);
    json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
        "x": b64::encode(point.x().unwrap()), "y": b64::encode(point.y().unwrap())}]})
    .to_string()
    .into_bytes()
}

fn policy() -> Policy {
    let p = json!({
        "api": {"name": "t", "audience": "api-1"},
        "issuers": [{"issuer": ISS, "jwks_uri": "https://issuer.test/jwks",
                     "jwks_cluster": "idp", "jwks_min_refetch_seconds": 30}],
        "token": {"schemes": ["DPoP", "Bearer"]},
    });
    Policy::from_json(p.to_string().as_bytes()).unwrap()
}

fn token(kid: &str, cnf_jkt: Option<&str>) -> String {
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": kid});
    let mut claims = json!({"iss": ISS, "sub": "user-1", "aud": "api-1", "client_id": "c1",
        "iat": NOW - 10, "exp": NOW + 300, "jti": "j1", "scope": "openid"});
    if let Some(j) = cnf_jkt {
        claims["cnf"] = json!({"jkt": j});
    }
    let input = format!(
        "{}.{}",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(claims.to_string().as_bytes())
    );
    let sig: Signature = signing_key().sign(input.as_bytes());
    format!("{input}.{}", b64::encode(&sig.to_bytes()))
}

/// Counts signature verifications.
#[derive(Default)]
struct Counting(Cell<usize>);

impl SignatureVerifier for Counting {
    fn verify(
        &self,
        alg: Alg,
        key: &PublicKey,
        input: &[u8],
        sig: &[u8],
    ) -> Result<(), VerifyError> {
        self.0.set(self.0.get() + 1);
        SoftwareVerifier.verify(alg, key, input, sig)
    }
}

/// Shared data and `dispatch_http_call`, recorded.
#[derive(Default)]
struct Fetcher {
    /// A document another worker stored, installed at the next sync.
    shared: RefCell<Option<Vec<u8>>>,
    fetches: Cell<usize>,
    /// Whether this worker gets the lease.
    lease: Cell<bool>,
}

impl KeyFetcher for Fetcher {
    fn sync_shared(&self, ring: &RefCell<KeyRing>) {
        if let Some(doc) = self.shared.borrow_mut().take() {
            ring.borrow_mut().install_shared(0, &doc, NOW);
        }
    }
    fn start_fetch(&self, _index: usize, _now: i64) -> bool {
        if !self.lease.get() {
            return false;
        }
        self.fetches.set(self.fetches.get() + 1);
        true
    }
}

struct Setup {
    policy: Policy,
    ring: RefCell<KeyRing>,
    cache: RefCell<TokenCache>,
    verifier: Counting,
    fetcher: Fetcher,
    hits: Cell<usize>,
}

impl Setup {
    fn new() -> Setup {
        let policy = policy();
        let ring = RefCell::new(KeyRing::new(&policy));
        let fetcher = Fetcher::default();
        fetcher.lease.set(true);
        Setup {
            policy,
            ring,
            cache: RefCell::new(TokenCache::new(10)),
            verifier: Counting::default(),
            fetcher,
            hits: Cell::new(0),
        }
    }

    /// Runs the sequence; an accepted token answers its `sub`.
    fn run(&self, scheme: Scheme, tok: &str, now: i64, allow_refetch: bool) -> Checked<String> {
        let w = TokenWorker {
            policy: &self.policy,
            ring: &self.ring,
            cache: &self.cache,
            verifier: &self.verifier,
        };
        check(
            &w,
            &self.fetcher,
            Presented { scheme, token: tok },
            now,
            allow_refetch,
            &mut || self.hits.set(self.hits.get() + 1),
            &mut |t, _| t.token.sub.clone(),
        )
    }
}

#[test]
fn keys_not_loaded_fetch_then_retry_then_cache() {
    let s = Setup::new();
    let tok = token("k1", None);
    assert_eq!(
        s.run(Scheme::Dpop, &tok, NOW, true),
        Checked::WaitForKeys { issuer: 0 }
    );
    // Without a refetch allowed (the retry after an empty answer): fail closed.
    assert_eq!(
        s.run(Scheme::Dpop, &tok, NOW, false),
        Checked::Denied(Reason::KeysUnavailable, Scheme::Dpop)
    );
    s.ring
        .borrow_mut()
        .apply_fetch(0, NOW, Some(200), &jwks("k1"));
    assert_eq!(
        s.run(Scheme::Dpop, &tok, NOW, false),
        Checked::Accepted("user-1".to_string())
    );
    assert_eq!(s.verifier.0.get(), 1);
    // §1.10: the same token again comes from the cache, without a verification.
    assert_eq!(
        s.run(Scheme::Dpop, &tok, NOW + 1, true),
        Checked::Accepted("user-1".to_string())
    );
    assert_eq!((s.verifier.0.get(), s.hits.get()), (1, 1));
    assert_eq!(s.fetcher.fetches.get(), 1);
}

#[test]
fn unknown_kid_refetch_is_rate_limited() {
    let s = Setup::new();
    s.ring
        .borrow_mut()
        .apply_fetch(0, NOW, Some(200), &jwks("k1"));
    let rotated = token("k2", None);
    assert_eq!(
        s.run(Scheme::Dpop, &rotated, NOW, true),
        Checked::WaitForKeys { issuer: 0 }
    );
    // The fetch brought no `k2`: refused, and no new fetch within min_refetch_seconds.
    assert_eq!(
        s.run(Scheme::Dpop, &rotated, NOW, false),
        Checked::Denied(Reason::UnknownKey, Scheme::Dpop)
    );
    assert_eq!(
        s.run(Scheme::Dpop, &rotated, NOW + 29, true),
        Checked::Denied(Reason::UnknownKey, Scheme::Dpop)
    );
    assert_eq!(
        s.run(Scheme::Dpop, &rotated, NOW + 30, true),
        Checked::WaitForKeys { issuer: 0 }
    );
    // Another worker holds the lease: refused now, not held.
    s.fetcher.lease.set(false);
    assert_eq!(
        s.run(Scheme::Dpop, &rotated, NOW + 60, true),
        Checked::Denied(Reason::UnknownKey, Scheme::Dpop)
    );
}

#[test]
fn keys_another_worker_fetched_are_used_without_a_fetch() {
    let s = Setup::new();
    *s.fetcher.shared.borrow_mut() = Some(jwks("k1"));
    assert_eq!(
        s.run(Scheme::Dpop, &token("k1", None), NOW, true),
        Checked::Accepted("user-1".to_string())
    );
    assert_eq!(s.fetcher.fetches.get(), 0);
}

#[test]
fn a_cached_bound_token_presented_as_bearer_is_refused() {
    // §2.14, RFC 9449 §7.2: the cache keeps the binding.
    let s = Setup::new();
    s.ring
        .borrow_mut()
        .apply_fetch(0, NOW, Some(200), &jwks("k1"));
    let bound = token("k1", Some("thumbprint"));
    assert_eq!(
        s.run(Scheme::Dpop, &bound, NOW, true),
        Checked::Accepted("user-1".to_string())
    );
    assert_eq!(
        s.run(Scheme::Bearer, &bound, NOW, true),
        Checked::Denied(Reason::BearerDowngrade, Scheme::Bearer)
    );
    assert_eq!(s.hits.get(), 1);
}
