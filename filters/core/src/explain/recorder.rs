//! The explainer's trace hook: turns the pipeline's events (`engine::trace::Event`) into the
//! steps, decoded tokens, notes and answer of a [`Trace`](super::Trace).

use std::cell::RefCell;

use serde_json::Value;

use super::checks::{push_fail, record, skip_all, DPOP_CHECKS, TOKEN_CHECKS};
use super::{decoded, reply_answer, why, Answer, Decoded, Outcome, Step};
use crate::denial::Reason;
use crate::diagnostics;
use crate::engine::trace::{Event, Tracer};
use crate::engine::StepName;
use crate::fhir::Decision;
use crate::jose::{CompactJws, JwsError};

const CANONICAL: &str = "canonical path (every filter, every route)";
const CANONICAL_SPEC: &str = "docs/checks.md (Path canonicalisation), RFC 3986 §5.2.4";
const ROUTE: &str = "route requirement (routes[], first match wins)";
const FHIR_SPEC: &str =
    "docs/checks.md §3; SMART App Launch v2.2 §scopes; FHIR R4 §3.1.0, compartments";
const RESPONSE_SPEC: &str = "docs/checks.md §3 (BOLA); FHIR R4 compartments";

/// What the pipeline reported so far.
#[derive(Default)]
pub(super) struct Recorded {
    pub steps: Vec<Step>,
    pub decoded: Vec<Decoded>,
    pub notes: Vec<String>,
    /// The first refusal's answer (enforce), or the code of the first dry-run refusal.
    pub refused: Option<Answer>,
    pub shadow_refused: Option<&'static str>,
    pub public: bool,
    /// The FHIR interaction (`read Observation`) once the FHIR scope step decided.
    pub what: Option<String>,
    /// The FHIR scope step allowed only if the response (or a HEAD's GET) passes.
    pub response_pending: bool,
    /// The FHIR scope step waits for a write's stored read.
    pub stored_pending: Option<String>,
    pub response_checked: bool,
}

#[derive(Default)]
pub(super) struct Recorder {
    pub r: RefCell<Recorded>,
}

fn step(
    filter: &'static str,
    check: &'static str,
    spec: &'static str,
    outcome: Outcome,
    reason: Option<Reason>,
    detail: Option<String>,
) -> Step {
    Step {
        filter,
        check,
        spec,
        outcome,
        reason: reason.map(Reason::code),
        detail,
    }
}

/// The path canonicalisation check (every step, every route).
fn canonical(outcome: Outcome, reason: Option<Reason>, detail: Option<String>) -> Step {
    step("all", CANONICAL, CANONICAL_SPEC, outcome, reason, detail)
}

fn fstep(
    check: &'static str,
    spec: &'static str,
    outcome: Outcome,
    reason: Option<Reason>,
    detail: Option<String>,
) -> Step {
    step("fhir_scope", check, spec, outcome, reason, detail)
}

// Indexes and slices only the constant check tables at constant positions inside them.
#[allow(clippy::indexing_slicing)]
fn token_checked(r: &mut Recorded, token: &str, refused: Option<(Reason, Option<String>)>) {
    let Some((reason, detail)) = refused else {
        record(&mut r.steps, "token", TOKEN_CHECKS, None, 0);
        r.decoded.extend(decoded("access token", token, true));
        return;
    };
    let at_parse = matches!(CompactJws::parse(token), Err(JwsError::BadAlg))
        && reason == Reason::AlgNotAllowed;
    let missing_iss = reason == Reason::MissingClaim
        && diagnostics::decode_unverified(token)
            .is_some_and(|(_, p)| !p.get("iss").is_some_and(Value::is_string));
    if at_parse {
        // An unknown or forbidden `alg` is refused while parsing.
        record(&mut r.steps, "token", &TOKEN_CHECKS[..1], None, 0);
        push_fail(&mut r.steps, "token", &TOKEN_CHECKS[1], reason, detail);
        skip_all(&mut r.steps, "token", &TOKEN_CHECKS[2..]);
    } else if missing_iss {
        record(&mut r.steps, "token", &TOKEN_CHECKS[..4], None, 0);
        push_fail(&mut r.steps, "token", &TOKEN_CHECKS[4], reason, detail);
        skip_all(&mut r.steps, "token", &TOKEN_CHECKS[5..]);
    } else {
        record(
            &mut r.steps,
            "token",
            TOKEN_CHECKS,
            Some((reason, detail)),
            0,
        );
    }
    r.decoded.extend(decoded("access token", token, false));
}

