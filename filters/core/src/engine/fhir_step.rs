//! The FHIR scope step (docs/checks.md §3): SMART v1/v2 scopes against the FHIR REST
//! interaction, and the patient compartment (BOLA). Decisions are `crate::fhir`; this step
//! holds the stream while they wait:
//! - Request: decided on the headers; if the decision needs the body (bundle, `_search` form,
//!   writes under a patient grant), the body is buffered (up to `max_request_body_bytes`) and
//!   decided at the end of the stream.
//! - Response: for reads the request cannot decide, the response is held and buffered (up to
//!   `max_response_bytes`) and passed unchanged or replaced as a whole by the refusal.
//! - Read before write: an update, patch or delete by id under a patient or query-constrained
//!   grant (and a HEAD decided like its GET) is held while the driver reads the stored
//!   resource from `fhir.read_before_write_cluster`; it goes on only if the answer passes.
//! - Either direction may end with trailers instead of END_STREAM on DATA: every body and
//!   trailers call follows `fhir::stream::step`, so nothing is released undecided.
//! - The audit record's patients (`super::audit_body`, docs/audit.md "Patients"): a body this
//!   step decides on or checks gives them from what it read; a body it lets go is observed
//!   (copied as it goes on, never held) and read at its end.

use super::audit_body::{self, Dir};
use super::deny::{self, Refusal};
use super::{
    trace, Action, Count, Env, Exchange, Output, Pipeline, StepName, StoredAnswer, StoredRead,
    Worker,
};
use crate::challenge::{self, Challenge};
use crate::denial::Reason;
use crate::fhir::exchange::{self, HeldRead};
use crate::fhir::policy::FhirPolicy;
use crate::fhir::stream::{step, Gate, Part, Step};
use crate::fhir::{
    check_response_into, decide, Decision, Denial, RequestView, ResponseCheck, ResponseMeta,
};

/// The FHIR scope step's state for one stream.
#[derive(Default)]
pub(super) struct State {
    /// The canonical path and raw query the decisions read.
    path: String,
    /// Kept from the headers: the stored read may be sent from a body call.
    authority: String,
    /// `fhir.read_before_write_headers` copied from the request.
    stored_read_headers: Vec<(String, String)>,
    if_none_exist: Option<String>,
    content_type: Option<String>,
    /// `Buffering` waits for the whole body, `Waiting` for the stored read, `Closed` after a
    /// refusal (nothing more of the request goes on).
    request_gate: Gate,
    /// `Buffering` while the response must pass `check` before anything of it goes on.
    response_gate: Gate,
    check: Option<ResponseCheck>,
    /// The request waits for this read (a write's stored resource, a HEAD's GET).
    stored: Option<HeldRead>,
    /// The request's decision read its body (for the trace).
    used_body: bool,
    status: u32,
    /// The response's `X-Security-Context` (a Binary served as raw bytes, R4 binary.html).
    security_context: Option<String>,
}

fn fhir(w: &Worker) -> Option<&FhirPolicy> {
    w.fhir()
}

impl State {
    /// The response waits for its check.
    pub(super) fn response_pending(&self) -> bool {
        self.response_gate == Gate::Buffering
    }
}

pub(super) fn request_headers<E: Env>(
    p: &mut Pipeline,
    w: &Worker,
    env: &E,
    x: &dyn Exchange,
    out: &mut Output,
) -> Action {
    let Some(fp) = fhir(w) else {
        return Action::Continue;
    };
    let Some(route) = p.route.as_ref() else {
        return Action::Continue;
    };
    p.fhir.path = route.path_with_query.clone();
    if !route.plain {
        // FHIR types, ids and operations never need percent-encoding (docs/checks.md).
        let d = Denial {
            reason: Reason::UnknownFhirRequest,
            required_scope: None,
            detail: "percent-encoded path segment".to_string(),
        };
        trace::fhir_classify_refused(env, &d);
        return refuse(p, w, env, d.reason, Some(&d));
    }
    p.fhir.if_none_exist = x.request_header("if-none-exist");
    p.fhir.content_type = x.request_header("content-type");
    p.fhir.authority = x.request_header(":authority").unwrap_or_default();
    p.audit.bodies = w.policy.audit.patients_in_bodies;
    if p.audit.bodies && !p.headers_eos {
        let encoding = x.request_header("content-encoding");
        p.watch.req = audit_body::start(
            Dir::Request,
            p.fhir.content_type.as_deref(),
            encoding.as_deref(),
        );
    }
    if !fp.read_before_write_headers.is_empty() {
        p.fhir.stored_read_headers = fp.stored_read_headers(&x.request_headers());
    }
    let first = decide_on(p, w, None);
    if matches!(
        first,
        Decision::NeedBody | Decision::AllowIfResponseMatches(_)
    ) {
        // The response may have to be read: ask the upstream for an unencoded body.
        out.request_headers.push(("accept-encoding", None));
    }
    match first {
        Decision::NeedBody if p.headers_eos => {
            p.fhir.used_body = true;
            let d = decide_on(p, w, Some(&[]));
            apply(p, w, env, x, out, d)
        }
        Decision::NeedBody => {
            p.fhir.request_gate = Gate::Buffering;
            if fp.hold_headers_while_buffering {
                Action::Hold
            } else {
                // The host would not deliver the body to a paused filter: the headers go on
                // and the body is held; a refusal then resets the upstream request before it
                // has its body.
                Action::Continue
            }
        }
        d => apply(p, w, env, x, out, d),
    }
}

