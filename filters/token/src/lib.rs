//! The token filter: validates the RFC 9068 access token on every request (checklist §1)
//! and hands the verified claims to the filters after it through Envoy filter state.
//! Thin: decisions are in `fapi_guard_core::token`; this file only moves data.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use fapi_guard_core::cache::{CachedToken, TokenCache};
use fapi_guard_core::denial::{ChallengeContext, Reason, Scheme};
use fapi_guard_core::jose::CompactJws;
use fapi_guard_core::jwks_store::KeyRing;
use fapi_guard_core::policy::{KeySource, Policy};
use fapi_guard_core::routes::Requirement;
use fapi_guard_core::token::{self, Presented};
use fapi_guard_host::{
    clock, config, handoff, jwks, reply, stats::FilterStats, verify::HostVerifier,
};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

const FILTER: &str = "token";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(TokenRoot::default()) });
}}

/// Per-worker state shared by the root context and the worker's HTTP contexts.
struct Worker {
    policy: Rc<Policy>,
    ring: RefCell<KeyRing>,
    cache: RefCell<TokenCache>,
    stats: FilterStats,
    verifier: HostVerifier,
    /// Per remote issuer: last shared-data CAS seen, and whether a fetch is in flight.
    seen_cas: RefCell<Vec<Option<u32>>>,
    in_flight: RefCell<Vec<bool>>,
}

impl Worker {
    fn remote(&self, index: usize) -> Option<&fapi_guard_core::policy::RemoteJwks> {
        match &self.policy.issuers.get(index)?.keys {
            KeySource::Remote(r) => Some(r),
            KeySource::Inline(_) => None,
        }
    }

    /// Picks up documents other workers fetched.
    fn sync_shared(&self) {
        for i in 0..self.policy.issuers.len() {
            if let Some(remote) = self.remote(i) {
                let seen = self.seen_cas.borrow().get(i).copied().flatten();
                if let Some(cas) =
                    jwks::sync_from_shared(&mut self.ring.borrow_mut(), i, remote, seen)
                {
                    if let Some(slot) = self.seen_cas.borrow_mut().get_mut(i) {
                        *slot = Some(cas);
                    }
                }
            }
        }
    }

    /// Starts a fetch for issuer `index` if this worker gets the lease.
    fn start_fetch(
        &self,
        index: usize,
        now: i64,
        dispatch: impl FnOnce(&fapi_guard_core::policy::RemoteJwks) -> Option<u32>,
    ) -> Option<u32> {
        let remote = self.remote(index)?;
        if self.in_flight.borrow().get(index).copied().unwrap_or(true) {
            return None;
        }
        let hold = (remote.timeout_ms / 1000) as i64 + 1;
        if !jwks::take_lease(remote, now, hold) {
            return None;
        }
        if let Some(k) = self.ring.borrow_mut().issuers.get_mut(index) {
            k.note_attempt(now);
        }
        let token = dispatch(remote)?;
        if let Some(f) = self.in_flight.borrow_mut().get_mut(index) {
            *f = true;
        }
        Some(token)
    }

    fn finish_fetch(&self, index: usize, now: i64, status: Option<u32>, body: &[u8]) {
        if let Some(f) = self.in_flight.borrow_mut().get_mut(index) {
            *f = false;
        }
        if let Some(remote) = self.remote(index) {
            jwks::apply_answer(
                &mut self.ring.borrow_mut(),
                index,
                remote,
                now,
                status,
                body,
            );
        }
    }

    fn challenge(&self) -> Vec<Scheme> {
        let mut s = Vec::new();
        if self.policy.token.allow_dpop {
            s.push(Scheme::Dpop);
        }
        if self.policy.token.allow_bearer {
            s.push(Scheme::Bearer);
        }
        s
    }

    fn deny(&self, reason: Reason, used: Option<Scheme>) {
        // Challenge with the scheme the client used when it is one we accept, else all we accept.
        let all = self.challenge();
        let schemes: Vec<Scheme> = match used {
            Some(s) if all.contains(&s) => vec![s],
            _ => all,
        };
        let algs = self.policy.token.algs.clone();
        let ctx = ChallengeContext {
            schemes: &schemes,
            dpop_algs: &algs,
            ..Default::default()
        };
        reply::deny(FILTER, &self.stats, reason, &ctx);
    }
}

