//! RFC 9449 DPoP proof checks at a resource server (docs/checks.md §2), server nonces (§8/§9),
//! the replay cache rule (§11.1) and RFC 8705 certificate binding.
//!
//! [`evaluate`] is the whole decision of the DPoP filter for one request: it runs after the
//! token filter and works on the [`VerifiedToken`] that filter left in filter state; the
//! access token itself is never parsed or verified again.

pub mod htu;
pub mod mtls;
pub mod nonce;
pub mod proof;
pub mod replay;
pub mod replay_store;

use crate::claims::VerifiedToken;
use crate::denial::{Reason, Reply};
use crate::jose::SignatureVerifier;
use crate::policy::Policy;
use crate::routes::Requirement;
use crate::scheme::Scheme;

pub use htu::RequestTarget;
pub use mtls::ClientCert;
// The `dpop` section is part of the policy (`crate::policy::dpop`): named here too.
pub use crate::policy::dpop as policy;
pub use crate::policy::dpop::{DpopDoc, DpopPolicy};
pub use proof::{
    check_proof, check_proof_cached, Binding, CheckedProof, ProofKey, ProofKeyCache, ProofRequest,
};
pub use replay::{KeyBudget, SharedStore, StoreError};

/// The request as the DPoP filter sees it.
#[derive(Debug, Clone, Default)]
pub struct DpopRequest<'a> {
    pub proof: ProofRequest<'a>,
    pub client_cert: ClientCert<'a>,
}

/// A request the DPoP filter lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The route needs no token: nothing to check.
    Public,
    /// Sender constraint checked (or not required for this unbound token).
    Accepted {
        /// A fresh server nonce to offer in the response's `DPoP-Nonce` (RFC 9449 §9).
        nonce: Option<String>,
        /// `replay_scope: api`: the digest of `(jkt, jti)` to claim in the shared store
        /// before the request may go on ([`replay_store`]).
        claim: Option<[u8; 16]>,
    },
}

/// A refusal, with the nonce to send along when nonces are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub nonce: Option<String>,
    /// `Retry-After` seconds for a 429 (`dpop_key_over_budget`).
    pub retry_after: Option<u32>,
}

impl Denial {
    /// The reply (RFC 9449 §7.1: `WWW-Authenticate: DPoP error=..., algs="..."`).
    /// Built by [`crate::challenge::reply`]; a 429 says how long to wait (RFC 6585 §4).
    pub fn reply(&self, policy: &Policy, dpop: &DpopPolicy) -> Reply {
        crate::challenge::reply(
            policy,
            self.reason,
            &crate::challenge::Challenge {
                offer: crate::challenge::Offer::DpopFilter(dpop),
                nonce: self.nonce.clone(),
                required_scope: None,
                detail: None,
                retry_after: self.retry_after,
            },
        )
    }
}

/// The shared-data namespace of this API's replay cache.
pub fn replay_namespace(policy: &Policy) -> &str {
    &policy.api_name
}

/// The whole DPoP/mTLS decision for one request (docs/checks.md §2, RFC 8705 §3).
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    policy: &Policy,
    dpop: &DpopPolicy,
    req: &DpopRequest<'_>,
    token: Option<&VerifiedToken>,
    verifier: &dyn SignatureVerifier,
    store: &dyn SharedStore,
    budget: &KeyBudget,
    now: i64,
) -> Result<Outcome, Denial> {
    evaluate_cached(
        policy,
        dpop,
        req,
        token,
        verifier,
        store,
        budget,
        &ProofKeyCache::new(0),
        now,
    )
}

