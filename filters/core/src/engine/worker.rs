//! What one worker (one Wasm VM, or one explainer run) keeps across requests: the policy,
//! parsed once, the issuers' keys, the verified-token cache, the DPoP proof-key cache and
//! per-key budget. The keys are refreshed by the driver's clock ([`Worker::due_fetches`]) and
//! on an unknown `kid` ([`crate::token_flow`]); the documents are shared between workers
//! through the [`SharedStore`] (docs/checks.md §1.4).

use std::cell::RefCell;

use super::StepName;
use crate::cache::TokenCache;
use crate::dpop::policy::DpopPolicy;
use crate::dpop::proof::PROOF_KEY_CACHE_ENTRIES;
use crate::dpop::{KeyBudget, ProofKeyCache};
use crate::fhir::policy::FhirPolicy;
use crate::jwks_store::{self, KeyRing};
use crate::policy::Policy;
use crate::root_id::ChainSteps;
use crate::shared_store::SharedStore;

pub struct Worker {
    pub policy: Policy,
    steps: ChainSteps,
    pub ring: RefCell<KeyRing>,
    pub cache: RefCell<TokenCache>,
    /// The `dpop` section (its defaults without one); the driver sets its `replay_key`.
    pub dpop: DpopPolicy,
    /// Per proof key live-entry counts on this worker (fairness, `docs/dpop.md`).
    pub budget: KeyBudget,
    /// Proof headers that passed the header checks, with their parsed key and thumbprint.
    pub proof_keys: ProofKeyCache,
    /// The partition step's proof-header thumbprints (`partition_step.rs`).
    pub(super) partition_headers: super::partition_step::HeaderThumbprints,
    /// Per remote issuer: the last shared-data version seen, and whether a fetch is in flight.
    seen_cas: RefCell<Vec<Option<u32>>>,
    in_flight: RefCell<Vec<bool>>,
}

impl Worker {
    /// The worker of a chain running `steps` under `policy`. Refused (the message names the
    /// field) when a step cannot run under it: the FHIR scope step needs a `fhir` section.
    pub fn new(policy: Policy, steps: ChainSteps) -> Result<Worker, String> {
        if steps.fhir_scope && policy.fhir.is_none() {
            return Err(
                "policy field `fhir`: required by the FHIR scope step (run `fapi_guard:token,dpop` for an API without one)"
                    .to_string(),
            );
        }
        if !(steps.token || steps.dpop || steps.fhir_scope || steps.partition) {
            return Err("no step to run".to_string());
        }
        let n = policy.issuers.len();
        Ok(Worker {
            ring: RefCell::new(KeyRing::new(&policy)),
            cache: RefCell::new(TokenCache::new(policy.token.cache_max_entries)),
            dpop: policy.dpop.clone().unwrap_or_default(),
            budget: KeyBudget::new(),
            proof_keys: ProofKeyCache::new(PROOF_KEY_CACHE_ENTRIES),
            partition_headers: Default::default(),
            seen_cas: RefCell::new(vec![None; n]),
            in_flight: RefCell::new(vec![false; n]),
            steps,
            policy,
        })
    }

    /// The checking steps this chain runs, in chain order (never the partition step).
    pub fn steps(&self) -> impl Iterator<Item = StepName> + '_ {
        [
            (self.steps.token, StepName::Token),
            (self.steps.dpop, StepName::Dpop),
            (self.steps.fhir_scope, StepName::FhirScope),
        ]
        .into_iter()
        .filter_map(|(on, s)| on.then_some(s))
    }

    pub fn has(&self, step: StepName) -> bool {
        match step {
            StepName::Token => self.steps.token,
            StepName::Dpop => self.steps.dpop,
            StepName::FhirScope => self.steps.fhir_scope,
        }
    }

    /// Whether this plugin is the partition step (alone; `steps()` is then empty).
    pub fn partitions(&self) -> bool {
        self.steps.partition
    }

    /// The first step (it answers refusals made before any step, e.g. a non-canonical path).
    pub fn first_step(&self) -> StepName {
        self.steps().next().unwrap_or(StepName::Token)
    }

    /// The `fhir` section, when the FHIR scope step runs.
    pub fn fhir(&self) -> Option<&FhirPolicy> {
        self.policy.fhir.as_ref().filter(|_| self.steps.fhir_scope)
    }

    /// Installs the key documents other workers fetched.
    pub fn sync_shared_keys(&self, store: &impl SharedStore) {
        for i in 0..self.policy.issuers.len() {
            let Some(remote) = self.policy.remote_jwks(i) else {
                continue;
            };
            let seen = self.seen_cas.borrow().get(i).copied().flatten();
            if let Some(cas) =
                jwks_store::sync_from_shared(store, &mut self.ring.borrow_mut(), i, remote, seen)
            {
                if let Some(slot) = self.seen_cas.borrow_mut().get_mut(i) {
                    *slot = Some(cas);
                }
            }
        }
    }

    /// Issuers whose keys are due for a refresh at `now` (`jwks_store::due_fetches`).
    pub fn due_fetches(&self, now: i64) -> Vec<usize> {
        jwks_store::due_fetches(&self.policy, &self.ring.borrow(), now)
    }

    /// Whether this worker sends issuer `index`'s fetch now (`jwks_store::begin_fetch`: not in
    /// flight here, the shared lease taken). The driver then sends it and calls
    /// [`Worker::fetch_sent`].
    pub fn begin_fetch(&self, store: &impl SharedStore, index: usize, now: i64) -> bool {
        let Some(remote) = self.policy.remote_jwks(index) else {
            return false;
        };
        jwks_store::begin_fetch(
            store,
            &mut self.ring.borrow_mut(),
            &self.in_flight.borrow(),
            index,
            remote,
            now,
        )
    }

    pub fn fetch_sent(&self, index: usize) {
        if let Some(f) = self.in_flight.borrow_mut().get_mut(index) {
            *f = true;
        }
    }

    /// A fetch answered (`status` None: failed or timed out): installs it (`jwks_store::
    /// apply_answer`: keys, shared document, lease, backoff).
    pub fn fetch_answered(
        &self,
        store: &impl SharedStore,
        index: usize,
        now: i64,
        status: Option<u32>,
        body: &[u8],
    ) -> Option<jwks_store::FetchOutcome> {
        if let Some(f) = self.in_flight.borrow_mut().get_mut(index) {
            *f = false;
        }
        let remote = self.policy.remote_jwks(index)?;
        jwks_store::apply_answer(
            store,
            &mut self.ring.borrow_mut(),
            index,
            remote,
            now,
            status,
            body,
        )
    }
}
