//! The FHIR scope decision (docs/checks.md §3): SMART grants × FHIR interaction × patient context.
//!
//! Pure functions. [`decide_request`] looks at the request (and its body when it says
//! [`Decision::NeedBody`]); reads whose compartment the request cannot show come back as
//! [`Decision::AllowIfResponseMatches`], and [`check_response`] decides them on the body.
//!
//! A request is allowed when ONE grant of the token allows it on its own. Patient grants
//! confine to the compartment of the token's patient; user/system grants are checked for
//! type and letters (the FHIR server applies its own user-level rules on top).

use serde_json::Value;

use crate::claims::VerifiedToken;
use crate::denial::Reason;
use crate::jose::jws::parse_strict_value;
use base64::Engine;

use super::compartment::{
    compartment_elements, in_patient_compartment, is_patient_ref, pin_params,
    resource_in_compartment, resource_matches_constraint, resource_written_for,
};
use super::interaction::{classify, is_fhir_id, FhirRequest, Interaction, Level};
use super::policy::FhirPolicy;
use super::query::{self, Param};
use super::scope::{grants, Context, Perms, SmartScope};

/// What the filter does with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Forward, but buffer the response and pass it only if [`check_response`] accepts it.
    AllowIfResponseMatches(ResponseCheck),
    /// Update, patch or delete by id that the request alone cannot confine (a patient or
    /// query-constrained grant): read the stored resource first (`GET` the same path) and
    /// forward the request only if [`check_stored`] accepts the answer (BOLA, docs/checks.md §3).
    AllowIfStoredMatches(StoredCheck),
    /// The request body is needed to decide: buffer it and ask again.
    NeedBody,
    Deny(Denial),
}

/// What the stored resource a write by id targets must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheck {
    /// The stored resource (type, id) must pass any of these alternatives.
    pub resource: ResourceCheck,
    /// A 404 on the read is fine: update-as-create (FHIR R4 §3.1.0.4.1); the body that
    /// creates it already passed the request checks.
    pub absent_ok: bool,
    /// A conditional update, patch or delete (FHIR R4 http.html#cond-update): the stored read
    /// is a search with the request's own criteria, and every match must pass `resource`.
    pub search: Option<Box<StoredSearch>>,
}

/// The stored read of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSearch {
    /// The request's query string, as sent (the server resolves the write with the same).
    pub query: String,
    /// At most this many matches (update and patch act on one; more is refused).
    pub max_matches: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    /// For `insufficient_scope`: what would have been enough (RFC 6750 §3 `scope`).
    pub required_scope: Option<String>,
    /// Names the interaction and type; never ids, token or patient data.
    pub detail: String,
}

/// One way a read can turn out to be allowed: every member that is set must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    /// The resource must be in this patient's compartment.
    pub patient: Option<String>,
    /// The resource must match these `param=value` pairs (a query-constrained scope).
    pub constraint: Vec<Param>,
}

/// What a single resource in the response must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceCheck {
    pub resource_type: String,
    pub id: Option<String>,
    /// The response is a history Bundle of versions of that resource.
    pub history: bool,
    /// Passes when any alternative holds.
    pub alternatives: Vec<Alternative>,
}

/// What every resource of a searchset must be (a search a patient grant allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchCheck {
    /// Type of the `match` entries (`None`: any, for `Patient/{id}/*`).
    pub resource_type: Option<String>,
    /// The patient whose compartment every entry (`match` and `include`) must be in.
    pub patient: String,
    /// `match` entries must pass any of these constraints (empty list: no constraint).
    pub constraints: Vec<Vec<Param>>,
    /// Entries of types outside the patient compartment pass (`$everything` also returns
    /// referenced Practitioner, Medication, ...); compartment types must still be the patient's.
    pub non_compartment_types_pass: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseCheck {
    Resource(ResourceCheck),
    /// A searchset confined by a patient grant: checked entry by entry, so a server that
    /// ignores the pinning parameter (lenient handling) cannot leak another patient's data.
    Searchset(SearchCheck),
    /// Batch/transaction: entry `i` of the response Bundle must pass its check.
    BundleEntries(Vec<(usize, ResponseCheck)>),
}

/// The request as the filter sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path_with_query: &'a str,
    /// `If-None-Exist` header (conditional create, FHIR R4 §3.1.0.8.1).
    pub if_none_exist: Option<&'a str>,
    pub body: Option<&'a [u8]>,
}

/// Decides a FHIR request. `token` is `None` when no verified token was handed over.
pub fn decide_request(
    policy: &FhirPolicy,
    token: Option<&VerifiedToken>,
    method: &str,
    path_with_query: &str,
    body: Option<&[u8]>,
) -> Decision {
    decide(
        policy,
        token,
        &RequestView {
            method,
            path_with_query,
            if_none_exist: None,
            body,
        },
    )
}

pub fn decide(
    policy: &FhirPolicy,
    token: Option<&VerifiedToken>,
    req: &RequestView<'_>,
) -> Decision {
    decide_at(policy, token, req, 0)
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
    /// The query string as sent (criteria of a conditional write).
    raw_query: &'a str,
}

