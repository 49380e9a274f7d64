//! Reads, searches and history (SMART letters `r` and `s`): confinement of searches to the
//! patient's compartment or to a grant's constraint (docs/checks.md §3).

use super::super::server::BodyReading;
use super::*;

/// Parameters that can reach outside any confinement (FHIR R4 §3.1.1.4.9/10, `_filter`).
pub(super) fn escape_param(p: &Param) -> Option<&'static str> {
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
pub(super) enum Names {
    PatientInContext,
    OtherPatient,
    /// The patient's bare id on a parameter that can reference several types
    /// (`subject=pid`): the server may read it as `Group/pid`, `Device/pid`...
    AmbiguousId,
    Neither,
}

pub(super) fn names(value: &str, pid: &str, typed_patient: bool) -> Names {
    if is_patient_ref(value, pid) || (typed_patient && value == pid) {
        return Names::PatientInContext;
    }
    // HAPI FHIR resolves an untyped reference value to any target type
    // (docs/checks.md "FHIR search parameters compared with HAPI FHIR").
    if value == pid {
        return Names::AmbiguousId;
    }
    if value.contains("Patient/") || typed_patient || (is_fhir_id(value) && !value.contains('/')) {
        return Names::OtherPatient;
    }
    Names::Neither
}

/// Is the search on `t` confined to patient `pid`? Returns the pinning parameter names.
/// Used for patient-grant searches and for the criteria of conditional writes.
pub(super) fn pin(
    cm: &Compartment,
    t: &str,
    params: &[Param],
    pid: &str,
) -> Result<Vec<String>, (Reason, &'static str)> {
    let pin_names = cm.pin_params(t);
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
        if vals.contains(&Names::AmbiguousId) {
            return Err((
                Reason::AmbiguousReference,
                "a bare id on a parameter that can reference several types",
            ));
        }
        let mine = vals
            .iter()
            .filter(|n| **n == Names::PatientInContext)
            .count();
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

/// read, vread, instance history: letter `r` (SMART v2.2).
pub(super) fn read(cx: &DecisionInput<'_>) -> Decision {
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
            Context::Patient if cx.policy.compartment.contains(&t) => alt(Some(pid.to_string())),
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

/// Query + form body parameters of a search, read as the `fhir.server` reads them
/// (docs/checks.md "Reading the request as the server does"): only a form body is
/// parameters (FHIR R4 §3.1.1.0); another body is ignored where the server provably ignores
/// it and refused (`search_body_not_form`) where servers differ.
pub(super) fn search_params(cx: &DecisionInput<'_>) -> Result<Vec<Param>, Decision> {
    let mut params = cx.req.params.clone();
    if cx.req.via_post {
        let Some(body) = cx.body else {
            return Err(Decision::NeedBody);
        };
        if body.is_empty() {
            return Ok(params);
        }
        let profile = cx.policy.server.profile();
        let kind = super::super::server::body_kind(cx.content_type);
        let text = std::str::from_utf8(body).ok();
        // A servlet container may read a form in any case of its media type (IBM's
        // `getParameter`): an override name in any form body is refused, read or not.
        if kind.is_form() && text.is_some_and(|t| profile.overrides_in_form(t)) {
            return Err(deny(
                Reason::MethodOverride,
                format!("{}: method-override parameter in the form body", cx.what()),
            ));
        }
        match profile.search_body(kind) {
            BodyReading::Ignored => return Ok(params),
            BodyReading::Refuse => {
                return Err(deny(
                    Reason::SearchBodyNotForm,
                    format!(
                        "{}: a `_search` body must be application/x-www-form-urlencoded",
                        cx.what()
                    ),
                ))
            }
            BodyReading::Form => {}
        }
        // RFC 6750 §2.2: the token comes only from `Authorization` (docs/checks.md §1.1).
        if text.is_some_and(super::super::server::form_has_access_token) {
            return Err(deny(
                Reason::TokenInBody,
                format!("{}: `access_token` in the form body", cx.what()),
            ));
        }
        let form = text.and_then(query::parse).ok_or_else(|| {
            deny(
                Reason::UnknownFhirRequest,
                format!("{}: form body is not x-www-form-urlencoded", cx.what()),
            )
        })?;
        params.extend(form);
        // Query and body together: a name repeated across both is a repeat.
        if let Err(why) = profile.read_names(&mut params) {
            return Err(deny(
                Reason::ParameterNameAmbiguous,
                format!("{}: {why}", cx.what()),
            ));
        }
    }
    Ok(params)
}

pub(super) use crate::fhir::query::include_parts;

/// A patient grant's type search: pinned to the patient, nothing that leaves the compartment.
pub(super) fn confined_search(
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
    } else if !cx.policy.compartment.contains(t) {
        return cx.grant_denial(
            Reason::CompartmentEscape,
            "type is outside the patient compartment",
        );
    } else {
        let pinned = match pin(&cx.policy.compartment, t, params, pid) {
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
                    // US Core's `_revinclude=Provenance:target`: each Provenance is checked
                    // on the answer, every target the patient or a checked entry of it.
                    ("_revinclude", Some(("Provenance", "target", target))) => {
                        target.is_none_or(|x| x == t)
                            && cx.policy.serves("Provenance")
                            && cx.has_plain(Context::Patient, "Provenance", Perms::R)
                    }
                    // Patient?_id=pid&_revinclude=X:p where p puts X in the compartment.
                    ("_revinclude", Some((src, param, target))) => {
                        t == "Patient"
                            && src != "Patient"
                            && cx.policy.compartment.pin_params(src).contains(&param)
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
pub(super) fn open_search(cx: &DecisionInput<'_>, params: &[Param], g: &SmartScope) -> Outcome {
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

pub(super) fn search_type(cx: &DecisionInput<'_>) -> Decision {
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
pub(super) fn searchset_decision(
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
                // `search_params` keeps only parameters the server reads.
                pin_read: true,
            }))
        }
    }
}

pub(super) fn search_compartment(cx: &DecisionInput<'_>) -> Decision {
    let target = cx.req.resource_type.clone();
    if let Some(t) = &target {
        if !cx.policy.compartment.contains(t) {
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
pub(super) fn pinned_outcome(g: &SmartScope, pid: &str) -> Outcome {
    Outcome::Check(Alternative {
        patient: Some(pid.to_string()),
        constraint: g.constraint.clone(),
    })
}

/// `GET [base]?...`, `POST [base]/_search`: needs `s` on every type searched; never under
/// a patient grant (nothing confines it).
pub(super) fn search_system(cx: &DecisionInput<'_>) -> Decision {
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
pub(super) fn history(cx: &DecisionInput<'_>) -> Decision {
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
