//! The FHIR scope filter (docs/checks.md §3): SMART v1/v2 scopes against the FHIR REST
//! interaction, and patient-compartment enforcement (BOLA). Runs after the token filter and
//! reads the verified token it left in filter state. Thin: decisions are in
//! `fapi_guard_core::fhir`; this file buffers bodies and moves data.
//!
//! - Request: `decide` on the headers; if it needs the body (bundle, `_search` form, writes
//!   under a patient grant), the body is buffered (up to `max_request_body_bytes`) and the
//!   decision is made at end of stream.
//! - Response: for reads the request cannot decide, the response headers are held and the
//!   body buffered (up to `response_check.max_body_bytes`); at end of stream it is passed
//!   unchanged or replaced as a whole by the denial (nothing of the body reaches the client).
//! - Read before write: an update, patch or delete by id under a patient or query-constrained
//!   grant is held (after its body was checked) while the filter GETs the stored resource from
//!   `fhir.read_before_write_cluster` (same path; a conditional write searches with its own
//!   criteria; only the headers `fhir.read_before_write_headers` names); the request is
//!   resumed only if `check_stored` accepts the answer, else refused (fail closed).
//! - Either direction may end with trailers instead of END_STREAM on DATA (HTTP/2, HTTP/1.1
//!   chunked): every body and trailers callback follows `fhir::stream::step`, so the decision
//!   runs however the stream ends and nothing is released undecided (docs/checks.md, "Never
//!   released undecided").

use std::rc::Rc;
use std::time::Duration;

use fapi_guard_core::authz::Mode;
use fapi_guard_core::challenge::{self, Challenge};
use fapi_guard_core::claims::VerifiedToken;
use fapi_guard_core::denial::Reason;
use fapi_guard_core::fhir::exchange::{self, HeldRead};
use fapi_guard_core::fhir::policy::FhirPolicy;
use fapi_guard_core::fhir::stream::{step, Gate, Part, Step};
use fapi_guard_core::fhir::{
    check_response_meta, decide, Decision, Denial, RequestView, ResponseCheck, ResponseMeta,
};
use fapi_guard_core::policy::Policy;
use fapi_guard_core::shadow::ShadowRequest;
use fapi_guard_host::{config, handoff, reply, stats::FilterStats};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

const FILTER: &str = "fhir_scope";
/// How long the stored read before a write may take; no answer in time refuses the write.
const STORED_READ_TIMEOUT: Duration = Duration::from_secs(5);

// The entry of this filter's own module (feature `entry`, on by default). The one module
// (`filters/guard`) compiles this file as a module without it and picks `root_context` by root id.
#[cfg(feature = "entry")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| root_context());
}}

/// A new root context of this filter (one per plugin and worker).
pub fn root_context() -> Box<dyn RootContext> {
    Box::new(FhirRoot::default())
}

struct Worker {
    policy: Rc<Policy>,
    fhir: FhirPolicy,
    stats: FilterStats,
}

impl Worker {
    /// Denies (true), or in `mode: shadow` records the denial and lets the request pass (false).
    fn deny(
        &self,
        token: Option<&VerifiedToken>,
        reason: Reason,
        denial: Option<&Denial>,
        mode: Mode,
        (method, rule): (&str, Option<usize>),
    ) -> bool {
        // The challenge names the scheme the token came with (else every one the API accepts).
        let c = Challenge {
            required_scope: denial.and_then(|d| d.required_scope.clone()),
            detail: denial.map(|d| d.detail.clone()),
            ..Challenge::used(token.map(|t| t.scheme()))
        };
        let reply = challenge::reply(&self.policy, reason, &c);
        reply::deny_or_shadow(FILTER, &self.stats, mode, reason, &reply, || {
            ShadowRequest {
                method: method.to_string(),
                route: self.policy.route_label(rule).to_string(),
                client_id: token.map(|t| t.client_id.clone()),
                verified: true,
            }
        })
    }
}

#[derive(Default)]
struct FhirRoot {
    worker: Option<Rc<Worker>>,
}

impl Context for FhirRoot {}

