//! The token filter's per-request sequence, as one pure function: verified-token cache →
//! scheme binding → full validation → (unknown `kid` or keys not loaded) keys other workers
//! fetched → rate-limited refetch → retry once the keys came (docs/checks.md §1, §1.4,
//! §1.10). The token step (`crate::engine`) implements [`KeyFetcher`] on the worker's keys and
//! shared data, and its driver sends the fetch.

use std::cell::RefCell;

use crate::cache::{CachedToken, TokenCache};
use crate::denial::Reason;
use crate::jose::SignatureVerifier;
use crate::jwks_store::KeyRing;
use crate::policy::Policy;
use crate::scheme::Scheme;
use crate::token::{self, Presented};

/// How many times keys another worker installed meanwhile are retried before refetching.
const MAX_SHARED_RETRIES: usize = 3;

/// What the sequence asks of the host.
pub trait KeyFetcher {
    /// Installs into `ring` the key documents other workers fetched (shared data).
    fn sync_shared(&self, ring: &RefCell<KeyRing>);
    /// Whether this worker fetches issuer `index`'s JWKS now (it took the lease); the driver
    /// sends the fetch when [`check`] answers [`Checked::WaitForKeys`].
    fn start_fetch(&self, index: usize, now: i64) -> bool;
}

/// One worker's token state.
pub struct TokenWorker<'a> {
    pub policy: &'a Policy,
    pub ring: &'a RefCell<KeyRing>,
    pub cache: &'a RefCell<TokenCache>,
    pub verifier: &'a dyn SignatureVerifier,
}

/// The result of [`check`].
#[derive(Debug, PartialEq)]
pub enum Checked<A> {
    /// Verified (fresh or cached) and bound to its scheme: what `accept` returned.
    Accepted(A),
    /// Refused, with the scheme the token came with (for the challenge).
    Denied(Reason, Scheme),
    /// Issuer `issuer`'s keys are to be fetched: hold the request and call [`check`] again
    /// with `allow_refetch: false` when the fetch answered (or could not be sent).
    WaitForKeys { issuer: usize },
}

/// Decides one presented token. `on_cache_hit` counts a hit; `accept` gets the verified token
/// (hand-off, route authz) and its answer is returned as [`Checked::Accepted`].
pub fn check<A>(
    w: &TokenWorker<'_>,
    keys: &dyn KeyFetcher,
    presented: Presented<'_>,
    now: i64,
    allow_refetch: bool,
    on_cache_hit: &mut dyn FnMut(),
    accept: &mut dyn FnMut(&CachedToken, Scheme) -> A,
) -> Checked<A> {
    let scheme = presented.scheme;
    let skew = i64::try_from(w.policy.token.skew_seconds).unwrap_or(i64::MAX);
    let mut shared_retries = 0;
    loop {
        // §1.10: a cached verified token, while the keys it was verified with are current;
        // keyed by the token itself (no SHA-256 per hit, `cache`).
        {
            let mut cache = w.cache.borrow_mut();
            cache.sync_keys_generation(w.ring.borrow().generation);
            if let Some(hit) = cache.get(presented.token, now, skew) {
                on_cache_hit();
                return match token::check_scheme_binding(scheme, hit.token.cnf_jkt.as_deref()) {
                    Ok(()) => Checked::Accepted(accept(hit, scheme)),
                    Err(r) => Checked::Denied(r, scheme),
                };
            }
        }
        let result = token::validate(w.policy, &*w.ring.borrow(), w.verifier, presented, now);
        let reason = match result {
            Ok(verified) => {
                let cached = CachedToken::new(verified);
                let answer = accept(&cached, scheme);
                w.cache
                    .borrow_mut()
                    .insert(presented.token.to_string(), cached, now, skew);
                return Checked::Accepted(answer);
            }
            Err(r @ (Reason::UnknownKey | Reason::KeysUnavailable)) if allow_refetch => r,
            Err(r) => return Checked::Denied(r, scheme),
        };
        // Rotation (§1.4): first, another worker may already have fetched newer keys.
        let generation = w.ring.borrow().generation;
        keys.sync_shared(w.ring);
        if w.ring.borrow().generation != generation && shared_retries < MAX_SHARED_RETRIES {
            shared_retries += 1;
            continue;
        }
        // Then a refetch, at most once per `jwks_min_refetch_seconds`; the request waits.
        let Some(i) = token::issuer_index_of(w.policy, presented.token) else {
            return Checked::Denied(reason, scheme);
        };
        let permitted = match (w.policy.remote_jwks(i), w.ring.borrow().issuers.get(i)) {
            (Some(remote), Some(k)) => k.kid_refetch_allowed(now, remote),
            _ => false,
        };
        if !permitted {
            return Checked::Denied(reason, scheme);
        }
        return if keys.start_fetch(i, now) {
            if let Some(k) = w.ring.borrow_mut().issuers.get_mut(i) {
                k.note_kid_refetch(now);
            }
            Checked::WaitForKeys { issuer: i }
        } else {
            Checked::Denied(reason, scheme)
        };
    }
}