/// Every refusal of `token::extract` (also the token68 syntax) is the first check.
#[allow(clippy::indexing_slicing)]
fn extract_refused(r: &mut Recorded, reason: Reason, detail: Option<String>) {
    push_fail(&mut r.steps, "token", &TOKEN_CHECKS[0], reason, detail);
    skip_all(&mut r.steps, "token", &TOKEN_CHECKS[1..]);
}

#[allow(clippy::indexing_slicing)]
fn dpop_checked(
    r: &mut Recorded,
    proof: Option<&str>,
    proof_checked: bool,
    refused: Option<(Reason, Option<String>)>,
) {
    match refused {
        Some(f) => {
            record(&mut r.steps, "dpop", DPOP_CHECKS, Some(f), 0);
            r.decoded
                .extend(proof.and_then(|p| decoded("DPoP proof", p, false)));
        }
        None => {
            if proof_checked {
                record(&mut r.steps, "dpop", DPOP_CHECKS, None, 0);
            } else {
                record(&mut r.steps, "dpop", &DPOP_CHECKS[..3], None, 0);
                for c in &DPOP_CHECKS[3..] {
                    r.steps.push(step(
                        "dpop",
                        c.name,
                        c.spec,
                        Outcome::Skip,
                        None,
                        Some(
                            "no proof needed: unbound Bearer token and dpop.required is false"
                                .into(),
                        ),
                    ));
                }
            }
            r.notes.push("replay: this is the first use of the proof's jti; the same proof again is refused with dpop_replay".into());
            r.decoded
                .extend(proof.and_then(|p| decoded("DPoP proof", p, proof_checked)));
        }
    }
}

fn fhir_decided(r: &mut Recorded, what: String, d: &Decision, used_body: bool, cluster: &str) {
    match d {
        Decision::Allow => {
            let body = if used_body {
                " (decided on the request body)"
            } else {
                ""
            };
            r.steps.push(fstep(
                "scopes and compartment for the interaction",
                FHIR_SPEC,
                Outcome::Pass,
                None,
                Some(format!("{what}{body}")),
            ));
        }
        Decision::Deny(den) => {
            let detail = if den.detail.is_empty() {
                what.clone()
            } else {
                den.detail.clone()
            };
            r.steps.push(fstep(
                "scopes and compartment for the interaction",
                FHIR_SPEC,
                Outcome::Fail,
                Some(den.reason),
                Some(detail),
            ));
        }
        Decision::AllowIfStoredMatches(_) => {
            r.steps.push(fstep(
                "scopes for the interaction",
                FHIR_SPEC,
                Outcome::Pass,
                None,
                Some(what.clone()),
            ));
            r.stored_pending = Some(cluster.to_string());
        }
        Decision::AllowIfResponseMatches(_) | Decision::AllowIfReadMatches(_) => {
            r.steps.push(fstep(
                "scopes for the interaction",
                FHIR_SPEC,
                Outcome::Pass,
                None,
                Some(what.clone()),
            ));
            r.response_pending = true;
        }
        Decision::NeedBody => {}
    }
    r.what = Some(what);
}

/// The label of the check of a read decided on its response.
pub(super) fn response_label(head: bool) -> &'static str {
    if head {
        "HEAD: the GET it mirrors answers with resources in the grant / compartment"
    } else {
        "response body: every resource in the grant / compartment"
    }
}

fn response_checked(r: &mut Recorded, head: bool, verdict: Result<(), Reason>) {
    r.response_pending = false;
    r.response_checked = true;
    let what = r.what.clone().unwrap_or_default();
    let (outcome, reason, detail) = match verdict {
        Ok(()) => (Outcome::Pass, None, None),
        Err(reason) => (Outcome::Fail, Some(reason), Some(format!("{what}: the response holds a resource outside the granted scopes or the patient's compartment"))),
    };
    r.steps.push(fstep(
        response_label(head),
        RESPONSE_SPEC,
        outcome,
        reason,
        detail,
    ));
}