/// [`evaluate`] with the worker's [`ProofKeyCache`] (same decision; the filter's hot path).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_cached(
    policy: &Policy,
    dpop: &DpopPolicy,
    req: &DpopRequest<'_>,
    token: Option<&VerifiedToken>,
    verifier: &dyn SignatureVerifier,
    store: &dyn SharedStore,
    budget: &KeyBudget,
    keys: &ProofKeyCache,
    now: i64,
) -> Result<Outcome, Denial> {
    let fresh_nonce = || dpop.nonce.as_ref().map(|c| nonce::issue(c, now));
    let deny = |reason: Reason| Denial {
        reason,
        // Any refusal may carry a fresh nonce (RFC 9449 §8.2 allows it on every response);
        // `use_dpop_nonce` must.
        nonce: fresh_nonce(),
        retry_after: None,
    };

    // First, on every route: the one canonical path (docs/checks.md, "Path
    // canonicalisation"). The `htu` check below compares the proof with this same path
    // (`req.proof.target.path`, query ignored), which has no dot-segment or encoded separator.
    let path = crate::path::canonical(req.proof.target.path).map_err(|f| deny(f.reason()))?;
    if policy.routes.requirement(req.proof.method, &path) == Requirement::None {
        return Ok(Outcome::Public);
    }
    let Some(token) = token else {
        return Err(deny(Reason::NoVerifiedToken));
    };

    // §2.14 / RFC 9449 §7.2: a DPoP-bound token used as a Bearer token is refused
    // (the token filter refuses it first; checked again so this filter never relies on order).
    if token.cnf_jkt.is_some() && token.scheme != Scheme::Dpop {
        return Err(deny(Reason::BearerDowngrade));
    }

    // RFC 8705 §3: a certificate-bound token only with that certificate.
    if let Some(x5t) = token.cnf_x5t_s256.as_deref() {
        mtls::check_binding(x5t, dpop.cert_source, &req.client_cert).map_err(deny)?;
    }

    let needs_proof = dpop.required || token.scheme == Scheme::Dpop || token.cnf_jkt.is_some();
    if !needs_proof {
        return Ok(Outcome::Accepted {
            nonce: fresh_nonce(),
            claim: None,
        });
    }
    if token.scheme != Scheme::Dpop {
        // The policy demands DPoP but the token came as Bearer.
        return Err(deny(Reason::BearerDowngrade));
    }
    let Some(jkt) = token.cnf_jkt.as_deref() else {
        return Err(deny(Reason::TokenNotDpopBound));
    };

    let checked = check_proof_cached(
        dpop,
        &req.proof,
        Binding {
            ath: &token.token_sha256,
            jkt,
        },
        verifier,
        now,
        keys,
    )
    .map_err(deny)?;

    // §2.10 / RFC 9449 §11.1: `jti` not seen within the window; recorded until the proof's
    // `iat` leaves the window. Fairness first (`docs/dpop.md`): a key over its budget of live
    // entries is refused with 429 and its proof is not recorded (nothing acted on it).
    let expires_at = checked.iat.saturating_add(dpop.iat_past);
    let key = checked.key_id;
    if let Err(secs) = budget.check(&dpop.replay, key, expires_at, now) {
        return Err(Denial {
            retry_after: Some(secs),
            ..deny(Reason::DpopKeyOverBudget)
        });
    }
    let digest = replay::JtiDigest::new(&dpop.replay_key, &checked.jkt, &checked.jti);
    replay::check_and_record(
        store,
        dpop.replay,
        replay_namespace(policy),
        digest,
        expires_at,
        now,
    )
    .map_err(|e| {
        deny(match e {
            replay::ReplayError::Replay => Reason::DpopReplay,
            // Full or store unusable: fail closed (see replay.rs).
            replay::ReplayError::Full | replay::ReplayError::Unavailable => {
                Reason::DpopReplayCacheFull
            }
        })
    })?;
    budget.record(&dpop.replay, key, expires_at);

    // The store's digest must be the same on every replica: keyed with the nonce secret
    // (the same everywhere) when there is one, never with this proxy's random key.
    let claim = dpop.replay_store.as_ref().map(|_| {
        let secret = dpop.nonce.as_ref().map_or(&[][..], |n| n.secret.as_slice());
        replay::JtiDigest::new(secret, &checked.jkt, &checked.jti).bytes()
    });
    Ok(Outcome::Accepted {
        nonce: fresh_nonce(),
        claim,
    })
}
