//! The FHIR scope decision (docs/checks.md §3): SMART grants × FHIR interaction × patient context.
//!
//! Pure functions. [`decide`] looks at the request (and its body when it says
//! [`Decision::NeedBody`]); reads whose compartment the request cannot show come back as
//! [`Decision::AllowIfResponseMatches`], and
//! [`check_response`](super::response::check_response) decides them on the body.
//!
//! A request is allowed when ONE grant of the token allows it on its own. Patient grants
//! confine to the compartment of the token's patient; user/system grants are checked for
//! type and letters (the FHIR server applies its own user-level rules on top).

use serde_json::Value;

use crate::claims::VerifiedToken;
use crate::denial::Reason;
use crate::jose::jws::parse_strict_value;
use base64::Engine;

use super::compartment::{is_patient_ref, resource_matches_constraint, Compartment};
use super::interaction::{classify, is_fhir_id, FhirRequest, Interaction, Level};
use super::policy::FhirPolicy;
use super::query::{self, split_or, Param};
use super::scope::{grants, Context, Perms, SmartScope};

mod bundle;
mod everything;
mod grants;
mod operations;
mod paging;
mod patch;
mod search_read;
mod writes;

// Each concern's functions, for `decide_at` and for each other.
use bundle::*;
use everything::*;
use operations::*;
use paging::*;
use patch::*;
use search_read::*;
use writes::*;

use super::response_check::{
    Alternative, PageCheck, PageGrant, ResourceCheck, ResponseCheck, SearchCheck, StoredCheck,
    StoredSearch,
};

/// What the filter does with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Forward, but buffer the response and pass it only if
    /// [`check_response`](super::response::check_response) accepts it.
    AllowIfResponseMatches(ResponseCheck),
    /// Update, patch or delete by id that the request alone cannot confine (a patient or
    /// query-constrained grant): read the stored resource first (`GET` the same path) and
    /// forward the request only if [`check_stored`](super::response::check_stored) accepts the
    /// answer (BOLA, docs/checks.md §3).
    AllowIfStoredMatches(StoredCheck),
    /// A `HEAD` whose `GET` would be [`Decision::AllowIfResponseMatches`]: a HEAD answer has
    /// the GET's header fields and no content (RFC 9110 §9.3.2), so it cannot be checked. The
    /// filter GETs the same path and query first (from `fhir.read_before_write_cluster`) and
    /// forwards the HEAD only if [`check_response`](super::response::check_response) accepts
    /// that answer (docs/checks.md §3).
    AllowIfReadMatches(ResponseCheck),
    /// The request body is needed to decide: buffer it and ask again.
    NeedBody,
    Deny(Denial),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    /// For `insufficient_scope`: what would have been enough (RFC 6750 §3 `scope`).
    pub required_scope: Option<String>,
    /// Names the interaction and type; never ids, token or patient data.
    pub detail: String,
}

/// The request as the filter sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path_with_query: &'a str,
    /// `If-None-Exist` header (conditional create, FHIR R4 §3.1.0.8.1).
    pub if_none_exist: Option<&'a str>,
    /// `Content-Type` header: which bodies the server reads as form parameters
    /// (`super::server`).
    pub content_type: Option<&'a str>,
    pub body: Option<&'a [u8]>,
}

pub fn decide(
    policy: &FhirPolicy,
    token: Option<&VerifiedToken>,
    req: &RequestView<'_>,
) -> Decision {
    head_as_get(req.method, decide_at(policy, token, req, 0))
}

/// RFC 9110 §9.3.2: HEAD is GET without content; it is classified as the GET it mirrors, and a
/// GET decided on its response body becomes a HEAD decided on a GET's answer.
fn head_as_get(method: &str, d: Decision) -> Decision {
    match d {
        Decision::AllowIfResponseMatches(c) if method == "HEAD" => Decision::AllowIfReadMatches(c),
        other => other,
    }
}

// ---------- helpers ----------

fn deny(reason: Reason, detail: impl Into<String>) -> Decision {
    Decision::Deny(Denial {
        reason,
        required_scope: None,
        detail: detail.into(),
    })
}

fn denial(reason: Reason, detail: impl Into<String>) -> Denial {
    Denial {
        reason,
        required_scope: None,
        detail: detail.into(),
    }
}

/// What one grant says about a request.
enum Outcome {
    Allow,
    Check(Alternative),
    NeedBody,
    Deny(Denial),
}

struct DecisionInput<'a> {
    policy: &'a FhirPolicy,
    grants: Vec<SmartScope>,
    /// The patient in context, if the token carries a valid FHIR id under the claim.
    pid: Option<String>,
    req: &'a FhirRequest,
    body: Option<&'a [u8]>,
    if_none_exist: Option<&'a str>,
    content_type: Option<&'a str>,
    /// The query string as sent (criteria of a conditional write).
    raw_query: &'a str,
}

/// The patient claim, when it is a valid FHIR id.
fn patient_in_context(policy: &FhirPolicy, token: &VerifiedToken) -> Option<String> {
    token
        .claim_str(&policy.patient_claim)
        .filter(|p| is_fhir_id(p))
        .map(str::to_string)
}

