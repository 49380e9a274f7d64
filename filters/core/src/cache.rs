//! Verified-token cache (docs/checks.md §1.10, `bench/README.md`: tokens repeat across a client's requests).
//! Keyed by the token itself (the token filter's hot path then hashes it with the map's keyed
//! SipHash instead of SHA-256: bench/README.md); a hit is an exact match of the whole token.
//! An entry is used only while the token's time claims still hold on the proxy clock as it
//! reads now: before `exp + skew`, and not before `max(iat, nbf) - skew` (docs/checks.md §1.7,
//! §1.10), so a clock jump either way (NTP step, VM restore) never serves an entry the full
//! check would refuse. The whole cache is dropped when the issuer keys change.
//! Bounded: at capacity, expired entries go first, then the oldest insertions (FIFO).

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use crate::claims::VerifiedToken;
use crate::scheme::Scheme;

/// A verified token, shared as it is handed to the steps after the token step for a
/// request that used either scheme: a cache hit costs a lookup, not a clone.
#[derive(Debug, Clone)]
pub struct CachedToken {
    pub token: VerifiedToken,
    /// `max(iat, nbf)`: before this (less the skew) the token is not yet valid.
    not_before: i64,
    as_dpop: Rc<VerifiedToken>,
    as_bearer: Rc<VerifiedToken>,
}

impl CachedToken {
    pub fn new(mut token: VerifiedToken) -> CachedToken {
        // `iat` is required and `nbf` optional (§1.7/§1.8); both were read as NumericDates by
        // `token::validate`. A value that is somehow absent here makes the entry unusable.
        let numeric = |name: &str| {
            token.claims.get(name).and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            })
        };
        let not_before = match (numeric("iat"), token.claims.get("nbf")) {
            (Some(iat), None) => iat,
            (Some(iat), Some(_)) => numeric("nbf").map_or(i64::MAX, |nbf| iat.max(nbf)),
            (None, _) => i64::MAX,
        };
        token.scheme = Scheme::Dpop;
        let as_dpop = Rc::new(token.clone());
        token.scheme = Scheme::Bearer;
        let as_bearer = Rc::new(token.clone());
        CachedToken {
            token,
            not_before,
            as_dpop,
            as_bearer,
        }
    }

    /// §1.7 on the proxy clock as it reads now (the same bounds as `token::check_times`).
    pub fn valid_at(&self, now: i64, skew: i64) -> bool {
        now < self.token.exp.saturating_add(skew) && self.not_before <= now.saturating_add(skew)
    }

    /// The verified token of a request that used `scheme`.
    pub fn for_scheme(&self, scheme: Scheme) -> Rc<VerifiedToken> {
        match scheme {
            Scheme::Dpop => self.as_dpop.clone(),
            Scheme::Bearer => self.as_bearer.clone(),
        }
    }
}

pub struct TokenCache {
    max_entries: usize,
    /// The key is shared with `order` (a token is ~1 KB: stored once).
    entries: HashMap<Rc<str>, CachedToken>,
    order: VecDeque<Rc<str>>,
    keys_generation: u64,
}

impl TokenCache {
    pub fn new(max_entries: usize) -> TokenCache {
        TokenCache {
            max_entries,
            entries: HashMap::new(),
            order: VecDeque::new(),
            keys_generation: 0,
        }
    }

    /// Drops everything when the key set changed (a removed key must stop validating).
    pub fn sync_keys_generation(&mut self, generation: u64) {
        if generation != self.keys_generation {
            self.entries.clear();
            self.order.clear();
            self.keys_generation = generation;
        }
    }

    /// A cached verified token by its key (the token), if its time claims hold at `now`
    /// (`token::check_times`: before `exp + skew`, `iat`/`nbf` not beyond `now + skew`).
    /// Otherwise the caller validates in full, which names the reason.
    pub fn get(&self, token: &str, now: i64, skew: i64) -> Option<&CachedToken> {
        self.entries.get(token).filter(|t| t.valid_at(now, skew))
    }

    pub fn insert(&mut self, key: String, token: CachedToken, now: i64, skew: i64) {
        if self.max_entries == 0 {
            return;
        }
        if self.entries.len() >= self.max_entries {
            self.entries.retain(|_, t| t.valid_at(now, skew));
            self.order.retain(|k| self.entries.contains_key(&**k));
        }
        while self.entries.len() >= self.max_entries {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&*old);
                }
                None => break,
            }
        }
        let key: Rc<str> = key.into();
        if self.entries.insert(key.clone(), token).is_none() {
            self.order.push_back(key);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