impl DecisionInput<'_> {
    /// `Observation read` ...: what the detail strings start with.
    fn what(&self) -> String {
        match &self.req.resource_type {
            Some(t) => format!("{} {t}", self.req.label()),
            None => format!("{} *", self.req.label()),
        }
    }

    fn foreign(&self) -> Reason {
        if self.policy.hide_foreign_as_not_found {
            Reason::ResponseOutsideGrantHidden
        } else {
            Reason::CompartmentEscape
        }
    }

    /// RFC 6750 §3 `scope`: one scope per accepted context that would allow this.
    fn required_scope(&self, rt: Option<&str>, letters: Perms) -> String {
        let t = rt.unwrap_or("*");
        self.policy
            .contexts
            .iter()
            .map(|c| format!("{}/{t}.{}", c.name(), letters.letters()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Has any unconstrained grant in `ctx` with `letters` on type `t`?
    fn has_plain(&self, ctx: Context, t: &str, letters: Perms) -> bool {
        self.grants.iter().any(|g| {
            g.context == ctx
                && g.covers_type(t)
                && g.perms.contains(letters)
                && g.constraint.is_empty()
        })
    }

    /// Runs `f` over every grant with `letters` on `rt` (`None` = needs a `*` grant) and
    /// combines: any Allow wins, then NeedBody, then response checks, else the first denial.
    fn over_grants<F>(
        &self,
        rt: Option<&str>,
        letters: Perms,
        mut f: F,
    ) -> Result<Vec<Alternative>, Decision>
    where
        F: FnMut(&SmartScope, &str) -> Outcome,
    {
        let mut checks = Vec::new();
        let mut need_body = false;
        let mut first: Option<Denial> = None;
        for g in &self.grants {
            let type_ok = match rt {
                Some(t) => g.covers_type(t),
                None => g.is_wildcard(),
            };
            if !type_ok || !g.perms.contains(letters) {
                continue;
            }
            let pid = match (g.context, &self.pid) {
                (Context::Patient, None) => {
                    first.get_or_insert(Denial {
                        reason: Reason::PatientContextMissing,
                        required_scope: Some(self.required_scope(rt, letters)),
                        detail: format!(
                            "{}: a patient/ grant needs a patient in context (claim `{}`)",
                            self.what(),
                            self.policy.patient_claim
                        ),
                    });
                    continue;
                }
                (Context::Patient, Some(p)) => p.as_str(),
                _ => "",
            };
            match f(g, pid) {
                Outcome::Allow => return Err(Decision::Allow),
                Outcome::Check(a) => checks.push(a),
                Outcome::NeedBody => need_body = true,
                Outcome::Deny(mut d) => {
                    if d.reason == Reason::InsufficientScope && d.required_scope.is_none() {
                        d.required_scope = Some(self.required_scope(rt, letters));
                    }
                    first.get_or_insert(d);
                }
            }
        }
        if need_body {
            return Err(Decision::NeedBody);
        }
        if !checks.is_empty() {
            return Ok(checks);
        }
        Err(Decision::Deny(first.unwrap_or_else(|| Denial {
            reason: Reason::InsufficientScope,
            required_scope: Some(self.required_scope(rt, letters)),
            detail: format!("{}: no granted scope allows it", self.what()),
        })))
    }

    /// Like `over_grants` where no grant can ask for a response check.
    fn over_grants_request_only<F>(&self, rt: Option<&str>, letters: Perms, f: F) -> Decision
    where
        F: FnMut(&SmartScope, &str) -> Outcome,
    {
        match self.over_grants(rt, letters, f) {
            Err(d) => d,
            // Not produced by the callers of this function; refuse rather than guess.
            Ok(_) => deny(
                Reason::UnknownFhirRequest,
                format!("{}: undecidable", self.what()),
            ),
        }
    }

    fn grant_denial(&self, reason: Reason, msg: &str) -> Outcome {
        Outcome::Deny(denial(reason, format!("{}: {msg}", self.what())))
    }
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

/// Parameters that can reach outside any confinement (FHIR R4 §3.1.1.4.9/10, `_filter`).
fn escape_param(p: &Param) -> Option<&'static str> {
    if p.is_chained() {
        return Some("chained parameters");
    }
    match p.base_name() {
        "_has" => Some("`_has` reverse chaining"),
        "_filter" => Some("`_filter`"),
        "_query" => Some("named queries (`_query`)"),
        "_list" => Some("`_list`"),
        "_include" | "_revinclude" if p.modifier().is_some() => {
            Some("`_include`/`_revinclude` modifiers (`:iterate`)")
        }
        _ => None,
    }
}

/// How one search-value names a patient, for pinning (`patient=pid`, `subject=Patient/pid`).
#[derive(PartialEq)]
enum Names {
    PatientInContext,
    OtherPatient,
    Neither,
}

fn names(value: &str, pid: &str, typed_patient: bool) -> Names {
    if value == pid || is_patient_ref(value, pid) {
        return Names::PatientInContext;
    }
    if value.contains("Patient/") || typed_patient || (is_fhir_id(value) && !value.contains('/')) {
        return Names::OtherPatient;
    }
    Names::Neither
}

/// Is the search on `t` confined to patient `pid`? Returns the pinning parameter names.
/// Used for patient-grant searches and for the criteria of conditional writes.
fn pin(t: &str, params: &[Param], pid: &str) -> Result<Vec<String>, (Reason, &'static str)> {
    let pin_names = pin_params(t);
    let mut pinned = Vec::new();
    let mut foreign = false;
    for p in params {
        if !pin_names.contains(&p.base_name()) {
            continue;
        }
        let typed = match p.modifier() {
            None => p.base_name() == "patient" || t == "Patient",
            Some("Patient") => true,
            Some(_) => continue, // `:missing`, `:not`, `:identifier` only narrow (AND).
        };
        let vals: Vec<Names> = p.or_values().iter().map(|v| names(v, pid, typed)).collect();
        let mine = vals.iter().filter(|n| **n == Names::PatientInContext).count();
        if mine == vals.len() {
            pinned.push(p.base_name().to_string());
        } else if mine > 0 {
            return Err((
                Reason::UnsafeSearch,
                "an OR-list names another patient or target",
            ));
        } else if vals.contains(&Names::OtherPatient) {
            foreign = true;
        }
    }
    if foreign {
        return Err((
            Reason::CompartmentEscape,
            "the search names another patient",
        ));
    }
    if pinned.is_empty() {
        return Err((
            Reason::UnsafeSearch,
            "the search is not pinned to the patient in context",
        ));
    }
    Ok(pinned)
}

// ---------- the decision ----------

fn decide_at(
    policy: &FhirPolicy,
    token: Option<&VerifiedToken>,
    view: &RequestView<'_>,
    depth: u8,
) -> Decision {
    let req = match classify(&policy.base_path, view.method, view.path_with_query) {
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
    let cx = DecisionInput {
        policy,
        grants: grants(token, &policy.contexts),
        pid: patient_in_context(policy, token),
        req: &req,
        body: view.body,
        if_none_exist: view.if_none_exist,
        raw_query: view
            .path_with_query
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or(""),
    };
    match req.interaction {
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
    }
}

fn rt(cx: &DecisionInput<'_>) -> String {
    cx.req.resource_type.clone().unwrap_or_default()
}

/// read, vread, instance history: letter `r` (SMART v2.2).
fn read(cx: &DecisionInput<'_>) -> Decision {
    let t = rt(cx);
    let id = cx.req.id.clone().unwrap_or_default();
    let res = cx.over_grants(Some(&t), Perms::R, |g, pid| {
        let constrained = !g.constraint.is_empty();
        let alt = |patient: Option<String>| {
            Outcome::Check(Alternative {
                patient,
                constraint: g.constraint.clone(),
            })
        };
        match g.context {
            Context::Patient if t == "Patient" => {
                if id != pid {
                    return cx.grant_denial(cx.foreign(), "not the patient in context");
                }
                if constrained {
                    alt(None)
                } else {
                    Outcome::Allow
                }
            }
            // The request cannot show the compartment: decide on the response (§3).
            Context::Patient if in_patient_compartment(&t) => alt(Some(pid.to_string())),
            Context::Patient if cx.policy.is_shared(&t) => {
                if constrained {
                    alt(None)
                } else {
                    Outcome::Allow
                }
            }
            Context::Patient => cx.grant_denial(
                Reason::CompartmentEscape,
                "type is outside the patient compartment",
            ),
            _ if constrained => alt(None),
            _ => Outcome::Allow,
        }
    });
    match res {
        Err(d) => d,
        Ok(alternatives) => {
            Decision::AllowIfResponseMatches(ResponseCheck::Resource(ResourceCheck {
                resource_type: t,
                id: cx.req.id.clone(),
                history: cx.req.interaction == Interaction::HistoryInstance,
                alternatives,
            }))
        }
    }
}

/// Query + form body parameters of a search.
fn search_params(cx: &DecisionInput<'_>) -> Result<Vec<Param>, Decision> {
    let mut params = cx.req.params.clone();
    if cx.req.via_post {
        let Some(body) = cx.body else {
            return Err(Decision::NeedBody);
        };
        let form = std::str::from_utf8(body)
            .ok()
            .and_then(query::parse)
            .ok_or_else(|| {
                deny(
                    Reason::UnknownFhirRequest,
                    format!("{}: form body is not x-www-form-urlencoded", cx.what()),
                )
            })?;
        params.extend(form);
    }
    Ok(params)
}

/// `_include` / `_revinclude` values: `Type:param[:Target]` (FHIR R4 §3.1.1.5.4).
fn include_parts(v: &str) -> Option<(&str, &str, Option<&str>)> {
    let mut it = v.split(':');
    let src = it.next()?;
    let param = it.next()?;
    let target = it.next();
    if it.next().is_some() || src.is_empty() || param.is_empty() {
        return None;
    }
    Some((src, param, target))
}

/// A patient grant's type search: pinned to the patient, nothing that leaves the compartment.
fn confined_search(
    cx: &DecisionInput<'_>,
    t: &str,
    params: &[Param],
    g: &SmartScope,
    pid: &str,
) -> Outcome {
    if let Some(why) = params.iter().find_map(escape_param) {
        return cx.grant_denial(
            Reason::UnsafeSearch,
            &format!("{why} cannot be confined to the patient"),
        );
    }
    let includes: Vec<&Param> = params
        .iter()
        .filter(|p| matches!(p.base_name(), "_include" | "_revinclude"))
        .collect();
    if cx.policy.is_shared(t) {
        // Reference data (Medication, ...): unconfined, but nothing may be pulled in.
        if !includes.is_empty() {
            return cx.grant_denial(
                Reason::UnsafeSearch,
                "`_include`/`_revinclude` leave the compartment",
            );
        }
    } else if !in_patient_compartment(t) {
        return cx.grant_denial(
            Reason::CompartmentEscape,
            "type is outside the patient compartment",
        );
    } else {
        let pinned = match pin(t, params, pid) {
            Ok(p) => p,
            Err((reason, msg)) => return cx.grant_denial(reason, msg),
        };
        for p in includes {
            for v in p.or_values() {
                let ok = match (p.base_name(), include_parts(&v)) {
                    // Only the pinning reference itself: it can only bring in this patient.
                    ("_include", Some((src, param, target))) => {
                        src == t
                            && t != "Patient"
                            && pinned.iter().any(|n| n == param)
                            && target.is_none_or(|x| x == "Patient")
                            && cx.has_plain(Context::Patient, "Patient", Perms::R)
                    }
                    // Patient?_id=pid&_revinclude=X:p where p puts X in the compartment.
                    ("_revinclude", Some((src, param, target))) => {
                        t == "Patient"
                            && src != "Patient"
                            && pin_params(src).contains(&param)
                            && target.is_none_or(|x| x == "Patient")
                            && cx.policy.serves(src)
                            && cx.has_plain(Context::Patient, src, Perms::R)
                    }
                    _ => false,
                };
                if !ok {
                    return cx.grant_denial(
                        Reason::UnsafeSearch,
                        &format!(
                            "`{}` leaves the compartment or is not granted",
                            p.base_name()
                        ),
                    );
                }
            }
        }
    }
    if !carries(params, &g.constraint) {
        return cx.grant_denial(
            Reason::QueryConstraintMissing,
            "the search lacks the scope's parameters",
        );
    }
    if cx.policy.is_shared(t) {
        return Outcome::Allow;
    }
    pinned_outcome(g, pid)
}

/// A user/system grant's search: chains and includes need grants on what they reach.
fn open_search(cx: &DecisionInput<'_>, params: &[Param], g: &SmartScope) -> Outcome {
    for p in params {
        if escape_param(p).is_some() && !g.is_wildcard() {
            return cx.grant_denial(
                Reason::UnsafeSearch,
                "chained/`_has`/`_filter`/iterate parameters need a `*` grant",
            );
        }
        if matches!(p.base_name(), "_include" | "_revinclude") && !g.is_wildcard() {
            for v in p.or_values() {
                // The type pulled in: `_include=A:p:Target` -> Target, `_revinclude=A:p` -> A.
                let reached = match (p.base_name(), include_parts(&v)) {
                    ("_include", Some((_, _, Some(target)))) => Some(target),
                    ("_revinclude", Some((src, _, _))) => Some(src),
                    _ => None,
                };
                let ok = reached
                    .is_some_and(|x| cx.policy.serves(x) && cx.has_plain(g.context, x, Perms::R));
                if !ok {
                    return Outcome::Deny(Denial {
                        reason: Reason::InsufficientScope,
                        required_scope: Some(format!(
                            "{}/{}.r",
                            g.context.name(),
                            reached.unwrap_or("*")
                        )),
                        detail: format!(
                            "{}: `{}` reaches a type that is not granted",
                            cx.what(),
                            p.base_name()
                        ),
                    });
                }
            }
        }
    }
    if !carries(params, &g.constraint) {
        return cx.grant_denial(
            Reason::QueryConstraintMissing,
            "the search lacks the scope's parameters",
        );
    }
    Outcome::Allow
}

fn search_type(cx: &DecisionInput<'_>) -> Decision {
    let t = rt(cx);
    let params = match search_params(cx) {
        Ok(p) => p,
        Err(d) => return d,
    };
    let res = cx.over_grants(Some(&t), Perms::S, |g, pid| match g.context {
        Context::Patient => confined_search(cx, &t, &params, g, pid),
        _ => open_search(cx, &params, g),
    });
    searchset_decision(cx, Some(t), res)
}

/// A search allowed only by patient grants is also checked on the response (defence in
/// depth: FHIR servers may ignore unknown parameters, FHIR R4 §3.1.1.5.9 `handling`).
fn searchset_decision(
    cx: &DecisionInput<'_>,
    resource_type: Option<String>,
    res: Result<Vec<Alternative>, Decision>,
) -> Decision {
    match res {
        Err(d) => d,
        Ok(alts) => {
            let Some(patient) = cx.pid.clone() else {
                return deny(Reason::PatientContextMissing, cx.what());
            };
            let constraints = if alts.iter().any(|a| a.constraint.is_empty()) {
                Vec::new()
            } else {
                alts.into_iter().map(|a| a.constraint).collect()
            };
            Decision::AllowIfResponseMatches(ResponseCheck::Searchset(SearchCheck {
                resource_type,
                patient,
                constraints,
                non_compartment_types_pass: false,
            }))
        }
    }
}

fn search_compartment(cx: &DecisionInput<'_>) -> Decision {
    let target = cx.req.resource_type.clone();
    if let Some(t) = &target {
        if !in_patient_compartment(t) {
            return deny(
                Reason::UnknownFhirRequest,
                format!("{}: type is not in the patient compartment", cx.what()),
            );
        }
    }
    let cid = cx.req.compartment_id.clone().unwrap_or_default();
    let params = match search_params(cx) {
        Ok(p) => p,
        Err(d) => return d,
    };
    let res = cx.over_grants(target.as_deref(), Perms::S, |g, pid| match g.context {
        Context::Patient => {
            if cid != pid {
                return cx.grant_denial(cx.foreign(), "another patient's compartment");
            }
            if let Some(why) = params.iter().find_map(escape_param) {
                return cx.grant_denial(
                    Reason::UnsafeSearch,
                    &format!("{why} cannot be confined to the patient"),
                );
            }
            if params
                .iter()
                .any(|p| matches!(p.base_name(), "_include" | "_revinclude"))
            {
                return cx.grant_denial(
                    Reason::UnsafeSearch,
                    "`_include`/`_revinclude` leave the compartment",
                );
            }
            if !carries(&params, &g.constraint) {
                return cx.grant_denial(
                    Reason::QueryConstraintMissing,
                    "the search lacks the scope's parameters",
                );
            }
            pinned_outcome(g, pid)
        }
        _ => open_search(cx, &params, g),
    });
    searchset_decision(cx, target, res)
}

/// A patient-grant search that passed the request checks: allowed, with the response checked.
fn pinned_outcome(g: &SmartScope, pid: &str) -> Outcome {
    Outcome::Check(Alternative {
        patient: Some(pid.to_string()),
        constraint: g.constraint.clone(),
    })
}

/// `GET [base]?...`, `POST [base]/_search`: needs `s` on every type searched; never under
/// a patient grant (nothing confines it).
fn search_system(cx: &DecisionInput<'_>) -> Decision {
    let params = match search_params(cx) {
        Ok(p) => p,
        Err(d) => return d,
    };
    let types: Vec<String> = params
        .iter()
        .filter(|p| p.name == "_type")
        .flat_map(|p| p.or_values())
        .collect();
    let rest: Vec<Param> = params
        .iter()
        .filter(|p| p.name != "_type")
        .cloned()
        .collect();
    let run = |rt: Option<&str>| {
        cx.over_grants_request_only(rt, Perms::S, |g, _| match g.context {
            Context::Patient => cx.grant_denial(
                Reason::UnsafeSearch,
                "a system-level search cannot be confined to the patient",
            ),
            _ => open_search(cx, &rest, g),
        })
    };
    if types.is_empty() {
        return run(None);
    }
    for t in &types {
        if !cx.policy.serves(t) {
            return deny(
                Reason::UnknownFhirRequest,
                format!("{}: `_type` names a type not served here", cx.what()),
            );
        }
        let d = run(Some(t));
        if d != Decision::Allow {
            return d;
        }
    }
    Decision::Allow
}

/// Type and system history: `s` (SMART v2.2). No parameters can confine them.
fn history(cx: &DecisionInput<'_>) -> Decision {
    let t = cx.req.resource_type.clone();
    cx.over_grants_request_only(t.as_deref(), Perms::S, |g, _| match g.context {
        Context::Patient => cx.grant_denial(
            Reason::UnsafeSearch,
            "history across resources cannot be confined to the patient",
        ),
        _ if !g.constraint.is_empty() => cx.grant_denial(
            Reason::QueryConstraintMissing,
            "history cannot carry the scope's parameters",
        ),
        _ => Outcome::Allow,
    })
}

/// The body as a resource of the path's type, or a denial.
fn body_resource(cx: &DecisionInput<'_>, t: &str) -> Result<Value, Outcome> {
    let Some(body) = cx.body else {
        return Err(Outcome::NeedBody);
    };
    let Some(v) = parse_resource(body) else {
        return Err(cx.grant_denial(
            Reason::UnknownFhirRequest,
            "body is not a FHIR JSON resource",
        ));
    };
    if v.get("resourceType").and_then(Value::as_str) != Some(t) {
        return Err(cx.grant_denial(
            Reason::UnknownFhirRequest,
            "body resourceType differs from the URL",
        ));
    }
    if let (Some(id), Some(body_id)) = (&cx.req.id, v.get("id")) {
        if body_id.as_str() != Some(id.as_str()) {
            return Err(cx.grant_denial(Reason::UnknownFhirRequest, "body id differs from the URL"));
        }
    }
    Ok(v)
}

/// Criteria of a conditional write under a patient grant must pin the patient like a search.
fn confined_criteria(
    cx: &DecisionInput<'_>,
    t: &str,
    params: &[Param],
    pid: &str,
) -> Option<Outcome> {
    if let Some(why) = params.iter().find_map(escape_param) {
        return Some(cx.grant_denial(
            Reason::UnsafeSearch,
            &format!("{why} in conditional criteria"),
        ));
    }
    if params
        .iter()
        .any(|p| matches!(p.base_name(), "_include" | "_revinclude"))
    {
        return Some(cx.grant_denial(Reason::UnsafeSearch, "`_include` in conditional criteria"));
    }
    match pin(t, params, pid) {
        Ok(_) => None,
        Err((reason, msg)) => Some(cx.grant_denial(reason, msg)),
    }
}

/// Patient-grant write of a whole resource (create, update): compartment check on the body.
fn patient_write(
    cx: &DecisionInput<'_>,
    t: &str,
    g: &SmartScope,
    pid: &str,
    criteria: Option<&[Param]>,
) -> Outcome {
    if t == "Patient" {
        if cx.req.interaction == Interaction::Create {
            return cx.grant_denial(
                Reason::WriteOutsideCompartment,
                "a patient grant cannot create Patient resources",
            );
        }
        if cx.req.id.as_deref().is_some_and(|id| id != pid) {
            return cx.grant_denial(Reason::CompartmentEscape, "not the patient in context");
        }
    } else if !in_patient_compartment(t) {
        return cx.grant_denial(
            Reason::WriteOutsideCompartment,
            "type is outside the patient compartment",
        );
    }
    if let Some(c) = criteria {
        if let Some(o) = confined_criteria(cx, t, c, pid) {
            return o;
        }
    }
    let v = match body_resource(cx, t) {
        Ok(v) => v,
        Err(o) => return o,
    };
    if has_conditional_reference(&v) {
        return cx.grant_denial(
            Reason::ConditionalReference,
            "the resource holds a conditional reference",
        );
    }
    if cx.req.conditional && t != "Patient" && v.get("id").is_some() {
        // FHIR R4 http.html#cond-update "no matches, id provided": the server may update (or
        // create) the resource by that id, which may be another patient's.
        return cx.grant_denial(
            Reason::UnsafeConditionalWrite,
            "a conditional update must not carry an id",
        );
    }
    if t == "Patient" && cx.req.conditional && v.get("id").and_then(Value::as_str) != Some(pid) {
        return cx.grant_denial(
            Reason::WriteOutsideCompartment,
            "the resource is not the patient in context",
        );
    }
    if !resource_written_for(&v, pid) {
        return cx.grant_denial(
            Reason::WriteOutsideCompartment,
            "the resource does not reference (only) the patient in context",
        );
    }
    if !g.constraint.is_empty() && !resource_matches_constraint(&v, &g.constraint) {
        return cx.grant_denial(
            Reason::InsufficientScope,
            "the resource does not match the scope's parameters",
        );
    }
    if conditional_write(cx) {
        return conditional_check(g, pid);
    }
    if by_id_write(cx) && !(t == "Patient" && g.constraint.is_empty()) {
        // The body is the patient's, but the stored resource it replaces must be too
        // (otherwise a PUT moves another patient's resource into this compartment).
        return Outcome::Check(Alternative {
            patient: Some(pid.to_string()),
            constraint: g.constraint.clone(),
        });
    }
    Outcome::Allow
}

/// Update, patch or delete naming the resource by id (not conditional: those are pinned
/// by their criteria).
fn by_id_write(cx: &DecisionInput<'_>) -> bool {
    matches!(
        cx.req.interaction,
        Interaction::Update | Interaction::Patch | Interaction::Delete
    ) && !cx.req.conditional
        && cx.req.id.is_some()
}

/// Conditional update, patch or delete (criteria in the query).
fn conditional_write(cx: &DecisionInput<'_>) -> bool {
    matches!(
        cx.req.interaction,
        Interaction::Update | Interaction::Patch | Interaction::Delete
    ) && cx.req.conditional
}

/// A conditional write a patient or constrained grant allowed on its criteria: the server
/// may still resolve them to other resources (a parameter it ignores, FHIR R4 §3.1.1.5.9),
/// so the matches are read first and checked like a write by id.
fn conditional_check(g: &SmartScope, pid: &str) -> Outcome {
    Outcome::Check(Alternative {
        patient: (g.context == Context::Patient).then(|| pid.to_string()),
        constraint: g.constraint.clone(),
    })
}

/// Grants that allowed a write by id only with the stored resource checked.
fn stored_decision(
    cx: &DecisionInput<'_>,
    t: String,
    res: Result<Vec<Alternative>, Decision>,
) -> Decision {
    match res {
        Err(d) => d,
        Ok(alternatives) if conditional_write(cx) => Decision::AllowIfStoredMatches(StoredCheck {
            resource: ResourceCheck {
                resource_type: t,
                id: None,
                history: false,
                alternatives,
            },
            absent_ok: true,
            search: Some(Box::new(StoredSearch {
                query: cx.raw_query.to_string(),
                max_matches: (cx.req.interaction != Interaction::Delete).then_some(1),
            })),
        }),
        Ok(_) if !by_id_write(cx) => deny(
            Reason::UnknownFhirRequest,
            format!("{}: undecidable", cx.what()),
        ),
        Ok(alternatives) => Decision::AllowIfStoredMatches(StoredCheck {
            resource: ResourceCheck {
                resource_type: t,
                id: cx.req.id.clone(),
                history: false,
                alternatives,
            },
            absent_ok: cx.req.interaction == Interaction::Update,
            search: None,
        }),
    }
}

/// User/system write of a whole resource: only a constrained grant looks at the body.
fn open_write(cx: &DecisionInput<'_>, t: &str, g: &SmartScope) -> Outcome {
    if g.constraint.is_empty() {
        return Outcome::Allow;
    }
    match body_resource(cx, t) {
        Ok(v) if has_conditional_reference(&v) => cx.grant_denial(
            Reason::ConditionalReference,
            "the resource holds a conditional reference",
        ),
        Ok(v) if cx.req.conditional && v.get("id").is_some() => cx.grant_denial(
            Reason::UnsafeConditionalWrite,
            "a conditional update must not carry an id",
        ),
        Ok(v) if resource_matches_constraint(&v, &g.constraint) && conditional_write(cx) => {
            conditional_check(g, "")
        }
        // An update by id: the stored resource must match the constraint too.
        Ok(v) if resource_matches_constraint(&v, &g.constraint) && by_id_write(cx) => {
            Outcome::Check(Alternative {
                patient: None,
                constraint: g.constraint.clone(),
            })
        }
        Ok(v) if resource_matches_constraint(&v, &g.constraint) => Outcome::Allow,
        Ok(_) => cx.grant_denial(
            Reason::InsufficientScope,
            "the resource does not match the scope's parameters",
        ),
        Err(o) => o,
    }
}

fn if_none_exist_params(cx: &DecisionInput<'_>) -> Result<Option<Vec<Param>>, Decision> {
    match cx.if_none_exist {
        None => Ok(None),
        Some(h) => {
            let q = h.split_once('?').map(|(_, q)| q).unwrap_or(h);
            query::parse(q).map(Some).ok_or_else(|| {
                deny(
                    Reason::UnknownFhirRequest,
                    format!("{}: malformed If-None-Exist", cx.what()),
                )
            })
        }
    }
}

/// A user/system write: conditional criteria must be a search the grant allows, then the
/// body must match the grant's constraint.
fn open_write_with_criteria(
    cx: &DecisionInput<'_>,
    t: &str,
    g: &SmartScope,
    criteria: Option<&[Param]>,
) -> Outcome {
    if let Some(c) = criteria {
        if let Outcome::Deny(d) = open_search(cx, c, g) {
            return Outcome::Deny(d);
        }
    }
    open_write(cx, t, g)
}

/// create (incl. conditional create): letter `c`.
fn create(cx: &DecisionInput<'_>) -> Decision {
    let t = rt(cx);
    let criteria = match if_none_exist_params(cx) {
        Ok(c) => c,
        Err(d) => return d,
    };
    cx.over_grants_request_only(Some(&t), Perms::C, |g, pid| match g.context {
        Context::Patient => patient_write(cx, &t, g, pid, criteria.as_deref()),
        _ => open_write_with_criteria(cx, &t, g, criteria.as_deref()),
    })
}

/// update (incl. conditional, update-as-create): letter `u`.
fn update(cx: &DecisionInput<'_>) -> Decision {
    let t = rt(cx);
    let criteria = cx.req.conditional.then(|| cx.req.params.clone());
    let res = cx.over_grants(Some(&t), Perms::U, |g, pid| match g.context {
        Context::Patient => patient_write(cx, &t, g, pid, criteria.as_deref()),
        _ => open_write_with_criteria(cx, &t, g, criteria.as_deref()),
    });
    stored_decision(cx, t, res)
}

/// Why a patch body is refused: not a patch at all, or a path the guard cannot prove.
type PatchRefusal = (Reason, &'static str);

/// A FHIR element name as it appears in JSON (`status`, `valueQuantity`, `_status` for a
/// primitive's extensions). Anything else in a patch path is refused (docs/checks.md).
fn is_element_name(s: &str) -> bool {
    let s = s.strip_prefix('_').unwrap_or(s);
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic()) && b.all(|c| c.is_ascii_alphanumeric())
}

/// An array index in a JSON Pointer (RFC 6901 §4: `0` or no leading zeros).
fn is_index(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

/// A reference string the guard cannot resolve: conditional (`Patient?identifier=...`,
/// FHIR R4 http.html#trules), also percent-encoded.
fn is_conditional_reference(r: &str) -> bool {
    r.contains('?') || r.to_ascii_lowercase().contains("%3f")
}

/// Any `Reference.reference` anywhere in `v` that is conditional.
fn has_conditional_reference(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, x)| {
            (k == "reference" && x.as_str().is_some_and(is_conditional_reference))
                || has_conditional_reference(x)
        }),
        Value::Array(a) => a.iter().any(has_conditional_reference),
        _ => false,
    }
}

/// RFC 6902 `path`/`from` as the guard accepts them (RFC 6901): `/element(/element|/index)*`,
/// `-` only last in an `add`; no `~0`/`~1` escapes. Returns the top-level element name.
fn json_pointer_element(p: &str, dash_ok: bool) -> Result<String, PatchRefusal> {
    let unsafe_path = (
        Reason::UnsafePatchPath,
        "a JSON Patch path is not a plain element path",
    );
    let Some(rest) = p.strip_prefix('/') else {
        return Err(unsafe_path);
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let first = segs.first().copied().unwrap_or("");
    if !is_element_name(first) {
        return Err(unsafe_path);
    }
    for (i, s) in segs.iter().enumerate().skip(1) {
        let last = i + 1 == segs.len();
        if !(is_element_name(s) || is_index(s) || (last && dash_ok && *s == "-")) {
            return Err(unsafe_path);
        }
    }
    Ok(first.trim_start_matches('_').to_string())
}

/// FHIRPath Patch `path` as the guard accepts it: `Type(.element)*`, nothing else (no
/// functions such as `where()`/`select()`/`ofType()`, indexers, `$this`, spaces). Returns the
/// top-level element, `None` for the resource itself.
fn fhirpath_element(p: &str, t: &str) -> Result<Option<String>, PatchRefusal> {
    let mut segs = p.split('.');
    if segs.next() != Some(t) {
        return Err((
            Reason::UnsafePatchPath,
            "a FHIRPath Patch path does not start with the resource type",
        ));
    }
    let rest: Vec<&str> = segs.collect();
    if rest
        .iter()
        .any(|s| !is_element_name(s) || s.starts_with('_'))
    {
        return Err((
            Reason::UnsafePatchPath,
            "a FHIRPath Patch path is not a plain element path",
        ));
    }
    Ok(rest.first().map(|s| s.to_string()))
}

/// Element names a patch body touches: JSON Patch (RFC 6902) `path`/`from`, or FHIRPath
/// Patch (`Parameters` with `operation` parts, FHIR R4 fhirpatch.html). Only plain element
/// paths are accepted; a conditional reference in a value is refused.
fn patched_elements(body: &[u8], t: &str) -> Result<Vec<String>, PatchRefusal> {
    let not_patch = (
        Reason::UnknownFhirRequest,
        "body is not a JSON Patch or FHIRPath Patch",
    );
    let cond_ref = (
        Reason::ConditionalReference,
        "the patch writes a conditional reference",
    );
    let v: Value = serde_json::from_slice(body).map_err(|_| not_patch)?;
    let mut out = Vec::new();
    if let Value::Array(ops) = &v {
        for op in ops {
            let kind = op.get("op").and_then(Value::as_str).ok_or(not_patch)?;
            if !matches!(
                kind,
                "add" | "remove" | "replace" | "move" | "copy" | "test"
            ) {
                return Err(not_patch);
            }
            if kind == "test" {
                // Changes nothing (RFC 6902 §4.6).
                continue;
            }
            let path = op.get("path").and_then(Value::as_str).ok_or(not_patch)?;
            out.push(json_pointer_element(path, kind == "add")?);
            if matches!(kind, "move" | "copy") {
                let from = op.get("from").and_then(Value::as_str).ok_or(not_patch)?;
                out.push(json_pointer_element(from, false)?);
            }
            if let Some(value) = op.get("value") {
                let writes_ref = path.ends_with("/reference")
                    && value.as_str().is_some_and(is_conditional_reference);
                if writes_ref || has_conditional_reference(value) {
                    return Err(cond_ref);
                }
            }
        }
        return Ok(out);
    }
    if v.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(not_patch);
    }
    if has_conditional_reference(&v) {
        return Err(cond_ref);
    }
    for param in v
        .get("parameter")
        .and_then(Value::as_array)
        .ok_or(not_patch)?
    {
        if param.get("name").and_then(Value::as_str) != Some("operation") {
            return Err(not_patch);
        }
        let parts = param
            .get("part")
            .and_then(Value::as_array)
            .ok_or(not_patch)?;
        let names: Vec<&str> = parts
            .iter()
            .map(|p| p.get("name").and_then(Value::as_str).unwrap_or(""))
            .collect();
        if names
            .iter()
            .enumerate()
            .any(|(i, n)| names[..i].contains(n))
        {
            // The guard and the server could read different parts.
            return Err((
                Reason::UnsafePatchPath,
                "a FHIRPath Patch operation repeats a part",
            ));
        }
        let part = |n: &str| {
            parts
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(n))
        };
        let text = |n: &str, key: &str| part(n).and_then(|p| p.get(key)).and_then(Value::as_str);
        let kind = text("type", "valueCode")
            .or_else(|| text("type", "valueString"))
            .ok_or(not_patch)?;
        if !matches!(kind, "add" | "insert" | "delete" | "replace" | "move") {
            return Err(not_patch);
        }
        let path = text("path", "valueString").ok_or(not_patch)?;
        let touched = match fhirpath_element(path, t)? {
            Some(e) => e,
            None if kind == "add" => {
                let name = text("name", "valueString").unwrap_or("");
                if !is_element_name(name) || name.starts_with('_') {
                    return Err((
                        Reason::UnsafePatchPath,
                        "a FHIRPath Patch `name` is not an element name",
                    ));
                }
                name.to_string()
            }
            // The resource itself: refused below as empty.
            None => String::new(),
        };
        // A conditional reference written as a plain string (`...reference` + valueString).
        let writes_ref =
            path.ends_with(".reference") || text("name", "valueString") == Some("reference");
        let value_str = part("value").and_then(|p| {
            p.as_object()?
                .iter()
                .find(|(k, _)| k.starts_with("value"))
                .and_then(|(_, x)| x.as_str())
        });
        if writes_ref && value_str.is_some_and(is_conditional_reference) {
            return Err(cond_ref);
        }
        out.push(touched);
    }
    Ok(out)
}

