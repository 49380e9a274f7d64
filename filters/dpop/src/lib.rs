//! The DPoP filter: RFC 9449 proof-of-possession on every request (docs/checks.md §2), server
//! nonces, the shared `jti` replay cache, and RFC 8705 certificate binding.
//! Runs after the token filter and reads the verified token it left in filter state; the
//! access token is never verified again. Thin: decisions are in `fapi_guard_core::dpop`.

use std::rc::Rc;

use fapi_guard_core::diagnostics;
use fapi_guard_core::dpop::policy::CertSource;
use fapi_guard_core::dpop::proof::PROOF_KEY_CACHE_ENTRIES;
use fapi_guard_core::dpop::replay;
use fapi_guard_core::dpop::{
    evaluate_cached, ClientCert, DpopPolicy, DpopRequest, KeyBudget, Outcome, ProofKeyCache,
    ProofRequest, RequestTarget,
};
use fapi_guard_core::policy::Policy;
use fapi_guard_core::shadow::ShadowRequest;
use fapi_guard_host::shared::HostSharedData;
use fapi_guard_host::{
    clock, config, handoff, reply, request, stages, stats::FilterStats, verify::HostVerifier,
};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

const FILTER: &str = "dpop";

// The entry of this filter's own module (feature `entry`, on by default). The one module
// (`filters/guard`) compiles this file as a module without it and picks `root_context` by root id.
#[cfg(feature = "entry")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| root_context());
}}

/// A new root context of this filter (one per plugin and worker).
pub fn root_context() -> Box<dyn RootContext> {
    Box::new(DpopRoot::default())
}

struct Worker {
    policy: Rc<Policy>,
    dpop: DpopPolicy,
    stats: FilterStats,
    verifier: HostVerifier,
    /// Per proof key live-entry counts on this worker (fairness, `docs/dpop.md`).
    budget: KeyBudget,
    /// Proof headers that passed the header checks, with their parsed key and thumbprint.
    keys: ProofKeyCache,
}

#[derive(Default)]
struct DpopRoot {
    worker: Option<Rc<Worker>>,
}

impl Context for DpopRoot {}

