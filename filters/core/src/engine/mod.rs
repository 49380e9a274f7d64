//! The guard's one pipeline (docs/checks.md "One pipeline"): the checks of one request and
//! its response, in chain order (route → token → DPoP → FHIR scope, then the response), as a
//! resumable state machine without I/O. It takes inputs (the request's headers, body and
//! trailers, the JWKS and stored-read answers, the clock) and answers with an [`Output`]:
//! continue, hold, reply, fetch keys, read stored, set headers. Each I/O world is a thin driver:
//! the Wasm host (`filters/guard`) maps proxy-wasm callbacks to these calls and their outputs
//! to host calls; the explainer (`crate::explain`) drives the same calls in memory and records
//! every check through the trace hook ([`trace::Tracer`]), so it agrees with Envoy by
//! construction.
//!
//! The rules of the sequence (think "never released undecided"):
//! - A step that holds (keys being fetched, a stored read) holds the whole stream; the steps
//!   after it run when it lets go, and the stream goes on only once every step has.
//! - Request body and trailers that arrive while an earlier step decides are held and given to
//!   the FHIR scope step once it has the headers (at once if the stream already ended).
//! - A refusal ends the stream with a local reply, except in dry run (`mode: shadow`): the
//!   first refusal of a request is counted and logged, and the later steps still decide
//!   without counting it again.
//! - The response goes through the FHIR scope step first; the DPoP step's `DPoP-Nonce` is set
//!   on the response headers once the FHIR scope step has let them go.
//! - The audit record is handed out once the decision is final; when it reads the response
//!   body for its patients (`audit_body`), at the response's end.
//!
//! The partition step (`fapi_guard:partition`, `partition_step.rs`) is not a step of the chain:
//! it runs alone at the layer in front of the replicas, sets their routing key and lets every
//! request go (docs/dpop.md, "Replay across replicas").

pub mod audit;
mod audit_body;
mod deny;
mod dpop_step;
mod fhir_step;
mod partition_step;
mod token_step;
pub mod trace;
mod worker;

use std::rc::Rc;

use crate::authz::Mode;
use crate::claims::VerifiedToken;
use crate::denial::{Reason, Reply};
use crate::jose::SignatureVerifier;
use crate::policy::RequestRoute;
use crate::shared_store::SharedStore;

pub use crate::dpop::replay_store::StoreCall;
pub use crate::root_id::ChainSteps;
pub use partition_step::{partition_key, PARTITION_HEADER};
pub use worker::Worker;

/// A step of the chain; its name is the stats prefix `fapi_guard.<name>.` and the `filter` of
/// a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepName {
    Token,
    Dpop,
    FhirScope,
}

impl StepName {
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Token => "token",
            StepName::Dpop => "dpop",
            StepName::FhirScope => "fhir_scope",
        }
    }
}

/// A counter the host keeps (Envoy stats, `fapi_guard.<step>.<counter>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    Allowed,
    Public,
    CacheHit,
    Denied(Reason),
    ShadowDenied(Reason),
    /// A named counter (`response_checked`).
    Named(&'static str),
}

/// Log levels of the lines the pipeline writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

/// What the pipeline asks of its driver synchronously, during a call.
pub trait Env {
    type Store: SharedStore;
    /// The proxy clock, seconds since the epoch.
    fn now(&self) -> i64;
    fn verifier(&self) -> &dyn SignatureVerifier;
    /// Data all workers share (JWKS documents and leases, the DPoP replay cache).
    fn store(&self) -> &Self::Store;
    fn count(&self, step: StepName, count: Count);
    fn log(&self, level: Level, line: &str);
    /// The trace hook: `Some` only when every check is to be recorded (the explainer).
    fn tracer(&self) -> Option<&dyn trace::Tracer> {
        None
    }
    /// `replay_scope: api`: the id of the store lease a claim made now may use (one that
    /// outlives the `iat` window, `dpop::replay_store::Lease::usable`); `None`: none yet.
    fn replay_lease(&self) -> Option<i64> {
        None
    }
}