/// patch (incl. conditional): letter `u`. Under a patient grant a patch must not touch the
/// elements that place the resource in a compartment (it must not move it to another patient).
fn patch(cx: &DecisionInput<'_>) -> Decision {
    let t = rt(cx);
    let criteria = cx.req.conditional.then(|| cx.req.params.clone());
    let res = cx.over_grants(Some(&t), Perms::U, |g, pid| match g.context {
        Context::Patient => {
            if t == "Patient" {
                if cx.req.conditional {
                    return cx.grant_denial(
                        Reason::UnsafeSearch,
                        "conditional patch of Patient cannot be confined",
                    );
                }
                if cx.req.id.as_deref() != Some(pid) {
                    return cx
                        .grant_denial(Reason::CompartmentEscape, "not the patient in context");
                }
                if !g.constraint.is_empty() {
                    return cx.grant_denial(
                        Reason::InsufficientScope,
                        "a constrained grant cannot authorise a patch",
                    );
                }
                return Outcome::Allow;
            }
            if !in_patient_compartment(&t) {
                return cx.grant_denial(
                    Reason::WriteOutsideCompartment,
                    "type is outside the patient compartment",
                );
            }
            if !g.constraint.is_empty() {
                return cx.grant_denial(
                    Reason::InsufficientScope,
                    "a constrained grant cannot authorise a patch",
                );
            }
            if let Some(c) = &criteria {
                if let Some(o) = confined_criteria(cx, &t, c, pid) {
                    return o;
                }
            }
            let Some(body) = cx.body else {
                return Outcome::NeedBody;
            };
            let touched = match patched_elements(body, &t) {
                Ok(t) => t,
                Err((reason, msg)) => return cx.grant_denial(reason, msg),
            };
            let mut guarded = compartment_elements(&t);
            // Changing what the resource is changes which compartment rules apply.
            guarded.extend(["resourceType", "id"]);
            if touched
                .iter()
                .any(|e| e.is_empty() || guarded.contains(&e.as_str()))
            {
                return cx.grant_denial(
                    Reason::WriteOutsideCompartment,
                    "the patch changes the patient reference",
                );
            }
            if by_id_write(cx) || conditional_write(cx) {
                // The patch keeps the compartment elements; the stored resource must be
                // the patient's for that to keep it in this compartment.
                return pinned_outcome(g, pid);
            }
            Outcome::Allow
        }
        _ => {
            if !g.constraint.is_empty() {
                return cx.grant_denial(
                    Reason::InsufficientScope,
                    "a constrained grant cannot authorise a patch",
                );
            }
            if let Some(c) = &criteria {
                return open_search(cx, c, g);
            }
            Outcome::Allow
        }
    });
    stored_decision(cx, t, res)
}