impl RootContext for FhirRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(policy) = config::load_policy(FILTER, self.get_plugin_configuration()) else {
            return false;
        };
        // Fail closed: this filter without a `fhir` section would have nothing to enforce.
        let Some(fhir) = policy.fhir.clone() else {
            let _ = proxy_wasm::hostcalls::log(
                LogLevel::Critical,
                "fapi_guard.fhir_scope: refusing configuration: policy field `fhir`: required by the FHIR scope filter",
            );
            return false;
        };
        self.worker = Some(Rc::new(Worker {
            policy,
            fhir,
            stats: FilterStats::new(FILTER),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(FhirFilter {
            worker,
            token: None,
            method: String::new(),
            path: String::new(),
            authority: String::new(),
            stored_read_headers: Vec::new(),
            if_none_exist: None,
            content_type: None,
            request_gate: Gate::Open,
            response_gate: Gate::Open,
            check: None,
            stored: None,
            status: 0,
            security_context: None,
            mode: Mode::Enforce,
            rule: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FhirFilter {
    worker: Rc<Worker>,
    token: Option<Rc<VerifiedToken>>,
    method: String,
    path: String,
    /// Kept from the headers: the stored read may be sent from the body callback, when the
    /// headers can no longer be read (they went on already if not held).
    authority: String,
    /// `fhir.read_before_write_headers` copied from the request (chosen in core).
    stored_read_headers: Vec<(String, String)>,
    if_none_exist: Option<String>,
    content_type: Option<String>,
    /// Where the request's decision stands: `Buffering` waits for the whole body, `Waiting`
    /// for the stored read, `Closed` after a refusal (nothing more of the request goes on).
    request_gate: Gate,
    /// `Buffering` while the response must pass `check` before anything of it goes on. After
    /// a refusal it is `Open`: what follows is the filter's own reply.
    response_gate: Gate,
    /// The response must pass this check before anything of it reaches the client.
    check: Option<ResponseCheck>,
    /// The request is held until the read before it (call token: a write's stored read, a
    /// HEAD's GET) answers and passes this.
    stored: Option<(u32, HeldRead)>,
    status: u32,
    /// The response's `X-Security-Context` (a Binary served as raw bytes, R4 binary.html).
    security_context: Option<String>,
    /// `enforce`, or `shadow` (dry run) for this request's route / policy.
    mode: Mode,
    /// The matching `routes[]` rule (for the shadow log line).
    rule: Option<usize>,
}

impl FhirFilter {
    fn decide(&mut self, body: Option<&[u8]>) -> Decision {
        let view = RequestView {
            method: &self.method,
            path_with_query: &self.path,
            if_none_exist: self.if_none_exist.as_deref(),
            content_type: self.content_type.as_deref(),
            body,
        };
        decide(&self.worker.fhir, self.token.as_deref(), &view)
    }

    fn deny(&mut self, reason: Reason, denial: Option<&Denial>) -> Action {
        self.check = None;
        self.stored = None;
        if self.worker.deny(
            self.token.as_deref(),
            reason,
            denial,
            self.mode,
            (&self.method, self.rule),
        ) {
            self.request_gate = Gate::Closed;
            self.response_gate = Gate::Open;
            Action::Pause
        } else {
            // Dry run (`mode: shadow`): counted and logged, the stream goes on; a request held
            // for a stored read is released by the caller.
            self.request_gate = Gate::Open;
            self.response_gate = Gate::Open;
            Action::Continue
        }
    }

    /// Applies a decision made with the body present (or known empty).
    fn apply(&mut self, d: Decision) -> Action {
        match d {
            Decision::Allow => {
                self.worker.stats.allowed();
                self.request_gate = Gate::Open;
                Action::Continue
            }
            Decision::AllowIfResponseMatches(c) => {
                // Allowed so far; the count for the response check is under `response_checked`.
                FilterStats::bump(FILTER, "response_checked");
                // Conditional-read headers removed, `Prefer: handling=strict` on searchsets.
                // `_elements` extended with what the check reads: the client's `:path` as sent
                // (the DPoP step before this one has checked `htu` on it).
                let prefer = self.get_http_request_header("prefer");
                let path = self.get_http_request_header(":path").unwrap_or_default();
                let edits = exchange::response_check_request_edits(
                    &self.worker.fhir,
                    &c,
                    prefer.as_deref(),
                    &path,
                );
                for (name, value) in edits {
                    self.set_http_request_header(name, value.as_deref());
                }
                self.check = Some(c);
                self.request_gate = Gate::Open;
                self.response_gate = Gate::Buffering;
                Action::Continue
            }
            Decision::AllowIfStoredMatches(c) => self.read_stored(HeldRead::Stored(c)),
            Decision::AllowIfReadMatches(c) => self.read_stored(HeldRead::Head(c)),
            // Only asked for without a body; with one it is a request we cannot read.
            Decision::NeedBody => self.deny(Reason::UnknownFhirRequest, None),
            Decision::Deny(d) => self.deny(d.reason, Some(&d)),
        }
    }
}

impl FhirFilter {
    /// Read before write (docs/checks.md §3, BOLA): GET the stored resource and hold the request;
    /// for a HEAD decided like GET, GET the same path and query. No `Authorization`/`DPoP` is
    /// forwarded (a proof is bound to the client's request and would be a replay); the API
    /// must serve this internal read from the sidecar.
    fn read_stored(&mut self, c: HeldRead) -> Action {
        let path = c.path(&self.path);
        let owned = c.headers(&path, &self.authority, &self.stored_read_headers);
        let headers: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let cluster = self.worker.fhir.read_before_write_cluster.clone();
        match self.dispatch_http_call(&cluster, headers, None, vec![], STORED_READ_TIMEOUT) {
            Ok(token) => {
                FilterStats::bump(FILTER, "stored_read");
                self.stored = Some((token, c));
                self.request_gate = Gate::Waiting;
                Action::Pause
            }
            Err(e) => {
                let _ = proxy_wasm::hostcalls::log(
                    LogLevel::Warn,
                    &format!(
                        "fapi_guard.{FILTER}: stored read could not be sent (cluster `{cluster}`): {e:?}"
                    ),
                );
                let detail = c.denial(Reason::StoredReadFailed, &self.what());
                self.deny(Reason::StoredReadFailed, Some(&detail))
            }
        }
    }

    /// `read Observation`, for denials decided on the response (no ids).
    fn what(&self) -> String {
        exchange::request_label(&self.worker.fhir, &self.method, &self.path)
    }
}

impl Context for FhirFilter {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some((token, check)) = self.stored.take() else {
            return;
        };
        if token != token_id || self.request_gate != Gate::Waiting {
            return;
        }
        // No headers: the call failed or timed out (fails closed).
        let status = if num_headers == 0 {
            None
        } else {
            self.get_http_call_response_header(":status")
                .and_then(|s| s.parse().ok())
        };
        let verdict = check.check_answer(&self.worker.fhir, status, body_size, || {
            self.get_http_call_response_body(0, body_size)
                .unwrap_or_default()
        });
        match verdict {
            Ok(()) => {
                self.worker.stats.allowed();
                self.request_gate = Gate::Open;
                fapi_guard_host::chain::resume_request();
            }
            Err(reason) => {
                let detail = check.denial(reason, &self.what());
                if let Action::Continue = self.deny(reason, Some(&detail)) {
                    fapi_guard_host::chain::resume_request();
                }
            }
        }
    }
}

impl HttpContext for FhirFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let _timed = fapi_guard_host::stages::Guard::new(FILTER, "fhir_total");
        self.method = self.get_http_request_header(":method").unwrap_or_default();
        // First, on every route: the one canonical path (docs/checks.md). Route matching and
        // FHIR classification use it (decoded path, raw query), never the raw `:path`.
        let raw = self.get_http_request_header(":path").unwrap_or_default();
        let has_header = |name: &str| self.get_http_request_header(name).is_some();
        let routed = self.worker.policy.route(&self.method, &raw, &has_header);
        let (public, plain) = match routed {
            Ok(route) => {
                self.path = route.path_with_query;
                self.mode = route.mode;
                self.rule = route.rule;
                (route.public, route.plain)
            }
            Err(f) => {
                let denial = Denial {
                    reason: f.reason(),
                    required_scope: None,
                    detail: f.detail().to_string(),
                };
                return self.deny(f.reason(), Some(&denial));
            }
        };
        if public {
            self.worker.stats.public();
            return Action::Continue;
        }
        if !plain {
            // FHIR types, ids and operations never need percent-encoding (docs/checks.md).
            let denial = Denial {
                reason: Reason::UnknownFhirRequest,
                required_scope: None,
                detail: "percent-encoded path segment".to_string(),
            };
            return self.deny(Reason::UnknownFhirRequest, Some(&denial));
        }
        self.if_none_exist = self.get_http_request_header("if-none-exist");
        self.content_type = self.get_http_request_header("content-type");
        self.authority = self
            .get_http_request_header(":authority")
            .unwrap_or_default();
        if !self.worker.fhir.read_before_write_headers.is_empty() {
            self.stored_read_headers = self
                .worker
                .fhir
                .stored_read_headers(&self.get_http_request_headers());
        }
        self.token = handoff::load_verified_token_shared();
        let first = self.decide(None);
        if matches!(
            first,
            Decision::NeedBody | Decision::AllowIfResponseMatches(_)
        ) {
            // The response may have to be read: ask the upstream for an unencoded body.
            self.set_http_request_header("accept-encoding", None);
        }
        match first {
            Decision::NeedBody if end_of_stream => {
                let d = self.decide(Some(&[]));
                self.apply(d)
            }
            Decision::NeedBody => {
                self.request_gate = Gate::Buffering;
                if self.worker.fhir.hold_headers_while_buffering {
                    Action::Pause
                } else {
                    // The host would not deliver the body to a paused filter: let the headers
                    // go on and hold the body; a refusal then resets the upstream request
                    // before it has its body.
                    Action::Continue
                }
            }
            d => self.apply(d),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match step(self.request_gate, Part::Data { end_of_stream }) {
            Step::Release => Action::Continue,
            // Envoy keeps buffering while the filter pauses on body data.
            Step::Hold if self.request_gate == Gate::Buffering => {
                if body_size > self.worker.fhir.max_request_body_bytes {
                    return self.deny(Reason::RequestTooLarge, None);
                }
                Action::Pause
            }
            Step::Hold => Action::Pause,
            Step::Decide => {
                if body_size > self.worker.fhir.max_request_body_bytes {
                    return self.deny(Reason::RequestTooLarge, None);
                }
                let body = self.get_http_request_body(0, body_size).unwrap_or_default();
                self.decide_request_body(body)
            }
        }
    }

    /// The request ended with trailers (HTTP/2 HEADERS after DATA, HTTP/1.1 chunked trailer
    /// section): decide on the body buffered so far; the trailers are held until then.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        match step(self.request_gate, Part::Trailers) {
            Step::Release => Action::Continue,
            Step::Hold => Action::Pause,
            Step::Decide => {
                let limit = self.worker.fhir.max_request_body_bytes;
                let body = self
                    .get_http_request_body(0, limit.saturating_add(1))
                    .unwrap_or_default();
                if body.len() > limit {
                    return self.deny(Reason::RequestTooLarge, None);
                }
                self.decide_request_body(body)
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if self.response_gate != Gate::Buffering || self.check.is_none() {
            return Action::Continue;
        }
        self.status = self
            .get_http_response_header(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        self.security_context = self.get_http_response_header("x-security-context");
        // An encoded body cannot be read, a declared length over the limit is refused.
        if let Err(reason) = exchange::check_response_headers(
            &self.worker.fhir,
            self.get_http_response_header("content-encoding").as_deref(),
            self.get_http_response_header("content-length").as_deref(),
        ) {
            return self.deny(reason, None);
        }
        if end_of_stream {
            return self.finish_response(&[]);
        }
        if self.worker.fhir.hold_headers_while_buffering {
            // Hold the headers until the body has been checked.
            Action::Pause
        } else {
            // Headers go on; the body is held. A refusal now resets the stream.
            Action::Continue
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match step(self.response_gate, Part::Data { end_of_stream }) {
            Step::Release => Action::Continue,
            Step::Hold | Step::Decide if body_size > self.worker.fhir.max_response_bytes => {
                self.deny(Reason::ResponseTooLarge, None)
            }
            Step::Hold => Action::Pause,
            Step::Decide => {
                let body = self
                    .get_http_response_body(0, body_size)
                    .unwrap_or_default();
                self.finish_response(&body)
            }
        }
    }

    /// The response ended with trailers (an HTTP/2 or chunked upstream): check the body
    /// buffered so far; the trailers (and all held before them) go on only if it passes.
    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        match step(self.response_gate, Part::Trailers) {
            Step::Release => Action::Continue,
            Step::Hold => Action::Pause,
            Step::Decide => {
                let limit = self.worker.fhir.max_response_bytes;
                let body = self
                    .get_http_response_body(0, limit.saturating_add(1))
                    .unwrap_or_default();
                if body.len() > limit {
                    return self.deny(Reason::ResponseTooLarge, None);
                }
                self.finish_response(&body)
            }
        }
    }
}

impl FhirFilter {
    /// Decides the request on its whole body (buffered; ended by DATA or trailers).
    fn decide_request_body(&mut self, body: Vec<u8>) -> Action {
        self.request_gate = Gate::Open;
        let d = self.decide(Some(&body));
        self.apply(d)
    }

    fn finish_response(&mut self, body: &[u8]) -> Action {
        let Some(check) = self.check.take() else {
            // Buffering without a check cannot happen; fail closed if it does.
            return self.deny(Reason::ResponseOutsideGrant, None);
        };
        let meta = ResponseMeta {
            security_context: self.security_context.as_deref(),
        };
        match check_response_meta(&self.worker.fhir, &check, self.status, &meta, body) {
            Ok(()) => {
                self.worker.stats.allowed();
                self.response_gate = Gate::Open;
                Action::Continue
            }
            Err(reason) => {
                let detail = exchange::response_denial(reason, &self.what());
                self.deny(reason, Some(&detail))
            }
        }
    }
}