fn decide_on(p: &Pipeline, w: &Worker, body: Option<&[u8]>) -> Decision {
    let Some(fp) = fhir(w) else {
        return Decision::Allow;
    };
    let view = RequestView {
        method: &p.method,
        path_with_query: &p.fhir.path,
        if_none_exist: p.fhir.if_none_exist.as_deref(),
        content_type: p.fhir.content_type.as_deref(),
        body,
    };
    decide(fp, p.token.as_deref(), &view)
}

/// A refusal by the FHIR scope step (`denial`: its required scope and safe facts).
fn refuse<E: Env>(
    p: &mut Pipeline,
    w: &Worker,
    env: &E,
    reason: Reason,
    denial: Option<&Denial>,
) -> Action {
    p.fhir.check = None;
    p.fhir.stored = None;
    // The challenge names the scheme the token came with (else every one the API accepts).
    let c = Challenge {
        required_scope: denial.and_then(|d| d.required_scope.clone()),
        detail: denial.map(|d| d.detail.clone()),
        ..Challenge::used(p.token.as_ref().map(|t| t.scheme()))
    };
    let refusal = Refusal {
        step: StepName::FhirScope,
        reason,
        reply: challenge::reply(&w.policy, reason, &c),
        detail: denial.map(|d| d.detail.clone()).filter(|d| !d.is_empty()),
        required_scope: denial.and_then(|d| d.required_scope.clone()),
        client: p.token.as_ref().map(|t| t.client_id.clone()),
        verified: true,
    };
    match deny::refuse(p, w, env, refusal) {
        Action::Continue => {
            // Dry run: the stream goes on (a request held for a stored read is resumed).
            p.fhir.request_gate = Gate::Open;
            p.fhir.response_gate = Gate::Open;
            Action::Continue
        }
        a => {
            p.fhir.request_gate = Gate::Closed;
            p.fhir.response_gate = Gate::Open;
            a
        }
    }
}

/// Applies a decision made with the body present (or known empty).
fn apply<E: Env>(
    p: &mut Pipeline,
    w: &Worker,
    env: &E,
    x: &dyn Exchange,
    out: &mut Output,
    d: Decision,
) -> Action {
    let Some(fp) = fhir(w) else {
        return Action::Continue;
    };
    trace::fhir_decided(env, fp, &p.method, &p.fhir.path, &d, p.fhir.used_body);
    match d {
        Decision::Allow => {
            env.count(StepName::FhirScope, Count::Allowed);
            p.fhir.request_gate = Gate::Open;
            Action::Continue
        }
        Decision::AllowIfResponseMatches(c) => {
            // Allowed so far; counted under `response_checked` until the response passes.
            env.count(StepName::FhirScope, Count::Named("response_checked"));
            // Conditional-read headers removed, `Prefer: handling=strict` on searchsets,
            // `_elements` extended with what the check reads: the client's `:path` as sent
            // (the DPoP step has checked `htu` on it).
            let prefer = x.request_header("prefer");
            let edits =
                exchange::response_check_request_edits(fp, &c, prefer.as_deref(), &p.raw_path);
            out.request_headers.extend(edits);
            p.fhir.check = Some(c);
            p.fhir.request_gate = Gate::Open;
            p.fhir.response_gate = Gate::Buffering;
            Action::Continue
        }
        Decision::AllowIfStoredMatches(c) => read_stored(p, fp, HeldRead::Stored(c)),
        Decision::AllowIfReadMatches(c) => read_stored(p, fp, HeldRead::Head(c)),
        // Only asked for without a body; with one it is a request we cannot read.
        Decision::NeedBody => refuse(p, w, env, Reason::UnknownFhirRequest, None),
        Decision::Deny(d) => refuse(p, w, env, d.reason, Some(&d)),
    }
}