/// delete (incl. conditional): letter `d`. Under a patient grant a delete by id is allowed
/// once the stored resource is shown to be in the compartment (read before write); a
/// conditional delete pinned to the patient is confined by its criteria.
fn delete(cx: &DecisionInput<'_>) -> Decision {
    let t = rt(cx);
    let params = cx.req.params.clone();
    let res = cx.over_grants(Some(&t), Perms::D, |g, pid| match g.context {
        Context::Patient => {
            if !in_patient_compartment(&t) {
                return cx.grant_denial(
                    Reason::WriteOutsideCompartment,
                    "type is outside the patient compartment",
                );
            }
            if cx.req.conditional {
                if let Some(o) = confined_criteria(cx, &t, &params, pid) {
                    return o;
                }
                if !carries(&params, &g.constraint) {
                    return cx.grant_denial(
                        Reason::QueryConstraintMissing,
                        "the criteria lack the scope's parameters",
                    );
                }
                return conditional_check(g, pid);
            }
            if t == "Patient" {
                if cx.req.id.as_deref() != Some(pid) {
                    return cx
                        .grant_denial(Reason::CompartmentEscape, "not the patient in context");
                }
                if g.constraint.is_empty() {
                    return Outcome::Allow;
                }
            }
            // Read before write: the stored resource must be in the compartment.
            pinned_outcome(g, pid)
        }
        _ => {
            if cx.req.conditional {
                return match open_search(cx, &params, g) {
                    Outcome::Allow if !g.constraint.is_empty() => conditional_check(g, ""),
                    o => o,
                };
            }
            if !g.constraint.is_empty() {
                // Read before write: the stored resource must match the constraint.
                return Outcome::Check(Alternative {
                    patient: None,
                    constraint: g.constraint.clone(),
                });
            }
            Outcome::Allow
        }
    });
    stored_decision(cx, t, res)
}