impl RootContext for DpopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(policy) = config::load_policy(FILTER, self.get_plugin_configuration()) else {
            return false;
        };
        // No `dpop` section: the defaults (DPoP required, FAPI algs, 60 s / 10 s window).
        let mut dpop = policy.dpop.clone().unwrap_or_default();
        let ns = fapi_guard_core::dpop::replay_namespace(&policy);
        // The replay digest is keyed so a client cannot aim its `jti`s at one slot: with the
        // nonce secret when there is one, else with a random key all workers share.
        if dpop.replay_key.is_empty() {
            let mut fresh = [0u8; replay::SHARED_KEY_LEN];
            let key = getrandom::fill(&mut fresh)
                .ok()
                .and_then(|()| replay::ensure_shared_key(&HostSharedData, ns, &fresh));
            let Some(key) = key else {
                let _ = proxy_wasm::hostcalls::log(
                    LogLevel::Critical,
                    "fapi_guard.dpop: refusing configuration: no random replay-cache key (host randomness or shared data failed)",
                );
                return false;
            };
            dpop.replay_key = key;
        }
        // Replay-cache keys are created on first use (create-only writes), so an idle proxy
        // holds none; the layout and its memory bound are logged once.
        let _ = proxy_wasm::hostcalls::log(
            LogLevel::Info,
            &format!(
                "fapi_guard.dpop: replay cache {} buckets of {} s x {} slots x {} entries: at most {} live proofs, {} bytes of values",
                dpop.replay.buckets,
                dpop.replay.bucket_seconds,
                dpop.replay.slots,
                dpop.replay.entries_per_slot,
                dpop.replay.capacity(),
                dpop.replay.max_value_bytes()
            ),
        );
        self.worker = Some(Rc::new(Worker {
            policy,
            dpop,
            stats: FilterStats::new(FILTER),
            verifier: HostVerifier::from_env(),
            budget: KeyBudget::new(),
            keys: ProofKeyCache::new(PROOF_KEY_CACHE_ENTRIES),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(DpopFilter {
            worker,
            nonce: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct DpopFilter {
    worker: Rc<Worker>,
    /// A fresh `DPoP-Nonce` to add to the upstream's response (RFC 9449 §9).
    nonce: Option<String>,
}

impl DpopFilter {
    fn decide(&mut self) -> Action {
        let w = self.worker.clone();
        // One host call for every header this filter reads (not one per header); `DPoP` may
        // repeat, and every value is kept so §2.1 can refuse two.
        let t = stages::now();
        let all = request::all_headers();
        stages::add("dpop_headers", t);
        let first = |name: &str| {
            all.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let method = first(":method").unwrap_or_default();
        let path = first(":path").unwrap_or_default();
        let scheme = first(":scheme").unwrap_or_default();
        let authority = first(":authority").unwrap_or_default();
        let dpop_headers: Vec<&str> = all
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("dpop"))
            .map(|(_, v)| v.as_str())
            .collect();
        // docs/checks.md §2.8: forwarded headers are read only when the policy trusts them.
        let (fwd_proto, fwd_host, fwd_prefix) = if w.dpop.trust_forwarded_headers {
            (
                first("x-forwarded-proto"),
                first("x-forwarded-host"),
                first("x-forwarded-prefix"),
            )
        } else {
            (None, None, None)
        };
        let token = handoff::load_verified_token_shared();
        // The client certificate is read only for certificate-bound tokens, from the one
        // source the policy names.
        let (conn_digest, xfcc) = match token.as_ref().and_then(|t| t.cnf_x5t_s256.as_ref()) {
            None => (None, None),
            Some(_) => match w.dpop.cert_source {
                CertSource::Connection => (
                    request::property_string(vec!["connection", "sha256_peer_certificate_digest"]),
                    None,
                ),
                CertSource::Xfcc => {
                    let v: Vec<&str> = all
                        .iter()
                        .filter(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-client-cert"))
                        .map(|(_, v)| v.as_str())
                        .collect();
                    (None, (!v.is_empty()).then(|| v.join(",")))
                }
            },
        };
        let req = DpopRequest {
            proof: ProofRequest {
                method,
                target: RequestTarget {
                    scheme,
                    authority,
                    path,
                    forwarded_proto: fwd_proto,
                    forwarded_host: fwd_host,
                    forwarded_prefix: fwd_prefix,
                },
                dpop_headers: &dpop_headers,
            },
            client_cert: ClientCert {
                connection_sha256_hex: conn_digest.as_deref(),
                xfcc: xfcc.as_deref(),
            },
        };
        let now = clock::now_seconds();
        let t = stages::now();
        // Before the proof: no method override the server executes instead of `method`, the
        // method `htm` must name (`Policy::route`; docs/checks.md "Reading the request as the
        // server does"), so this filter is safe on its own too.
        let query = path.split_once('?').map_or("", |(_, q)| q);
        let has_header = |n: &str| first(n).is_some();
        let overridden = w.policy.server().profile().overrides(&has_header, query);
        let decision = if overridden {
            Err(fapi_guard_core::dpop::Denial {
                reason: fapi_guard_core::denial::Reason::MethodOverride,
                nonce: None,
                retry_after: None,
            })
        } else {
            evaluate_cached(
                &w.policy,
                &w.dpop,
                &req,
                token.as_deref(),
                &w.verifier,
                &HostSharedData,
                &w.budget,
                &w.keys,
                now,
            )
        };
        stages::add("dpop_evaluate", t);
        fapi_guard_host::gauges::replay_cache(&w.budget, &w.dpop.replay, now);
        match decision {
            Ok(Outcome::Public) => {
                w.stats.public();
                Action::Continue
            }
            Ok(Outcome::Accepted { nonce }) => {
                w.stats.allowed();
                self.nonce = nonce;
                Action::Continue
            }
            Err(denial) => {
                // Safe facts in `diagnostics` (expected htu, iat against the clock).
                let detail = diagnostics::dpop_detail(
                    &w.dpop,
                    method,
                    &req.proof.target,
                    dpop_headers.first().copied(),
                    denial.reason,
                    now,
                );
                let reply = diagnostics::with_detail(
                    &w.policy,
                    denial.reply(&w.policy, &w.dpop),
                    denial.reason,
                    detail.as_deref(),
                );
                // Dry run (`mode: shadow`): decided and counted, the request passes.
                // A non-canonical path is refused in every mode (docs/checks.md, "Path
                // canonicalisation"): it is no decision an API owner rolls out.
                let route = w.policy.route(method, path, &has_header).ok();
                let mode = route
                    .as_ref()
                    .map_or(fapi_guard_core::authz::Mode::Enforce, |r| r.mode);
                let who = || ShadowRequest {
                    method: method.to_string(),
                    route: w
                        .policy
                        .route_label(route.as_ref().and_then(|r| r.rule))
                        .to_string(),
                    client_id: token.as_ref().map(|t| t.client_id.clone()),
                    verified: true,
                };
                if reply::deny_or_shadow(FILTER, &w.stats, mode, denial.reason, &reply, who) {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
        }
    }
}

impl Context for DpopFilter {}

impl HttpContext for DpopFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let t = stages::now();
        let action = self.decide();
        stages::add("dpop_total", t);
        stages::report(FILTER, "dpop_total");
        action
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // RFC 9449 §9: a fresh nonce on successful responses too, so clients rotate smoothly.
        if let Some(n) = self.nonce.take() {
            self.set_http_response_header("dpop-nonce", Some(&n));
        }
        Action::Continue
    }
}
