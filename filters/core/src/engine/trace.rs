//! The trace hook: what each check of the pipeline decided, for a driver that records it (the
//! explainer, `crate::explain`). The Wasm driver has no tracer: every function here then
//! returns at once, before building anything.

use super::{Env, StepName};
use crate::authz::{AuthzDenial, Mode};
use crate::denial::{Reason, Reply};
use crate::fhir::exchange::HeldRead;
use crate::fhir::policy::FhirPolicy;
use crate::fhir::{Decision, Denial};
use crate::policy::RequestFault;

/// One thing the pipeline decided, in the order it decided it.
#[derive(Debug)]
pub enum Event<'a> {
    /// The request was refused before any step (`method_override`: by the override rule,
    /// else by path canonicalisation).
    RequestFault {
        reason: Reason,
        detail: &'static str,
        method_override: bool,
    },
    /// The route's requirement (`routes[]`, first match wins; `unlisted`: no rule matches
    /// and the policy says `unmatched: deny`).
    Route { public: bool, unlisted: bool },
    /// The `Authorization` header held no usable token (docs/checks.md §1.1).
    TokenExtractRefused {
        reason: Reason,
        detail: Option<String>,
    },
    /// The access token was validated (`refused`: the reason and safe facts).
    TokenChecked {
        token: &'a str,
        refused: Option<(Reason, Option<String>)>,
    },
    /// The route's `authz` on the verified token (a route that has one).
    Authz { refused: Option<&'a AuthzDenial> },
    /// The DPoP step decided (`proof_checked`: a proof was needed and read).
    DpopChecked {
        proof: Option<&'a str>,
        proof_checked: bool,
        refused: Option<(Reason, Option<String>)>,
    },
    /// A step refused (`shadow`: dry run, the stream goes on).
    Refused {
        step: StepName,
        reason: Reason,
        reply: &'a Reply,
        detail: Option<&'a str>,
        required_scope: Option<&'a str>,
        shadow: bool,
    },
    /// The FHIR scope step found no FHIR request it can read in the path.
    FhirClassifyRefused { detail: &'a str },
    /// The FHIR scope step decided the request (`what`: `read Observation`).
    FhirDecided {
        what: String,
        decision: &'a Decision,
        used_body: bool,
        cluster: &'a str,
    },
    /// A held read answered (`head`: a HEAD's GET; else a write's stored resource).
    FhirHeldRead {
        head: bool,
        verdict: Result<(), Reason>,
    },
    /// The response was checked (`head`: the request was a HEAD).
    FhirResponse {
        head: bool,
        verdict: Result<(), Reason>,
    },
}

/// Records the pipeline's events.
pub trait Tracer {
    fn event(&self, event: Event<'_>);
}

fn emit<E: Env>(env: &E, event: impl FnOnce() -> Event<'static>) {
    if let Some(t) = env.tracer() {
        t.event(event());
    }
}

pub(super) fn route_fault<E: Env>(env: &E, f: &RequestFault) {
    let f = *f;
    emit(env, || Event::RequestFault {
        reason: f.reason(),
        detail: f.detail(),
        method_override: matches!(f, RequestFault::MethodOverride),
    });
}

pub(super) fn route<E: Env>(env: &E, public: bool, unlisted: bool) {
    emit(env, || Event::Route { public, unlisted });
}

pub(super) fn token_extract_refused<E: Env>(env: &E, reason: Reason, detail: Option<String>) {
    emit(env, || Event::TokenExtractRefused { reason, detail });
}

pub(super) fn token_checked<E: Env>(
    env: &E,
    token: &str,
    refused: Option<(Reason, Option<String>)>,
) {
    if let Some(t) = env.tracer() {
        t.event(Event::TokenChecked { token, refused });
    }
}

pub(super) fn authz<E: Env>(env: &E, refused: Option<&AuthzDenial>) {
    if let Some(t) = env.tracer() {
        t.event(Event::Authz { refused });
    }
}

/// The route's `authz` passed: recorded when `has_authz()` (asked only while tracing).
pub(super) fn authz_passed<E: Env>(env: &E, has_authz: impl FnOnce() -> bool) {
    if env.tracer().is_some() && has_authz() {
        authz(env, None);
    }
}

pub(super) fn dpop_checked<E: Env>(
    env: &E,
    proof: Option<&str>,
    proof_checked: bool,
    refused: Option<(Reason, Option<String>)>,
) {
    if let Some(t) = env.tracer() {
        t.event(Event::DpopChecked {
            proof,
            proof_checked,
            refused,
        });
    }
}

/// A refusal (`crate::engine::deny`): its reply, safe facts and required scope.
pub(super) fn refused<E: Env>(
    env: &E,
    (step, reason, reply): (StepName, Reason, &Reply),
    (detail, required_scope): (Option<&str>, Option<&str>),
    mode: Mode,
) {
    if let Some(t) = env.tracer() {
        t.event(Event::Refused {
            step,
            reason,
            reply,
            detail,
            required_scope,
            shadow: mode == Mode::Shadow,
        });
    }
}

pub(super) fn fhir_classify_refused<E: Env>(env: &E, d: &Denial) {
    if let Some(t) = env.tracer() {
        t.event(Event::FhirClassifyRefused { detail: &d.detail });
    }
}

pub(super) fn fhir_decided<E: Env>(
    env: &E,
    fp: &FhirPolicy,
    method: &str,
    path: &str,
    decision: &Decision,
    used_body: bool,
) {
    let Some(t) = env.tracer() else { return };
    let what = match crate::fhir::interaction::classify(&fp.base_path, method, path) {
        Ok(r) => format!(
            "{} {}",
            r.label(),
            r.resource_type.as_deref().unwrap_or("*")
        ),
        Err(e) => format!("not a FHIR request under `{}`: {e}", fp.base_path),
    };
    t.event(Event::FhirDecided {
        what,
        decision,
        used_body,
        cluster: &fp.read_before_write_cluster,
    });
}

pub(super) fn fhir_held_read<E: Env>(env: &E, read: &HeldRead, verdict: Result<(), Reason>) {
    let head = matches!(read, HeldRead::Head(_));
    emit(env, || Event::FhirHeldRead { head, verdict });
}

pub(super) fn fhir_response<E: Env>(env: &E, method: &str, verdict: Result<(), Reason>) {
    let head = method == "HEAD";
    emit(env, || Event::FhirResponse { head, verdict });
}