/// The stream as the driver holds it, read on demand (a header no decision needs is never
/// copied). Names are lower-case.
pub trait Exchange {
    fn request_header(&self, name: &str) -> Option<String>;
    /// Every request header, in order (repeated ones as separate entries).
    fn request_headers(&self) -> Vec<(String, String)>;
    /// The first `max` bytes of the request body buffered so far.
    fn request_body(&self, max: usize) -> Vec<u8>;
    fn response_header(&self, name: &str) -> Option<String>;
    /// The first `max` bytes of the response body buffered so far.
    fn response_body(&self, max: usize) -> Vec<u8>;
    /// `connection.sha256_peer_certificate_digest` (hex), read only for certificate-bound tokens.
    fn peer_certificate_sha256(&self) -> Option<String>;
}

/// A read the FHIR scope step sends before it decides (a write's stored resource, a HEAD's GET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRead {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
}

/// What the driver does with the stream after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Let the part go on (after a hold: resume the stream).
    Continue,
    /// Keep it (the host buffers) until a later call lets it go.
    Hold,
    /// Send this local reply; the stream ends here.
    Reply(Reply),
    /// Hold, and fetch issuer `issuer`'s JWKS; then [`Pipeline::on_keys`].
    FetchKeys { issuer: usize },
    /// Hold, and send this read; then [`Pipeline::on_stored_answer`].
    ReadStored(StoredRead),
    /// Hold, and send this claim of the proof to the replay store (`replay_scope: api`);
    /// then [`Pipeline::on_claim_answer`].
    ClaimProof(StoreCall),
}

/// A call's answer: the action, and header edits to make first (value `None`: remove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub action: Action,
    pub request_headers: Vec<(&'static str, Option<String>)>,
    pub response_headers: Vec<(&'static str, Option<String>)>,
}

impl Output {
    fn new(action: Action) -> Output {
        Output {
            action,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        }
    }
}

/// The answer of a stored read (`None` status: not sent, failed or timed out).
pub struct StoredAnswer<'a> {
    pub status: Option<u32>,
    pub body_size: usize,
    pub body: &'a dyn Fn() -> Vec<u8>,
}

/// Where the request headers stand in the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Not routed yet.
    Start,
    /// This step decides (or holds) the request headers.
    At(StepName),
    /// Every step let the request headers go (or the route is public).
    Passed,
}

/// A step's answer on the request headers.
enum Flow {
    /// The step let the request go: on to the next.
    Next,
    /// The step holds or refused: the chain stops here for now.
    Stop(Action),
}

/// One request's pass through the chain. Create one per stream ([`Pipeline::new`]).
pub struct Pipeline {
    stage: Stage,
    /// A local reply was sent: nothing more of the stream goes on.
    ended: bool,
    headers_eos: bool,
    /// Body the host buffered while an earlier step decided: (bytes so far, end of stream).
    pending_body: Option<(usize, bool)>,
    pending_trailers: bool,
    method: String,
    /// `:path` as sent.
    raw_path: String,
    route: Option<RequestRoute>,
    mode: Mode,
    /// The verified token of this stream (the token step's).
    token: Option<Rc<VerifiedToken>>,
    /// A shadow refusal of this stream was recorded (later steps do not count it again).
    shadow_refused: bool,
    tok: token_step::State,
    dpop_nonce: Option<String>,
    fhir: fhir_step::State,
    /// The FHIR scope step's last answer on the request (Continue: it lets the request go).
    fhir_action: Action,
    /// The FHIR scope step holds the response headers (the DPoP nonce waits for them).
    response_held: bool,
    /// The audit record's facts ([`Pipeline::take_audit`]).
    audit: audit::Trail,
    /// The bodies the record reads patients from.
    watch: audit_body::Watch,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline::new()
    }
}

