//! Each issuer's key set and its refresh schedule ([`IssuerKeys`]: fetch due, backoff, `kid`
//! refetch limit, a fetch answer applied), and the ring of every issuer of one policy
//! ([`KeyRing`]), which the token check looks keys up in.

use crate::jose::{Alg, Jwks};
use crate::jwks_limits::JwksLimits;
use crate::policy::{KeySource, Policy, RemoteJwks};
use crate::token::{KeyLookup, KeyProvider};

/// A policy period as a signed time, saturating (never wrapping negative: a negative period
/// would make every check "due"). Compile also bounds these fields.
fn seconds(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// What a fetch answer did to the key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// New keys installed.
    Updated,
    /// Same document as before.
    Unchanged,
    /// Non-200, not a JWKS, no usable key, or over a [`JwksLimits`] cap (`too_large`,
    /// `too_many_keys`): the previous keys stay.
    KeptLastGood(&'static str),
}

#[derive(Debug, Clone, Default)]
pub struct IssuerKeys {
    pub jwks: Option<Jwks>,
    /// The raw document the keys came from (to spot unchanged answers).
    pub document: Option<Vec<u8>>,
    pub last_success: Option<i64>,
    pub last_attempt: Option<i64>,
    /// Last fetch triggered by an unknown `kid` (the rate limit counts only those, so the
    /// first rotation after start is picked up at once).
    pub last_kid_refetch: Option<i64>,
    pub consecutive_failures: u32,
}

impl IssuerKeys {
    /// Whether a scheduled fetch is due at `now`.
    pub fn fetch_due(&self, now: i64, remote: &RemoteJwks) -> bool {
        let backoff_over = match self.last_attempt {
            None => true,
            Some(t) => now - t >= self.backoff_seconds(remote),
        };
        match self.last_success {
            None => backoff_over,
            Some(t) => now - t >= seconds(remote.refresh_seconds) && backoff_over,
        }
    }

    /// Whether an unknown `kid` may trigger a fetch now (rate limit).
    pub fn kid_refetch_allowed(&self, now: i64, remote: &RemoteJwks) -> bool {
        match self.last_kid_refetch {
            None => true,
            Some(t) => now - t >= seconds(remote.min_refetch_seconds),
        }
    }

    /// Records a fetch triggered by an unknown `kid`.
    pub fn note_kid_refetch(&mut self, now: i64) {
        self.last_kid_refetch = Some(now);
    }

    /// Exponential backoff after failures: 1, 2, 4 ... seconds, capped at the refresh period.
    /// The one backoff rule: the schedule ([`Self::fetch_due`]) and the shared fetch lease
    /// ([`apply_answer`]) both use it.
    pub fn backoff_seconds(&self, remote: &RemoteJwks) -> i64 {
        if self.consecutive_failures == 0 {
            return 0;
        }
        let exp = 1i64 << self.consecutive_failures.min(20).saturating_sub(1);
        exp.min(seconds(remote.refresh_seconds)).max(1)
    }

    pub fn note_attempt(&mut self, now: i64) {
        self.last_attempt = Some(now);
    }

    /// Applies a fetch answer (`status` None = no answer / timeout), without size caps.
    pub fn apply_fetch(&mut self, now: i64, status: Option<u32>, body: &[u8]) -> FetchOutcome {
        self.apply_fetch_limited(now, status, body, JwksLimits::NONE)
    }

    /// Applies a fetch answer, refusing one over `limits` (counted as a failure: backoff).
    pub fn apply_fetch_limited(
        &mut self,
        now: i64,
        status: Option<u32>,
        body: &[u8],
        limits: JwksLimits,
    ) -> FetchOutcome {
        self.last_attempt = Some(now);
        let outcome = match status {
            Some(200) => match limits.check(body) {
                Ok(()) => self.install(body, now),
                Err(why) => FetchOutcome::KeptLastGood(why),
            },
            Some(_) => FetchOutcome::KeptLastGood("http_status"),
            None => FetchOutcome::KeptLastGood("no_answer"),
        };
        match outcome {
            FetchOutcome::KeptLastGood(_) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1)
            }
            _ => self.consecutive_failures = 0,
        }
        outcome
    }

    /// Installs a JWKS document fetched elsewhere (another worker) or here.
    pub fn install(&mut self, body: &[u8], fetched_at: i64) -> FetchOutcome {
        if self.document.as_deref() == Some(body) {
            self.last_success = Some(self.last_success.map_or(fetched_at, |t| t.max(fetched_at)));
            return FetchOutcome::Unchanged;
        }
        match Jwks::parse(body) {
            Ok(jwks) if !jwks.keys.is_empty() => {
                self.jwks = Some(jwks);
                self.document = Some(body.to_vec());
                self.last_success = Some(fetched_at);
                FetchOutcome::Updated
            }
            Ok(_) => FetchOutcome::KeptLastGood("no_usable_key"),
            Err(_) => FetchOutcome::KeptLastGood("not_a_jwks"),
        }
    }
}

/// Every issuer's keys for one policy, in policy order.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    pub issuers: Vec<IssuerKeys>,
    /// Bumped whenever any key set changes (the token cache follows it).
    pub generation: u64,
}

impl KeyRing {
    pub fn new(policy: &Policy) -> KeyRing {
        let issuers = policy
            .issuers
            .iter()
            .map(|i| match &i.keys {
                KeySource::Inline(jwks) => IssuerKeys {
                    jwks: Some(jwks.clone()),
                    ..Default::default()
                },
                KeySource::Remote(_) => IssuerKeys::default(),
            })
            .collect();
        KeyRing {
            issuers,
            generation: 1,
        }
    }

    /// Installs a shared document for issuer `index`; returns true when keys changed.
    pub fn install_shared(&mut self, index: usize, body: &[u8], fetched_at: i64) -> bool {
        let Some(keys) = self.issuers.get_mut(index) else {
            return false;
        };
        let changed = keys.install(body, fetched_at) == FetchOutcome::Updated;
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// Applies a fetch this worker made; returns the outcome.
    pub fn apply_fetch(
        &mut self,
        index: usize,
        now: i64,
        status: Option<u32>,
        body: &[u8],
    ) -> Option<FetchOutcome> {
        self.apply_fetch_limited(index, now, status, body, JwksLimits::NONE)
    }

    /// [`Self::apply_fetch`] with the issuer's size caps.
    pub fn apply_fetch_limited(
        &mut self,
        index: usize,
        now: i64,
        status: Option<u32>,
        body: &[u8],
        limits: JwksLimits,
    ) -> Option<FetchOutcome> {
        let keys = self.issuers.get_mut(index)?;
        let outcome = keys.apply_fetch_limited(now, status, body, limits);
        if outcome == FetchOutcome::Updated {
            self.generation += 1;
        }
        Some(outcome)
    }
}

impl KeyProvider for KeyRing {
    fn lookup(&self, issuer_index: usize, kid: Option<&str>, alg: Alg) -> KeyLookup<'_> {
        match self.issuers.get(issuer_index).and_then(|i| i.jwks.as_ref()) {
            None => KeyLookup::NotLoaded,
            Some(jwks) => match jwks.select(kid, alg) {
                Some(k) => KeyLookup::Found(k),
                None => KeyLookup::NoMatch,
            },
        }
    }
}
