//! The plugin's root context, one per worker: loads the policy once (fail closed: a policy that
//! does not load, or a step that cannot run under it, refuses the configuration), keeps the
//! issuers' keys fresh on its tick (docs/checks.md §1.4), and creates each stream's context.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use fapi_guard_core::dpop::{replay, replay_store};
use fapi_guard_core::engine::{ChainSteps, StepName, Worker};
use fapi_guard_core::policy::KeySource;
use fapi_guard_host::shared::HostSharedData;
use fapi_guard_host::verify::HostVerifier;
use fapi_guard_host::{clock, config, gauges, jwks};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use crate::host_env::{Shared, Stats};
use crate::stream::GuardStream;

pub struct GuardRoot {
    steps: ChainSteps,
    shared: Option<Rc<Shared>>,
    /// Fetch call token → issuer index, for fetches the tick started.
    calls: Vec<(u32, usize)>,
    /// `replay_scope: api`: the lease grant in flight (call token, sent at).
    lease_call: Option<(u32, i64)>,
}

impl GuardRoot {
    pub fn new(steps: ChainSteps) -> GuardRoot {
        GuardRoot {
            steps,
            shared: None,
            calls: Vec::new(),
            lease_call: None,
        }
    }
}

fn refuse(why: &str) -> bool {
    let _ = proxy_wasm::hostcalls::log(
        LogLevel::Critical,
        &format!("fapi_guard: refusing configuration: {why}"),
    );
    false
}

impl Context for GuardRoot {
    fn on_http_call_response(&mut self, token_id: u32, headers: usize, body: usize, _: usize) {
        let Some(s) = &self.shared else { return };
        if let Some((token, sent_at)) = self.lease_call {
            if token == token_id {
                self.lease_call = None;
                let status = if headers == 0 {
                    None
                } else {
                    self.get_http_call_response_header(":status")
                        .and_then(|v| v.parse().ok())
                };
                let answer = self.get_http_call_response_body(0, body.min(4096));
                let lease = replay_store::lease_answer(
                    status,
                    answer.as_deref().unwrap_or_default(),
                    sent_at,
                );
                match lease {
                    Some(l) => s.lease.set(Some(l)),
                    None => {
                        let _ = proxy_wasm::hostcalls::log(
                            LogLevel::Warn,
                            "fapi_guard.dpop: replay store lease grant failed (claims fail closed until one succeeds)",
                        );
                    }
                }
                return;
            }
        }
        if let Some(pos) = self.calls.iter().position(|(t, _)| *t == token_id) {
            let (_, index) = self.calls.swap_remove(pos);
            jwks::answered(&s.worker, index, body);
        }
    }
}

impl GuardRoot {
    /// `replay_scope: api`: grants the next replay-store lease one period before the current
    /// one stops being usable (`dpop::replay_store`); one grant in flight at a time.
    fn renew_lease(&mut self, s: &Shared, now: i64) {
        let dpop = &s.worker.dpop;
        let Some(store) = dpop.replay_store.as_ref() else {
            return;
        };
        if !self.steps.dpop || self.lease_call.is_some() {
            return;
        }
        if s.lease.get().is_some_and(|l| !l.renew_due(dpop, now)) {
            return;
        }
        let call = replay_store::lease_call(store, dpop);
        if let Some(token) = crate::store_call::send(self, &call) {
            self.lease_call = Some((token, now));
        }
    }
}

impl RootContext for GuardRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(policy) = config::load_policy(self.get_plugin_configuration()) else {
            return false;
        };
        let has_remote = policy
            .issuers
            .iter()
            .any(|i| matches!(i.keys, KeySource::Remote(_)));
        let mut worker = match Worker::new(policy, self.steps) {
            Ok(w) => w,
            Err(why) => return refuse(&why),
        };
        if self.steps.dpop {
            // The replay digest is keyed so a client cannot aim its `jti`s at one slot: with
            // the nonce secret when there is one, else with a random key all workers share.
            if worker.dpop.replay_key.is_empty() {
                let ns = fapi_guard_core::dpop::replay_namespace(&worker.policy).to_string();
                let mut fresh = [0u8; replay::SHARED_KEY_LEN];
                let key = getrandom::fill(&mut fresh)
                    .ok()
                    .and_then(|()| replay::ensure_shared_key(&HostSharedData, &ns, &fresh));
                let Some(key) = key else {
                    return refuse(
                        "no random replay-cache key (host randomness or shared data failed)",
                    );
                };
                worker.dpop.replay_key = key;
            }
            // Replay-cache keys are created on first use, so an idle proxy holds none; the
            // layout and its memory bound are logged once.
            let r = &worker.dpop.replay;
            let _ = proxy_wasm::hostcalls::log(
                LogLevel::Info,
                &format!(
                    "fapi_guard.dpop: replay cache {} buckets of {} s x {} slots x {} entries: at most {} live proofs, {} bytes of values",
                    r.buckets, r.bucket_seconds, r.slots, r.entries_per_slot, r.capacity(), r.max_value_bytes()
                ),
            );
        }
        let stats = Stats::new(worker.steps());
        self.shared = Some(Rc::new(Shared {
            worker,
            stats,
            verifier: HostVerifier::from_env(),
            lease: Cell::new(None),
        }));
        let has_store = self.steps.dpop
            && self
                .shared
                .as_ref()
                .is_some_and(|s| s.worker.dpop.replay_store.is_some());
        if (has_remote && self.steps.token) || has_store {
            // Fetch at start (first tick), then check the schedule every second.
            self.set_tick_period(Duration::from_millis(200));
        }
        true
    }

    fn on_tick(&mut self) {
        let Some(s) = self.shared.clone() else { return };
        self.set_tick_period(Duration::from_secs(1));
        s.worker.sync_shared_keys(&HostSharedData);
        let now = clock::now_seconds();
        for i in s.worker.due_fetches(now) {
            if let Some(token) = jwks::start(&s.worker, i, now) {
                self.calls.push((token, i));
            }
        }
        self.renew_lease(&s, now);
        if s.worker.has(StepName::Dpop) {
            // This worker's share of the replay cache's occupancy (docs/platform-guide.md,
            // "Metrics"), brought up to date once a tick, not on the request path.
            gauges::replay_cache(&s.worker.budget, &s.worker.dpop.replay, now);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(GuardStream::new(shared)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