/// Operations: only those the policy lists, at the levels it lists, with its letters.
fn operation(cx: &DecisionInput<'_>) -> Decision {
    let Some((name, level)) = cx.req.operation.clone() else {
        return deny(Reason::UnknownFhirRequest, "operation without a name");
    };
    let Some(rule) = cx.policy.operation(&name) else {
        return deny(
            Reason::UnknownFhirRequest,
            format!("{}: operation is not allowed here", cx.what()),
        );
    };
    if !rule.levels.contains(&level) {
        return deny(
            Reason::UnknownFhirRequest,
            format!("{}: operation is not allowed at this level", cx.what()),
        );
    }
    let t = cx.req.resource_type.clone();
    if let Some(t) = &t {
        if !rule.resource_types.is_empty() && !rule.resource_types.contains(t) {
            return deny(
                Reason::UnknownFhirRequest,
                format!("{}: operation is not allowed on this type", cx.what()),
            );
        }
    }
    let letters = rule.perms;
    // For operations whose result spans every type, the grant is checked per type below.
    let scope_type = if rule.all_types { None } else { t.as_deref() };
    let mut first: Option<Denial> = None;
    // A patient grant allows it only with the result checked; a user/system grant may still
    // allow it outright.
    let mut patient_ok: Option<String> = None;
    for ctx in &cx.policy.contexts {
        if !cx.grants.iter().any(|g| g.context == *ctx) {
            continue;
        }
        let verdict = match ctx {
            Context::Patient => {
                let Some(pid) = &cx.pid else {
                    first.get_or_insert(Denial {
                        reason: Reason::PatientContextMissing,
                        required_scope: Some(cx.required_scope(scope_type, letters)),
                        detail: format!(
                            "{}: a patient/ grant needs a patient in context",
                            cx.what()
                        ),
                    });
                    continue;
                };
                if level != Level::Instance || t.as_deref() != Some("Patient") {
                    Err(denial(
                        Reason::UnsafeSearch,
                        format!(
                            "{}: the operation cannot be confined to the patient",
                            cx.what()
                        ),
                    ))
                } else if cx.req.id.as_deref() != Some(pid.as_str()) {
                    Err(denial(
                        cx.foreign(),
                        format!("{}: another patient's compartment", cx.what()),
                    ))
                } else {
                    let types: Vec<&String> = if rule.all_types {
                        cx.policy
                            .resource_types
                            .iter()
                            .filter(|x| in_patient_compartment(x) || cx.policy.is_shared(x))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let ok = if rule.all_types {
                        types
                            .iter()
                            .all(|x| cx.has_plain(Context::Patient, x, letters))
                    } else {
                        cx.has_plain(Context::Patient, "Patient", letters)
                    };
                    if ok {
                        patient_ok = Some(pid.clone());
                        continue;
                    } else {
                        Err(Denial {
                            reason: Reason::InsufficientScope,
                            required_scope: Some(format!(
                                "patient/{}.{}",
                                scope_type.unwrap_or("*"),
                                letters.letters()
                            )),
                            detail: format!("{}: not granted on every type it returns", cx.what()),
                        })
                    }
                }
            }
            _ => {
                let ok = if rule.all_types {
                    cx.policy
                        .resource_types
                        .iter()
                        .all(|x| cx.has_plain(*ctx, x, letters))
                } else {
                    match &t {
                        Some(t) => cx.has_plain(*ctx, t, letters),
                        None => cx.grants.iter().any(|g| {
                            g.context == *ctx
                                && g.is_wildcard()
                                && g.perms.contains(letters)
                                && g.constraint.is_empty()
                        }),
                    }
                };
                if ok {
                    Ok(())
                } else {
                    Err(Denial {
                        reason: Reason::InsufficientScope,
                        required_scope: Some(format!(
                            "{}/{}.{}",
                            ctx.name(),
                            scope_type.unwrap_or("*"),
                            letters.letters()
                        )),
                        detail: format!("{}: no granted scope allows it", cx.what()),
                    })
                }
            }
        };
        match verdict {
            Ok(()) => return Decision::Allow,
            Err(d) => {
                first.get_or_insert(d);
            }
        }
    }
    if let Some(patient) = patient_ok {
        return Decision::AllowIfResponseMatches(ResponseCheck::Searchset(SearchCheck {
            resource_type: None,
            patient,
            constraints: Vec::new(),
            non_compartment_types_pass: true,
        }));
    }
    Decision::Deny(first.unwrap_or_else(|| Denial {
        reason: Reason::InsufficientScope,
        required_scope: Some(cx.required_scope(scope_type, letters)),
        detail: format!("{}: no granted scope allows it", cx.what()),
    }))
}

/// Batch / transaction (FHIR R4 §3.1.0.11): every entry authorised on its own; one
/// forbidden entry refuses the whole Bundle.
fn batch(
    policy: &FhirPolicy,
    token: &VerifiedToken,
    cx: &DecisionInput<'_>,
    depth: u8,
) -> Decision {
    if depth > 0 {
        return deny(
            Reason::BundleEntryForbidden,
            "a Bundle entry cannot itself be a batch",
        );
    }
    let Some(body) = cx.body else {
        return Decision::NeedBody;
    };
    let bad = |m: &str| deny(Reason::UnknownFhirRequest, format!("batch: {m}"));
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return bad("body is not JSON");
    };
    if v.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return bad("body is not a Bundle");
    }
    match v.get("type").and_then(Value::as_str) {
        Some("batch") | Some("transaction") => {}
        _ => return bad("Bundle.type is not batch or transaction"),
    }
    let empty = Vec::new();
    let entries = match v.get("entry") {
        None => &empty,
        Some(Value::Array(a)) => a,
        Some(_) => return bad("Bundle.entry is not an array"),
    };
    let base = if policy.base_path == "/" {
        ""
    } else {
        policy.base_path.as_str()
    };
    let mut checks = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let entry_bad = |m: &str| deny(Reason::UnknownFhirRequest, format!("entry[{i}]: {m}"));
        let Some(request) = e.get("request") else {
            return entry_bad("no request");
        };
        let method = request.get("method").and_then(Value::as_str).unwrap_or("");
        let url = request.get("url").and_then(Value::as_str).unwrap_or("");
        if url.is_empty() || url.starts_with('/') || url.contains("://") {
            return entry_bad("request.url must be relative to the FHIR base");
        }
        if !matches!(method, "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE") {
            return entry_bad("request.method is not a FHIR method");
        }
        let body: Option<Vec<u8>> = match (method, e.get("resource")) {
            ("PATCH", Some(r))
                if r.get("resourceType").and_then(Value::as_str) == Some("Binary") =>
            {
                match r
                    .get("data")
                    .and_then(Value::as_str)
                    .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                {
                    Some(bytes) => Some(bytes),
                    None => return entry_bad("Binary patch without base64 data"),
                }
            }
            (_, Some(r)) => Some(serde_json::to_vec(r).unwrap_or_default()),
            (_, None) => None,
        };
        let path = format!("{base}/{url}");
        let view = RequestView {
            method,
            path_with_query: &path,
            if_none_exist: request.get("ifNoneExist").and_then(Value::as_str),
            body: Some(body.as_deref().unwrap_or(&[])),
        };
        match decide_at(policy, Some(token), &view, depth + 1) {
            Decision::Allow => {}
            Decision::AllowIfResponseMatches(
                c @ (ResponseCheck::Resource(_) | ResponseCheck::Searchset(_)),
            ) => checks.push((i, c)),
            Decision::AllowIfResponseMatches(ResponseCheck::BundleEntries(_))
            | Decision::NeedBody => {
                return entry_bad("cannot be decided");
            }
            // The stored resource would have to be read per entry; not done inside a Bundle.
            Decision::AllowIfStoredMatches(_) => {
                return Decision::Deny(Denial {
                    reason: Reason::BundleEntryForbidden,
                    required_scope: None,
                    detail: format!(
                        "entry[{i}] refused: a write by id under a patient or constrained grant needs the stored resource read first; send it on its own"
                    ),
                });
            }
            Decision::Deny(d) => {
                let reason = match d.reason {
                    Reason::UnknownFhirRequest
                    | Reason::RequestTooLarge
                    | Reason::DuplicateJsonMember
                    | Reason::UnsafePatchPath
                    | Reason::ConditionalReference
                    | Reason::UnsafeConditionalWrite => d.reason,
                    _ => Reason::BundleEntryForbidden,
                };
                return Decision::Deny(Denial {
                    reason,
                    required_scope: d.required_scope,
                    detail: format!("entry[{i}] refused ({}): {}", d.reason.code(), d.detail),
                });
            }
        }
    }
    if checks.is_empty() {
        Decision::Allow
    } else {
        Decision::AllowIfResponseMatches(ResponseCheck::BundleEntries(checks))
    }
}