/// A JSON body (any other body is left to the interaction) that repeats a member name at any
/// depth: the guard reads one value and the API may read another (serde_json keeps the last,
/// other parsers the first). Refused with the JOSE layer's strict parser (docs/checks.md).
fn has_duplicate_members(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
        && parse_strict_value(body).is_none()
}

fn parse_resource(body: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("resourceType").and_then(Value::as_str)?;
    Some(v)
}

/// Every constraint parameter is carried by the search with a subset of its values
/// (repeated names AND together, so one confining occurrence is enough).
fn carries(params: &[Param], constraint: &[Param]) -> bool {
    constraint.iter().all(|c| {
        let allowed = c.or_values();
        params
            .iter()
            .any(|p| p.name == c.name && p.or_values().iter().all(|v| allowed.contains(v)))
    })
}

// ---------- the decision ----------

fn decide_at(
    policy: &FhirPolicy,
    token: Option<&VerifiedToken>,
    view: &RequestView<'_>,
    depth: u8,
) -> Decision {
    let mut req = match classify(&policy.base_path, view.method, view.path_with_query) {
        Ok(r) => r,
        Err(why) => return deny(Reason::UnknownFhirRequest, why),
    };
    // docs/checks.md §3: `GET /metadata` and `/.well-known/smart-configuration` are public.
    if matches!(
        req.interaction,
        Interaction::Capabilities | Interaction::SmartConfiguration
    ) {
        return Decision::Allow;
    }
    let Some(token) = token else {
        return deny(Reason::NoVerifiedToken, "no verified access token");
    };
    if let Some(t) = &req.resource_type {
        if !policy.serves(t) {
            return deny(
                Reason::UnknownFhirRequest,
                format!("{}: resource type `{t}` is not served here", req.label()),
            );
        }
    }
    if let Some(b) = view.body {
        if b.len() > policy.max_request_body_bytes {
            return deny(
                Reason::RequestTooLarge,
                format!("{}: request body too large", req.label()),
            );
        }
    }
    if let Some(b) = view.body {
        if has_duplicate_members(b) {
            return deny(
                Reason::DuplicateJsonMember,
                format!(
                    "{}: the body repeats a JSON member name (RFC 8259 §4, RFC 7493 §2.3)",
                    req.label()
                ),
            );
        }
    }
    if let Some(d) = read_as_server(policy, &mut req, view) {
        return d;
    }
    let cx = DecisionInput {
        policy,
        grants: grants(token, &policy.contexts),
        pid: patient_in_context(policy, token),
        req: &req,
        body: view.body,
        if_none_exist: view.if_none_exist,
        content_type: view.content_type,
        raw_query: view
            .path_with_query
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or(""),
    };
    let d = match req.interaction {
        Interaction::Capabilities | Interaction::SmartConfiguration => Decision::Allow,
        Interaction::Read | Interaction::Vread | Interaction::HistoryInstance => read(&cx),
        Interaction::SearchType => search_type(&cx),
        Interaction::SearchCompartment => search_compartment(&cx),
        Interaction::SearchSystem => search_system(&cx),
        Interaction::HistoryType | Interaction::HistorySystem => history(&cx),
        Interaction::Create => create(&cx),
        Interaction::Update => update(&cx),
        Interaction::Patch => patch(&cx),
        Interaction::Delete => delete(&cx),
        Interaction::Operation => operation(&cx),
        Interaction::Batch => batch(policy, token, &cx, depth),
        Interaction::Page => page(&cx),
    };
    // `_summary`/`_elements` must leave the checked answer the elements its check reads.
    if let Decision::AllowIfResponseMatches(c) = &d {
        let form = match (req.via_post, view.body) {
            (true, Some(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(query::parse)
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let rewritable = depth == 0 && !req.via_post;
        if let Err(why) =
            super::subsetting::check(&policy.compartment, c, &req.params, &form, rewritable)
        {
            return deny(
                Reason::SubsettingHidesCompartment,
                format!("{}: {why}", cx.what()),
            );
        }
    }
    d
}

/// docs/checks.md "Reading the request as the server does": parameter names as the
/// `fhir.server` reads them, and no override parameter in a form body it reads (IBM's
/// `getParameter` reads form bodies on any method). `_search` bodies: [`search_params`].
fn read_as_server(
    policy: &FhirPolicy,
    req: &mut FhirRequest,
    view: &RequestView<'_>,
) -> Option<Decision> {
    let profile = policy.server.profile();
    if let Err(why) = profile.read_names(&mut req.params) {
        return Some(deny(
            Reason::ParameterNameAmbiguous,
            format!("{}: {why}", req.label()),
        ));
    }
    let form = super::server::body_kind(view.content_type).is_form();
    if form && !req.via_post && !profile.override_params.is_empty() {
        let Some(body) = view.body else {
            return Some(Decision::NeedBody);
        };
        if profile.overrides_in_form(&String::from_utf8_lossy(body)) {
            return Some(deny(
                Reason::MethodOverride,
                format!(
                    "{}: method-override parameter in the form body",
                    req.label()
                ),
            ));
        }
    }
    None
}

fn rt(cx: &DecisionInput<'_>) -> String {
    cx.req.resource_type.clone().unwrap_or_default()
}