impl Pipeline {
    pub fn new() -> Pipeline {
        Pipeline {
            stage: Stage::Start,
            ended: false,
            headers_eos: false,
            pending_body: None,
            pending_trailers: false,
            method: String::new(),
            raw_path: String::new(),
            route: None,
            mode: Mode::Enforce,
            token: None,
            shadow_refused: false,
            tok: token_step::State::default(),
            dpop_nonce: None,
            fhir: fhir_step::State::default(),
            fhir_action: Action::Continue,
            response_held: false,
            audit: audit::Trail::default(),
            watch: audit_body::Watch::default(),
        }
    }

    /// The verified token of this stream, once the token step accepted it.
    pub fn verified_token(&self) -> Option<&VerifiedToken> {
        self.token.as_deref()
    }

    /// The request headers arrived (`end_of_stream`: no body follows).
    pub fn on_request_headers<E: Env>(
        &mut self,
        w: &Worker,
        env: &E,
        x: &dyn Exchange,
        end_of_stream: bool,
    ) -> Output {
        if w.partitions() {
            // Alone at the layer in front of the replicas: no route, no check, no audit.
            return partition_step::request_headers(x, &w.partition_headers);
        }
        self.headers_eos = end_of_stream;
        self.method = x.request_header(":method").unwrap_or_default();
        self.raw_path = x.request_header(":path").unwrap_or_default();
        let mut out = Output::new(Action::Continue);
        // Every step first: the one canonical path and no method override the server would
        // execute (docs/checks.md "Path canonicalisation", "Reading the request as the server
        // does"). Refused in every mode, on public routes too.
        let has_header = |name: &str| x.request_header(name).is_some();
        let route = match w.policy.route(&self.method, &self.raw_path, &has_header) {
            Ok(route) => route,
            Err(f) => {
                self.audit_ids(w, x);
                trace::route_fault(env, &f);
                self.mode = Mode::Enforce;
                let refusal = deny::request_fault_reply(w, env, &f);
                out.action = deny::refuse(self, w, env, refusal);
                return out;
            }
        };
        self.mode = route.mode;
        if route.public {
            trace::route(env, true, false);
            for step in w.steps() {
                env.count(step, Count::Public);
            }
            self.stage = Stage::Passed;
            return out;
        }
        trace::route(env, false, route.unlisted);
        self.route = Some(route);
        self.audit_ids(w, x);
        self.stage = Stage::At(w.first_step());
        out.action = self.advance(w, env, x, &mut out);
        out
    }

    /// The JWKS fetch the pipeline asked for was answered and applied to the worker's keys
    /// (`Worker::fetch_answered`), or could not be sent: the token step decides again.
    pub fn on_keys<E: Env>(&mut self, w: &Worker, env: &E, x: &dyn Exchange) -> Output {
        self.resume(w, env, x, StepName::Token, |p| {
            token_step::decide(p, w, env, x, false)
        })
    }

    /// A step held the request for a callout that answered: it decides again (`decide`) and,
    /// if it lets the request go, the steps after it run. Ignored unless that step holds it.
    fn resume<E: Env>(
        &mut self,
        w: &Worker,
        env: &E,
        x: &dyn Exchange,
        step: StepName,
        decide: impl FnOnce(&mut Self) -> Flow,
    ) -> Output {
        let mut out = Output::new(Action::Hold);
        if self.ended || self.stage != Stage::At(step) {
            return out;
        }
        out.action = match decide(self) {
            Flow::Next => {
                self.stage = self.after(w, step);
                self.advance(w, env, x, &mut out)
            }
            Flow::Stop(a) => a,
        };
        out
    }

    /// Request body data (`size`: all buffered so far).
    pub fn on_request_body<E: Env>(
        &mut self,
        w: &Worker,
        env: &E,
        x: &dyn Exchange,
        size: usize,
        end_of_stream: bool,
    ) -> Output {
        let mut out = Output::new(Action::Hold);
        if self.ended {
            return out;
        }
        if matches!(self.stage, Stage::At(_)) {
            // An earlier step still decides: hold; the FHIR scope step gets it later.
            self.pending_body = Some((size, end_of_stream));
            return out;
        }
        if !w.has(StepName::FhirScope) || self.route.is_none() {
            out.action = Action::Continue;
            return out;
        }
        out.action = fhir_step::request_body(self, w, env, x, size, end_of_stream, &mut out);
        self.fhir_action = out.action.clone();
        out
    }

