//! The token filter: validates the RFC 9068 access token on every request (docs/checks.md §1)
//! and hands the verified claims to the filters after it through Envoy filter state.
//! Thin: decisions are in `fapi_guard_core::token`; this file only moves data.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use fapi_guard_core::authz::{AuthzDenial, Mode};
use fapi_guard_core::cache::TokenCache;
use fapi_guard_core::challenge::{self, Challenge};
use fapi_guard_core::claims::VerifiedToken;
use fapi_guard_core::denial::{Reason, Scheme};
use fapi_guard_core::diagnostics;
use fapi_guard_core::jwks_store::{self, KeyRing};
use fapi_guard_core::policy::{KeySource, Policy, RequestRoute};
use fapi_guard_core::shadow::{self, ShadowRequest};
use fapi_guard_core::token::{self, Presented};
use fapi_guard_core::token_flow::{self, Checked, KeyFetcher, TokenWorker};
use fapi_guard_host::{
    clock, config, handoff, jwks, reply, stats::FilterStats, verify::HostVerifier,
};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

const FILTER: &str = "token";

// The entry of this filter's own module (feature `entry`, on by default). The one module
// (`filters/guard`) compiles this file as a module without it and picks `root_context` by root id.
#[cfg(feature = "entry")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| root_context());
}}

/// A new root context of this filter (one per plugin and worker).
pub fn root_context() -> Box<dyn RootContext> {
    Box::new(TokenRoot::default())
}

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
        self.policy.remote_jwks(index)
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

    /// Denies (true) or, in shadow mode, records the denial and lets the request pass (false).
    /// `who`: the method, the matching rule, and the presented token (for the shadow log line:
    /// its `client_id` only, marked unverified unless the route's `authz` refused).
    fn deny(
        &self,
        reason: Reason,
        used: Option<Scheme>,
        authz: Option<&AuthzDenial>,
        token: Option<&str>,
        mode: Mode,
        who: (&str, Option<usize>, Option<&str>),
    ) -> bool {
        let c = Challenge {
            required_scope: authz.and_then(|a| a.required_scope.clone()),
            // Safe facts only (docs/reason-codes.md): expected values, times, the kid.
            detail: match authz {
                Some(a) => Some(a.detail.clone()),
                None => {
                    diagnostics::token_detail(&self.policy, token, reason, clock::now_seconds())
                }
            },
            ..Challenge::used(used)
        };
        let reply = challenge::reply(&self.policy, reason, &c);
        let (method, rule, presented) = who;
        reply::deny_or_shadow(FILTER, &self.stats, mode, reason, &reply, || {
            ShadowRequest {
                method: method.to_string(),
                route: self.policy.route_label(rule).to_string(),
                client_id: presented.and_then(shadow::client_id_of),
                verified: authz.is_some(),
            }
        })
    }
}

impl KeyFetcher for Worker {
    fn sync_shared(&self, _ring: &RefCell<KeyRing>) {
        // `ring` is this worker's own `self.ring`.
        Worker::sync_shared(self);
    }