fn refused(
    r: &mut Recorded,
    step: StepName,
    reason: Reason,
    reply: &crate::denial::Reply,
    detail: Option<&str>,
    required_scope: Option<&str>,
    shadow: bool,
) {
    // A refusal the FHIR scope step made outside a decision (a body over the limit, an
    // encoded response): shown as its check.
    if step == StepName::FhirScope && r.steps.last().is_none_or(|s| s.outcome != Outcome::Fail) {
        let what = r.what.clone();
        r.steps.push(fstep(
            "scopes and compartment for the interaction",
            FHIR_SPEC,
            Outcome::Fail,
            Some(reason),
            detail.map(str::to_string).or(what),
        ));
    }
    if shadow {
        if r.shadow_refused.is_none() && r.refused.is_none() {
            r.shadow_refused = Some(reason.code());
        }
        return;
    }
    if r.refused.is_some() {
        return;
    }
    let why = match (step, required_scope) {
        (StepName::FhirScope, Some(s)) => format!("{}: needs scope `{s}`", reason.code()),
        _ if r.response_checked => format!(
            "{}: {}; the whole response is replaced (Istio: see docs/api-owner-guide.md)",
            reason.code(),
            detail.unwrap_or_default()
        ),
        _ => why(reason, detail),
    };
    r.refused = Some(reply_answer(step.as_str(), reason, reply.clone(), why));
}

impl Tracer for Recorder {
    fn event(&self, event: Event<'_>) {
        let mut r = self.r.borrow_mut();
        let r = &mut *r;
        match event {
            Event::RequestFault {
                reason,
                detail,
                method_override,
            } => {
                if method_override {
                    r.steps.push(canonical(Outcome::Pass, None, None));
                    r.steps.push(step(
                        "all",
                        "method override (every filter, every route)",
                        "docs/checks.md (Reading the request as the server does), RFC 9110 §9.1",
                        Outcome::Fail,
                        Some(reason),
                        Some(detail.into()),
                    ));
                } else {
                    r.steps
                        .push(canonical(Outcome::Fail, Some(reason), Some(detail.into())));
                }
            }
            Event::Route { public, unlisted } => {
                r.steps.push(canonical(Outcome::Pass, None, None));
                r.public = public;
                if unlisted {
                    r.steps.push(step(
                        "token",
                        ROUTE,
                        "docs/checks.md §4 (unmatched)",
                        Outcome::Fail,
                        Some(Reason::RouteNotListed),
                        Some(
                            "no routes[] rule matches and the policy says `unmatched: deny`".into(),
                        ),
                    ));
                } else {
                    let detail = if public {
                        "public route: no token needed; no filter checks anything"
                    } else {
                        "protected route: a valid access token is needed"
                    };
                    r.steps.push(step(
                        "all",
                        ROUTE,
                        "docs/checks.md (routes)",
                        Outcome::Pass,
                        None,
                        Some(detail.into()),
                    ));
                }
            }
            Event::TokenExtractRefused { reason, detail } => extract_refused(r, reason, detail),
            Event::TokenChecked { token, refused } => token_checked(r, token, refused),
            Event::Authz { refused } => r.steps.push(step(
                "token",
                "route authz (scopes, claims, authorization_details, bindings)",
                "docs/checks.md §4, RFC 6750 §3.1, RFC 9396",
                if refused.is_some() {
                    Outcome::Fail
                } else {
                    Outcome::Pass
                },
                refused.map(|d| d.reason),
                refused.map(|d| d.detail.clone()),
            )),
            Event::DpopChecked {
                proof,
                proof_checked,
                refused,
            } => dpop_checked(r, proof, proof_checked, refused),
            Event::Refused {
                step,
                reason,
                reply,
                detail,
                required_scope,
                shadow,
            } => refused(r, step, reason, reply, detail, required_scope, shadow),
            Event::FhirClassifyRefused { detail } => r.steps.push(fstep(
                "FHIR request (classify)",
                "FHIR R4 http.html",
                Outcome::Fail,
                Some(Reason::UnknownFhirRequest),
                Some(detail.to_string()),
            )),
            Event::FhirDecided {
                what,
                decision,
                used_body,
                cluster,
            } => fhir_decided(r, what, decision, used_body, cluster),
            Event::FhirHeldRead { head, verdict } => {
                if head {
                    response_checked(r, true, verdict);
                } else {
                    r.stored_pending = None;
                    let (outcome, reason) = match verdict {
                        Ok(()) => (Outcome::Pass, None),
                        Err(e) => (Outcome::Fail, Some(e)),
                    };
                    r.steps.push(fstep(
                        "read before write: the stored resource is in the grant",
                        "docs/checks.md §3 (BOLA); docs/checks.md",
                        outcome,
                        reason,
                        None,
                    ));
                }
            }
            Event::FhirResponse { head, verdict } => response_checked(r, head, verdict),
        }
    }
}