    /// The request ended with trailers.
    pub fn on_request_trailers<E: Env>(&mut self, w: &Worker, env: &E, x: &dyn Exchange) -> Output {
        let mut out = Output::new(Action::Hold);
        if self.ended {
            return out;
        }
        if matches!(self.stage, Stage::At(_)) {
            self.pending_trailers = true;
            return out;
        }
        if !w.has(StepName::FhirScope) || self.route.is_none() {
            out.action = Action::Continue;
            return out;
        }
        out.action = fhir_step::request_trailers(self, w, env, x, &mut out);
        self.fhir_action = out.action.clone();
        out
    }

    /// The stored read the pipeline asked for answered (or was not sent).
    pub fn on_stored_answer<E: Env>(
        &mut self,
        w: &Worker,
        env: &E,
        answer: &StoredAnswer<'_>,
    ) -> Output {
        let mut out = Output::new(Action::Hold);
        if self.ended {
            return out;
        }
        out.action = fhir_step::stored_answer(self, w, env, answer);
        self.fhir_action = out.action.clone();
        out
    }

    /// The replay store answered the claim the pipeline asked for (`status` `None`: not
    /// sent, failed or timed out; fails closed): first use goes on to the next step.
    pub fn on_claim_answer<E: Env>(
        &mut self,
        w: &Worker,
        env: &E,
        x: &dyn Exchange,
        status: Option<u32>,
        body: &[u8],
    ) -> Output {
        self.resume(w, env, x, StepName::Dpop, |p| {
            dpop_step::claim_answered(p, w, env, status, body)
        })
    }

    pub fn on_response_headers<E: Env>(
        &mut self,
        w: &Worker,
        env: &E,
        x: &dyn Exchange,
        end_of_stream: bool,
    ) -> Output {
        let mut out = Output::new(Action::Continue);
        if w.has(StepName::FhirScope) {
            out.action = fhir_step::response_headers(self, w, env, x, end_of_stream);
            if out.action != Action::Continue {
                // Held for the response check (or refused: what follows is the reply).
                self.response_held = out.action == Action::Hold;
                return out;
            }
        }
        // The response goes on unchecked: the decision is final (once the record has read it).
        self.response_final(&out);
        self.nonce_edit(&mut out);
        out
    }

    pub fn on_response_body<E: Env>(
        &mut self,
        w: &Worker,
        env: &E,
        x: &dyn Exchange,
        size: usize,
        end_of_stream: bool,
    ) -> Output {
        let mut out = Output::new(Action::Continue);
        if w.has(StepName::FhirScope) {
            out.action = fhir_step::response_body(self, w, env, x, size, end_of_stream);
            self.response_final(&out);
            self.after_response_check(&mut out);
        }
        out
    }

    pub fn on_response_trailers<E: Env>(
        &mut self,
        w: &Worker,
        env: &E,
        x: &dyn Exchange,
    ) -> Output {
        let mut out = Output::new(Action::Continue);
        if w.has(StepName::FhirScope) {
            out.action = fhir_step::response_trailers(self, w, env, x);
            self.response_final(&out);
            self.after_response_check(&mut out);
        }
        out
    }

    /// A response part went on: the decision is final once no check and no record reading
    /// waits for the rest of the body.
    fn response_final(&mut self, out: &Output) {
        if out.action == Action::Continue
            && !self.fhir.response_pending()
            && !self.watch.resp.active()
        {
            self.audit.done = true;
        }
    }

    /// The FHIR scope step let go of response headers it held: the nonce goes on them now.
    fn after_response_check(&mut self, out: &mut Output) {
        if out.action == Action::Continue && std::mem::take(&mut self.response_held) {
            self.audit.done = true;
            self.nonce_edit(out);
        }
    }

    /// A protected request (or one refused before routing): it gets an audit record.
    fn audit_ids(&mut self, w: &Worker, x: &dyn Exchange) {
        self.audit.protected = w.policy.audit.record;
        self.audit.request_id = x.request_header("x-request-id");
        self.audit.traceparent = x.request_header("traceparent");
    }