// ---------- the response ----------

fn resource_passes(rc: &ResourceCheck, res: &Value) -> bool {
    if res.get("resourceType").and_then(Value::as_str) != Some(rc.resource_type.as_str()) {
        return false;
    }
    if let Some(id) = &rc.id {
        if res.get("id").and_then(Value::as_str) != Some(id.as_str()) {
            return false;
        }
    }
    rc.alternatives.iter().any(|a| {
        a.patient
            .as_deref()
            .is_none_or(|p| resource_in_compartment(res, p))
            && (a.constraint.is_empty() || resource_matches_constraint(res, &a.constraint))
    })
}

fn check_one(rc: &ResourceCheck, v: &Value) -> bool {
    if !rc.history {
        return resource_passes(rc, v);
    }
    // Instance history: a Bundle of versions; every version present must pass.
    if v.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return false;
    }
    v.get("entry")
        .and_then(Value::as_array)
        .map(|es| {
            es.iter()
                .filter_map(|e| e.get("resource"))
                .all(|r| resource_passes(rc, r))
        })
        .unwrap_or(true)
}

fn searchset_passes(sc: &SearchCheck, v: &Value) -> bool {
    if v.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return false;
    }
    let empty = Vec::new();
    let entries = match v.get("entry") {
        None => &empty,
        Some(Value::Array(a)) => a,
        Some(_) => return false,
    };
    entries.iter().all(|e| {
        let Some(r) = e.get("resource") else {
            return true;
        };
        let mode = e
            .get("search")
            .and_then(|s| s.get("mode"))
            .and_then(Value::as_str)
            .unwrap_or("match");
        let rt = r.get("resourceType").and_then(Value::as_str);
        if mode != "outcome"
            && sc.non_compartment_types_pass
            && !rt.is_some_and(in_patient_compartment)
        {
            return rt.is_some();
        }
        match mode {
            "outcome" => is_outcome(r),
            "include" => resource_in_compartment(r, &sc.patient),
            _ => {
                sc.resource_type.as_deref().is_none_or(|t| rt == Some(t))
                    && resource_in_compartment(r, &sc.patient)
                    && (sc.constraints.is_empty()
                        || sc
                            .constraints
                            .iter()
                            .any(|c| resource_matches_constraint(r, c)))
            }
        }
    })
}