/// Read before write (docs/checks.md §3, BOLA): the stored resource, or for a HEAD decided
/// like GET the same path and query. No `Authorization`/`DPoP` is forwarded (a proof is bound
/// to the client's request and would be a replay).
fn read_stored(p: &mut Pipeline, fp: &FhirPolicy, c: HeldRead) -> Action {
    let path = c.path(&p.fhir.path);
    let headers = c.headers(&path, &p.fhir.authority, &p.fhir.stored_read_headers);
    p.fhir.stored = Some(c);
    p.fhir.request_gate = Gate::Waiting;
    Action::ReadStored(StoredRead {
        cluster: fp.read_before_write_cluster.clone(),
        headers,
    })
}

/// `read Observation`, for refusals decided on an answer (no ids).
fn what(p: &Pipeline, fp: &FhirPolicy) -> String {
    exchange::request_label(fp, &p.method, &p.fhir.path)
}

pub(super) fn stored_answer<E: Env>(
    p: &mut Pipeline,
    w: &Worker,
    env: &E,
    answer: &StoredAnswer<'_>,
) -> Action {
    let Some(fp) = fhir(w) else {
        return Action::Hold;
    };
    let Some(check) = p.fhir.stored.take() else {
        return Action::Hold;
    };
    if p.fhir.request_gate != Gate::Waiting {
        return Action::Hold;
    }
    let verdict = check.check_answer(fp, answer.status, answer.body_size, || (answer.body)());
    trace::fhir_held_read(env, &check, verdict);
    match verdict {
        Ok(()) => {
            env.count(StepName::FhirScope, Count::Allowed);
            p.fhir.request_gate = Gate::Open;
            Action::Continue
        }
        Err(reason) => {
            let detail = check.denial(reason, &what(p, fp));
            refuse(p, w, env, reason, Some(&detail))
        }
    }
}

pub(super) fn request_body<E: Env>(
    p: &mut Pipeline,
    w: &Worker,
    env: &E,
    x: &dyn Exchange,
    size: usize,
    end_of_stream: bool,
    out: &mut Output,
) -> Action {
    let Some(limit) = fhir(w).map(|f| f.max_request_body_bytes) else {
        return Action::Continue;
    };
    match step(p.fhir.request_gate, Part::Data { end_of_stream }) {
        Step::Release => {
            // Observed for the record, not held (`audit_body`).
            p.watch
                .req
                .part(&mut p.audit, limit, size, false, &|n| x.request_body(n));
            if end_of_stream {
                p.watch.req.end(&mut p.audit);
            }
            Action::Continue
        }
        // The host keeps buffering while the step holds body data.
        Step::Hold if p.fhir.request_gate == Gate::Buffering && size > limit => {
            refuse(p, w, env, Reason::RequestTooLarge, None)
        }
        Step::Hold => {
            if p.fhir.request_gate == Gate::Waiting {
                // Held for the stored read: the host buffers the body so far.
                p.watch
                    .req
                    .part(&mut p.audit, limit, size, true, &|n| x.request_body(n));
            }
            Action::Hold
        }
        Step::Decide if size > limit => refuse(p, w, env, Reason::RequestTooLarge, None),
        Step::Decide => {
            let body = x.request_body(size);
            decide_body(p, w, env, x, out, &body)
        }
    }
}

/// The request ended with trailers (HTTP/2 HEADERS after DATA, HTTP/1.1 chunked trailer
/// section): decided on the body buffered so far; the trailers are held until then.
pub(super) fn request_trailers<E: Env>(
    p: &mut Pipeline,
    w: &Worker,
    env: &E,
    x: &dyn Exchange,
    out: &mut Output,
) -> Action {
    let Some(limit) = fhir(w).map(|f| f.max_request_body_bytes) else {
        return Action::Continue;
    };
    match step(p.fhir.request_gate, Part::Trailers) {
        Step::Release => {
            p.watch.req.end(&mut p.audit);
            Action::Continue
        }
        Step::Hold => Action::Hold,
        Step::Decide => {
            let body = x.request_body(limit.saturating_add(1));
            if body.len() > limit {
                return refuse(p, w, env, Reason::RequestTooLarge, None);
            }
            decide_body(p, w, env, x, out, &body)
        }
    }
}

/// Decides the request on its whole body (buffered; ended by DATA or trailers).
fn decide_body<E: Env>(
    p: &mut Pipeline,
    w: &Worker,
    env: &E,
    x: &dyn Exchange,
    out: &mut Output,
    body: &[u8],
) -> Action {
    p.fhir.request_gate = Gate::Open;
    p.fhir.used_body = true;
    p.watch.req.whole(&mut p.audit, body, Dir::Request);
    let d = decide_on(p, w, Some(body));
    apply(p, w, env, x, out, d)
}