    /// The stream's audit record, once, when its decision is final (a reply was sent, or the
    /// response went on past every check); the driver calls it after every call.
    pub fn take_audit(&mut self, w: &Worker, now: i64) -> Option<audit::AuditRecord> {
        if !self.audit.done {
            return None;
        }
        self.audit_record(w, now)
    }

    /// The stream ended (its log phase): the record if it was not handed out yet (a stream
    /// reset before its response; `undecided` if a step still held the request).
    pub fn end_audit(&mut self, w: &Worker, now: i64) -> Option<audit::AuditRecord> {
        self.audit_record(w, now)
    }

    fn audit_record(&mut self, w: &Worker, now: i64) -> Option<audit::AuditRecord> {
        if !self.audit.protected || self.audit.written {
            return None;
        }
        self.audit.written = true;
        let refused = matches!(self.audit.refusal, Some((_, _, false)));
        self.watch.req.close(&mut self.audit, refused);
        self.watch.resp.close(&mut self.audit, refused);
        let route = self.route.as_ref();
        let seen = audit::Seen {
            now,
            api: &w.policy.api_name,
            route: route.map_or("(refused)", |r| w.policy.route_label(r.rule)),
            method: &self.method,
            path_with_query: route.map(|r| r.path_with_query.as_str()),
            raw_path: &self.raw_path,
            decided: self.stage == Stage::Passed && self.fhir_action == Action::Continue,
            token: self.token.as_deref(),
            fhir: w
                .fhir()
                .map(|f| (f.base_path.as_str(), f.patient_claim.as_str())),
            route_patient: route.and_then(|r| {
                let param = w.policy.routes.patient_of(r.rule?)?;
                param.value(&r.params, &r.path_with_query)
            }),
        };
        Some(audit::record(&self.audit, &seen))
    }

    /// RFC 9449 §9: a fresh nonce on successful responses too, so clients rotate smoothly.
    fn nonce_edit(&mut self, out: &mut Output) {
        if let Some(n) = self.dpop_nonce.take() {
            out.response_headers.push(("dpop-nonce", Some(n)));
        }
    }

    /// The step after `step` in this chain (`Passed` after the last).
    fn after(&self, w: &Worker, step: StepName) -> Stage {
        w.steps()
            .skip_while(|s| *s != step)
            .nth(1)
            .map_or(Stage::Passed, Stage::At)
    }

    /// Runs the request headers through the steps from the current stage on.
    fn advance<E: Env>(
        &mut self,
        w: &Worker,
        env: &E,
        x: &dyn Exchange,
        out: &mut Output,
    ) -> Action {
        while let Stage::At(step) = self.stage {
            if self.ended {
                return Action::Hold;
            }
            if step == StepName::FhirScope {
                self.stage = Stage::Passed;
                self.fhir_action = fhir_step::request_headers(self, w, env, x, out);
                return self.feed_fhir(w, env, x, out);
            }
            let flow = match step {
                StepName::Token => token_step::start(self, w, env, x),
                _ => dpop_step::decide(self, w, env, x),
            };
            match flow {
                Flow::Next => self.stage = self.after(w, step),
                Flow::Stop(a) => return a,
            }
        }
        if self.ended {
            Action::Hold
        } else {
            self.fhir_action.clone()
        }
    }

    /// Gives the FHIR scope step the body and trailers held while an earlier step decided.
    fn feed_fhir<E: Env>(
        &mut self,
        w: &Worker,
        env: &E,
        x: &dyn Exchange,
        out: &mut Output,
    ) -> Action {
        if let Some((size, eos)) = self.pending_body.take() {
            if !self.ended {
                self.fhir_action = fhir_step::request_body(self, w, env, x, size, eos, out);
            }
        }
        if std::mem::take(&mut self.pending_trailers) && !self.ended {
            self.fhir_action = fhir_step::request_trailers(self, w, env, x, out);
        }
        // After a refusal this is its reply.
        self.fhir_action.clone()
    }
}