    /// `jwks::start_fetch` decides (core `jwks_store::begin_fetch`) and sends it.
    fn start_fetch(&self, index: usize, now: i64) -> Option<u32> {
        jwks::start_fetch(
            &mut self.ring.borrow_mut(),
            &mut self.in_flight.borrow_mut(),
            index,
            self.remote(index)?,
            now,
        )
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
        let due = jwks_store::due_fetches(&w.policy, &w.ring.borrow(), now);
        for i in due {
            if let Some(token) = KeyFetcher::start_fetch(&*w, i, now) {
                self.calls.push((token, i));
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(TokenFilter {
            worker,
            waiting_fetch: None,
            retry_token: None,
            method: String::new(),
            path: String::new(),
            route: None,
            mode: Mode::Enforce,
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
    method: String,
    path: String,
    /// This request's route (`Policy::route`: the path canonicalised and matched once).
    route: Option<RequestRoute>,
    /// `enforce`, or `shadow` (dry run) for this request's route / policy.
    mode: Mode,
}

enum Outcome {
    Allow,
    Public,
    Deny(Reason, Option<Scheme>),
    /// The route's `authz` refused the verified token.
    DenyAuthz(AuthzDenial, Scheme),
    /// Paused for a key fetch.
    Wait,
}

impl TokenFilter {
    /// The token in the request's `Authorization` header (the one being checked).
    fn presented_token(&self) -> Option<String> {
        match &self.retry_token {
            Some((_, t)) => Some(t.clone()),
            None => self
                .get_http_request_header("authorization")
                .and_then(|a| diagnostics::token_of(&a).map(str::to_string)),
        }
    }

    /// The matching `routes[]` rule, once routed.
    fn rule(&self) -> Option<usize> {
        self.route.as_ref().and_then(|r| r.rule)
    }

    fn check(&mut self, allow_refetch: bool) -> Outcome {
        let w = self.worker.clone();
        let (scheme, token_str) = match &self.retry_token {
            Some((s, t)) => (*s, t.clone()),
            None => {
                // Public routes were let through in `on_http_request_headers` (`Policy::route`).
                // Envoy folds a repeated `Authorization` into one value (`extract` refuses it).
                let auth: Vec<String> = self
                    .get_http_request_header("authorization")
                    .into_iter()
                    .collect();
                match token::extract(&w.policy, &auth, &self.path) {
                    Ok(p) => (p.scheme, p.token.to_string()),
                    Err(r) => return Outcome::Deny(r, token::scheme_named(&auth)),
                }
            }
        };
        let presented = Presented {
            scheme,
            token: &token_str,
        };
        // The sequence (cache, binding, validation, keys from other workers, refetch) is
        // `token_flow::check`; this only hands the accepted token on and applies the route.
        let worker = TokenWorker {
            policy: &w.policy,
            ring: &w.ring,
            cache: &w.cache,
            verifier: &w.verifier,
        };
        let checked = token_flow::check(
            &worker,
            &*w,
            presented,
            clock::now_seconds(),
            allow_refetch,
            &mut || w.stats.cache_hit(),
            &mut |t, scheme| match self.hand_off(t.handoff(scheme), scheme) {
                Outcome::Allow => self.authorize(&t.token, scheme),
                other => other,
            },
        );
        match checked {
            Checked::Accepted(outcome) => outcome,
            Checked::Denied(r, scheme) => Outcome::Deny(r, Some(scheme)),
            Checked::WaitForKeys { call, issuer } => {
                self.waiting_fetch = Some((call, issuer));
                self.retry_token = Some((scheme, token_str));
                Outcome::Wait
            }
        }
    }

    /// The matching route's `authz` (checks.md §4), on the verified token
    /// (`Policy::authorize_route`, on the route found at request headers).
    fn authorize(&self, token: &VerifiedToken, scheme: Scheme) -> Outcome {
        let Some(route) = &self.route else {
            // Never: `check` runs only after the route was found. Fail closed.
            return Outcome::Deny(Reason::PathNotCanonical, Some(scheme));
        };
        let header = |name: &str| self.get_http_request_header(name);
        match self.worker.policy.authorize_route(route, &header, token) {
            Ok(()) => Outcome::Allow,
            Err(d) => Outcome::DenyAuthz(d, scheme),
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
                let token = self.presented_token();
                let who = (self.method.as_str(), self.rule(), token.as_deref());
                if self
                    .worker
                    .deny(r, used, None, token.as_deref(), self.mode, who)
                {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
            Outcome::DenyAuthz(d, used) => {
                let token = self.presented_token();
                let who = (self.method.as_str(), self.rule(), token.as_deref());
                if self
                    .worker
                    .deny(d.reason, Some(used), Some(&d), None, self.mode, who)
                {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
            Outcome::Public => {
                self.worker.stats.public();
                Action::Continue
            }
            Outcome::Wait => Action::Pause,
        }
    }
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
            // In the chain plugin the driver resumes once the later steps let it go.
            fapi_guard_host::chain::resume_request();
        }
    }
}

impl HttpContext for TokenFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let t = fapi_guard_host::stages::now();
        self.path = self.get_http_request_header(":path").unwrap_or_default();
        self.method = self.get_http_request_header(":method").unwrap_or_default();
        // First, on every route: the one canonical path and no method override the server
        // would execute (docs/checks.md). A fault is refused in every mode, on public routes
        // too: it is no decision an API owner rolls out.
        let has_header = |name: &str| self.get_http_request_header(name).is_some();
        let route = match self
            .worker
            .policy
            .route(&self.method, &self.path, &has_header)
        {
            Ok(route) => route,
            Err(f) => {
                self.mode = Mode::Enforce;
                return self.finish(Outcome::Deny(f.reason(), None));
            }
        };
        self.mode = route.mode;
        if route.public {
            return self.finish(Outcome::Public);
        }
        // `unmatched: deny` (docs/checks.md §4): a path no rule lists is refused before the
        // token is read; in shadow mode it is counted and the token is still checked.
        if route.unlisted {
            let token = self.presented_token();
            let who = (self.method.as_str(), None, token.as_deref());
            if self
                .worker
                .deny(Reason::RouteNotListed, None, None, None, self.mode, who)
            {
                return Action::Pause;
            }
        }
        self.route = Some(route);
        let outcome = self.check(true);
        let action = self.finish(outcome);
        fapi_guard_host::stages::add("token_total", t);
        fapi_guard_host::stages::report(FILTER, "token_total");
        action
    }
}