pub(super) fn response_headers<E: Env>(
    p: &mut Pipeline,
    w: &Worker,
    env: &E,
    x: &dyn Exchange,
    end_of_stream: bool,
) -> Action {
    let Some(fp) = fhir(w) else {
        return Action::Continue;
    };
    if p.fhir.response_gate != Gate::Buffering || p.fhir.check.is_none() {
        if p.audit.bodies && !end_of_stream && !p.ended {
            // Not checked: observed for the record (`audit_body`), never held.
            let (ct, ce) = (
                x.response_header("content-type"),
                x.response_header("content-encoding"),
            );
            p.watch.resp = audit_body::start(Dir::Response, ct.as_deref(), ce.as_deref());
        }
        return Action::Continue;
    }
    p.fhir.status = x
        .response_header(":status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    p.fhir.security_context = x.response_header("x-security-context");
    // An encoded body cannot be read, a declared length over the limit is refused.
    if let Err(reason) = exchange::check_response_headers(
        fp,
        x.response_header("content-encoding").as_deref(),
        x.response_header("content-length").as_deref(),
    ) {
        trace::fhir_response(env, &p.method, Err(reason));
        return refuse(p, w, env, reason, None);
    }
    if end_of_stream {
        return finish_response(p, w, env, &[]);
    }
    if fp.hold_headers_while_buffering {
        // Hold the headers until the body has been checked.
        Action::Hold
    } else {
        // Headers go on; the body is held. A refusal then resets the stream.
        Action::Continue
    }
}

pub(super) fn response_body<E: Env>(
    p: &mut Pipeline,
    w: &Worker,
    env: &E,
    x: &dyn Exchange,
    size: usize,
    end_of_stream: bool,
) -> Action {
    let Some(limit) = fhir(w).map(|f| f.max_response_bytes) else {
        return Action::Continue;
    };
    match step(p.fhir.response_gate, Part::Data { end_of_stream }) {
        Step::Release => {
            p.watch
                .resp
                .part(&mut p.audit, limit, size, false, &|n| x.response_body(n));
            if end_of_stream {
                p.watch.resp.end(&mut p.audit);
            }
            Action::Continue
        }
        Step::Hold | Step::Decide if size > limit => {
            refuse(p, w, env, Reason::ResponseTooLarge, None)
        }
        Step::Hold => Action::Hold,
        Step::Decide => {
            let body = x.response_body(size);
            finish_response(p, w, env, &body)
        }
    }
}

/// The response ended with trailers: the body buffered so far is checked; the trailers (and
/// all held before them) go on only if it passes.
pub(super) fn response_trailers<E: Env>(
    p: &mut Pipeline,
    w: &Worker,
    env: &E,
    x: &dyn Exchange,
) -> Action {
    let Some(limit) = fhir(w).map(|f| f.max_response_bytes) else {
        return Action::Continue;
    };
    match step(p.fhir.response_gate, Part::Trailers) {
        Step::Release => {
            p.watch.resp.end(&mut p.audit);
            Action::Continue
        }
        Step::Hold => Action::Hold,
        Step::Decide => {
            let body = x.response_body(limit.saturating_add(1));
            if body.len() > limit {
                return refuse(p, w, env, Reason::ResponseTooLarge, None);
            }
            finish_response(p, w, env, &body)
        }
    }
}

fn finish_response<E: Env>(p: &mut Pipeline, w: &Worker, env: &E, body: &[u8]) -> Action {
    let Some(fp) = fhir(w) else {
        return Action::Continue;
    };
    let Some(check) = p.fhir.check.take() else {
        // Buffering without a check cannot happen; fail closed if it does.
        return refuse(p, w, env, Reason::ResponseOutsideGrant, None);
    };
    let meta = ResponseMeta {
        security_context: p.fhir.security_context.as_deref(),
    };
    // The record names the patients of the answer as the check parsed it (the other one too).
    let (bodies, trail) = (p.audit.bodies, &mut p.audit);
    let verdict = check_response_into(fp, &check, p.fhir.status, &meta, body, &mut |v| {
        if bodies {
            audit_body::named(trail, v);
        }
    });
    trace::fhir_response(env, &p.method, verdict);
    match verdict {
        Ok(()) => {
            env.count(StepName::FhirScope, Count::Allowed);
            p.fhir.response_gate = Gate::Open;
            Action::Continue
        }
        Err(reason) => {
            let detail = exchange::response_denial(reason, &what(p, fp));
            refuse(p, w, env, reason, Some(&detail))
        }
    }
}