fn check_any(check: &ResponseCheck, v: &Value) -> bool {
    match check {
        ResponseCheck::Resource(rc) => check_one(rc, v),
        ResponseCheck::Searchset(sc) => searchset_passes(sc, v),
        ResponseCheck::BundleEntries(list) => {
            let entries = v.get("entry").and_then(Value::as_array);
            v.get("resourceType").and_then(Value::as_str) == Some("Bundle")
                && list
                    .iter()
                    .all(|(i, c)| match entries.and_then(|es| es.get(*i)) {
                        None => false,
                        Some(e) => match e.get("resource") {
                            // docs/checks.md "Conditional reads": a 304/412 entry is refused.
                            None => super::stream::entry_without_resource_passes(
                                e.pointer("/response/status").and_then(Value::as_str),
                            ),
                            Some(r) if is_outcome(r) => true,
                            Some(r) => check_any(c, r),
                        },
                    })
        }
    }
}

fn is_outcome(v: &Value) -> bool {
    v.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome")
}

/// Decides a buffered response for [`Decision::AllowIfResponseMatches`]. Error statuses with
/// an empty or OperationOutcome body pass (they carry no resource); anything unreadable fails,
/// and so do 304, 412 and 206 (answers about the resource without it).
pub fn check_response(
    policy: &FhirPolicy,
    check: &ResponseCheck,
    status: u32,
    body: &[u8],
) -> Result<(), Reason> {
    if body.len() > policy.max_response_bytes {
        return Err(Reason::ResponseTooLarge);
    }
    let foreign = if policy.hide_foreign_as_not_found {
        Reason::ResponseOutsideGrantHidden
    } else {
        Reason::ResponseOutsideGrant
    };
    let success = (200..300).contains(&status);
    // docs/checks.md "Conditional reads": 304/412/206 answer without the resource; refused.
    if super::stream::unverifiable_status(status) {
        return Err(foreign);
    }
    if !success && body.is_empty() {
        return Ok(());
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Err(foreign);
    };
    if !success && is_outcome(&v) {
        return Ok(());
    }
    if check_any(check, &v) {
        Ok(())
    } else {
        Err(foreign)
    }
}