#[derive(Default)]
struct TokenRoot {
    worker: Option<Rc<Worker>>,
    /// Fetch call token → issuer index, for fetches the root context started.
    calls: Vec<(u32, usize)>,
}

impl Context for TokenRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(w) = &self.worker else { return };
        if let Some(pos) = self.calls.iter().position(|(t, _)| *t == token_id) {
            let (_, index) = self.calls.swap_remove(pos);
            let (status, body) = jwks::read_answer(body_size);
            w.finish_fetch(index, clock::now_seconds(), status, &body);
        }
    }
}

impl RootContext for TokenRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(policy) = config::load_policy(FILTER, self.get_plugin_configuration()) else {
            return false;
        };
        let n = policy.issuers.len();
        let has_remote = policy
            .issuers
            .iter()
            .any(|i| matches!(i.keys, KeySource::Remote(_)));
        let worker = Worker {
            ring: RefCell::new(KeyRing::new(&policy)),
            cache: RefCell::new(TokenCache::new(policy.token.cache_max_entries)),
            stats: FilterStats::new(FILTER),
            verifier: HostVerifier::from_env(),
            seen_cas: RefCell::new(vec![None; n]),
            in_flight: RefCell::new(vec![false; n]),
            policy,
        };
        self.worker = Some(Rc::new(worker));
        if has_remote {
            // Fetch at start (first tick), then check the schedule every second.
            self.set_tick_period(Duration::from_millis(200));
        }
        true
    }

    fn on_tick(&mut self) {
        let Some(w) = self.worker.clone() else { return };
        self.set_tick_period(Duration::from_secs(1));
        w.sync_shared();
        let now = clock::now_seconds();
        for i in 0..w.policy.issuers.len() {
            let due = match (w.remote(i), w.ring.borrow().issuers.get(i)) {
                (Some(remote), Some(keys)) => keys.fetch_due(now, remote),
                _ => false,
            };
            if due {
                if let Some(token) = w.start_fetch(i, now, jwks::dispatch) {
                    self.calls.push((token, i));
                }
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(TokenFilter {
            worker,
            waiting_fetch: None,
            retry_token: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct TokenFilter {
    worker: Rc<Worker>,
    /// A request paused while this context fetches keys for an unknown `kid`.
    waiting_fetch: Option<(u32, usize)>,
    retry_token: Option<(Scheme, String)>,
}

enum Outcome {
    Allow,
    Public,
    Deny(Reason, Option<Scheme>),
    /// Paused for a key fetch.
    Wait,
}

impl TokenFilter {
    fn check(&mut self, allow_refetch: bool) -> Outcome {
        let w = self.worker.clone();
        let now = clock::now_seconds();
        let (scheme, token_str) = match &self.retry_token {
            Some((s, t)) => (*s, t.clone()),
            None => {
                let path = self.get_http_request_header(":path").unwrap_or_default();
                let method = self.get_http_request_header(":method").unwrap_or_default();
                if w.policy.routes.requirement(&method, &path) == Requirement::None {
                    return Outcome::Public;
                }
                // Envoy folds a repeated `Authorization` into one value (`extract` refuses it).
                let auth: Vec<String> = self
                    .get_http_request_header("authorization")
                    .into_iter()
                    .collect();
                match token::extract(&w.policy, &auth, &path) {
                    Ok(p) => (p.scheme, p.token.to_string()),
                    Err(r) => return Outcome::Deny(r, scheme_of(&auth)),
                }
            }
        };
        let presented = Presented {
            scheme,
            token: &token_str,
        };
        // The cache is keyed by the token itself (no SHA-256 on a hit; `core::cache`).
        let skew = w.policy.token.skew_seconds as i64;
        {
            let mut cache = w.cache.borrow_mut();
            cache.sync_keys_generation(w.ring.borrow().generation);
            if let Some(hit) = cache.get(&token_str, now, skew) {
                w.stats.cache_hit();
                return match token::check_scheme_binding(scheme, hit.token.cnf_jkt.as_deref()) {
                    Ok(()) => self.hand_off(hit.handoff(scheme), scheme),
                    Err(r) => Outcome::Deny(r, Some(scheme)),
                };
            }
        }
        let result = token::validate(&w.policy, &*w.ring.borrow(), &w.verifier, presented, now);
        match result {
            Ok(verified) => {
                let cached = CachedToken::new(verified);
                let outcome = self.hand_off(cached.handoff(scheme), scheme);
                if w.policy.token.cache_max_entries > 0 {
                    w.cache
                        .borrow_mut()
                        .insert(token_str.clone(), cached, now, skew);
                }
                outcome
            }
            Err(r @ (Reason::UnknownKey | Reason::KeysUnavailable)) if allow_refetch => {
                // Rotation: a new kid (or keys not loaded yet) triggers a rate-limited refetch;
                // the request waits for it instead of failing straight away.
                // First: another worker may already have fetched newer keys.
                let generation = w.ring.borrow().generation;
                w.sync_shared();
                if w.ring.borrow().generation != generation {
                    self.retry_token = Some((scheme, token_str));
                    return self.check(allow_refetch);
                }
                match issuer_index(&w.policy, &token_str) {
                    Some(i) => {
                        let permitted = match (w.remote(i), w.ring.borrow().issuers.get(i)) {
                            (Some(remote), Some(keys)) => keys.kid_refetch_allowed(now, remote),
                            _ => false,
                        };
                        let call = if permitted {
                            w.start_fetch(i, now, jwks::dispatch)
                        } else {
                            None
                        };
                        match call {
                            Some(t) => {
                                if let Some(k) = w.ring.borrow_mut().issuers.get_mut(i) {
                                    k.note_kid_refetch(now);
                                }
                                self.waiting_fetch = Some((t, i));
                                self.retry_token = Some((scheme, token_str));
                                Outcome::Wait
                            }
                            None => Outcome::Deny(r, Some(scheme)),
                        }
                    }
                    None => Outcome::Deny(r, Some(scheme)),
                }
            }
            Err(r) => Outcome::Deny(r, Some(scheme)),
        }
    }

    fn hand_off(&self, handoff: &[u8], scheme: Scheme) -> Outcome {
        if handoff::store_verified_token_bytes(handoff) {
            Outcome::Allow
        } else {
            // Without the hand-off the next filters would refuse anyway; say why here.
            let _ = proxy_wasm::hostcalls::log(
                LogLevel::Error,
                "fapi_guard.token: host refused filter state",
            );
            Outcome::Deny(Reason::NoVerifiedToken, Some(scheme))
        }
    }

    fn finish(&mut self, outcome: Outcome) -> Action {
        match outcome {
            Outcome::Allow => {
                self.worker.stats.allowed();
                Action::Continue
            }
            Outcome::Deny(r, used) => {
                self.worker.deny(r, used);
                Action::Pause
            }
            Outcome::Public => {
                self.worker.stats.public();
                Action::Continue
            }
            Outcome::Wait => Action::Pause,
        }
    }
}

/// The scheme named in a single `Authorization` header, for the challenge.
fn scheme_of(auth: &[String]) -> Option<Scheme> {
    let first = auth.first()?.split(' ').next()?;
    if first.eq_ignore_ascii_case("DPoP") {
        Some(Scheme::Dpop)
    } else if first.eq_ignore_ascii_case("Bearer") {
        Some(Scheme::Bearer)
    } else {
        None
    }
}

/// The issuer index named by an (unverified) token, to know which keys to refetch.
fn issuer_index(policy: &Policy, token: &str) -> Option<usize> {
    let jws = CompactJws::parse(token).ok()?;
    let iss = jws.payload.get("iss")?.as_str()?;
    policy.issuers.iter().position(|i| i.issuer == iss)
}

impl Context for TokenFilter {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some((t, index)) = self.waiting_fetch else {
            return;
        };
        if t != token_id {
            return;
        }
        self.waiting_fetch = None;
        let (status, body) = jwks::read_answer(body_size);
        self.worker
            .finish_fetch(index, clock::now_seconds(), status, &body);
        let outcome = self.check(false);
        if let Action::Continue = self.finish(outcome) {
            self.resume_http_request();
        }
    }
}

impl HttpContext for TokenFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let t = fapi_guard_host::stages::now();
        let outcome = self.check(true);
        let action = self.finish(outcome);
        fapi_guard_host::stages::add("token_total", t);
        fapi_guard_host::stages::report(FILTER, "token_total");
        action
    }
}