/// The stored search of a conditional write: a complete searchset (no `next` page, `total`
/// not above what it shows) whose matches are few enough and each pass the check.
fn stored_matches_pass(
    check: &StoredCheck,
    search: &StoredSearch,
    v: &Value,
) -> Result<bool, Reason> {
    if v.get("resourceType").and_then(Value::as_str) != Some("Bundle")
        || v.get("type").and_then(Value::as_str) != Some("searchset")
    {
        return Err(Reason::StoredReadFailed);
    }
    let empty = Vec::new();
    let entries = match v.get("entry") {
        None => &empty,
        Some(Value::Array(a)) => a,
        Some(_) => return Err(Reason::StoredReadFailed),
    };
    let paged = v.get("link").and_then(Value::as_array).is_some_and(|ls| {
        ls.iter()
            .any(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
    });
    let matches: Vec<&Value> = entries
        .iter()
        .filter(|e| {
            let mode = e
                .get("search")
                .and_then(|s| s.get("mode"))
                .and_then(Value::as_str)
                .unwrap_or("match");
            mode == "match"
        })
        .filter_map(|e| e.get("resource"))
        .collect();
    let total_above = v
        .get("total")
        .and_then(Value::as_u64)
        .is_some_and(|t| t > matches.len() as u64);
    if paged || total_above || search.max_matches.is_some_and(|m| matches.len() > m) {
        return Err(Reason::UnsafeConditionalWrite);
    }
    Ok(matches.iter().all(|r| resource_passes(&check.resource, r)))
}

/// Decides the answer to the stored read of [`Decision::AllowIfStoredMatches`]. `status` 0
/// means no answer (timeout, reset). Fails closed on anything but a 2xx the check accepts,
/// or a 404 where update-as-create is allowed.
pub fn check_stored(
    policy: &FhirPolicy,
    check: &StoredCheck,
    status: u32,
    body: &[u8],
) -> Result<(), Reason> {
    if status == 404 && check.search.is_none() {
        if check.absent_ok {
            return Ok(());
        }
        return Err(Reason::StoredResourceMissing);
    }
    if !(200..300).contains(&status) {
        return Err(Reason::StoredReadFailed);
    }
    if body.len() > policy.max_response_bytes {
        return Err(Reason::ResponseTooLarge);
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Err(Reason::StoredReadFailed);
    };
    if v.get("resourceType").and_then(Value::as_str).is_none() {
        return Err(Reason::StoredReadFailed);
    }
    let passes = match &check.search {
        None => resource_passes(&check.resource, &v),
        Some(search) => stored_matches_pass(check, search, &v)?,
    };
    if passes {
        return Ok(());
    }
    if policy.hide_foreign_as_not_found {
        Err(Reason::ResponseOutsideGrantHidden)
    } else if check
        .resource
        .alternatives
        .iter()
        .any(|a| a.patient.is_some())
    {
        Err(Reason::WriteOutsideCompartment)
    } else {
        Err(Reason::InsufficientScope)
    }
}
