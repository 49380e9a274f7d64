//! Creates, updates and deletes (letters `c`, `u`, `d`): body checks, read before write for
//! writes by id, conditional writes (docs/checks.md §3).

use super::*;

/// The body as a resource of the path's type, or a denial.
pub(super) fn body_resource(cx: &DecisionInput<'_>, t: &str) -> Result<Value, Outcome> {
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
pub(super) fn confined_criteria(
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
    match pin(&cx.policy.compartment, t, params, pid) {
        Ok(_) => None,
        Err((reason, msg)) => Some(cx.grant_denial(reason, msg)),
    }
}

/// Patient-grant write of a whole resource (create, update): compartment check on the body.
pub(super) fn patient_write(
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
    } else if !cx.policy.compartment.contains(t) {
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
    if !cx.policy.compartment.written_for(&v, pid) {
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
pub(super) fn by_id_write(cx: &DecisionInput<'_>) -> bool {
    matches!(
        cx.req.interaction,
        Interaction::Update | Interaction::Patch | Interaction::Delete
    ) && !cx.req.conditional
        && cx.req.id.is_some()
}

/// Conditional update, patch or delete (criteria in the query).
pub(super) fn conditional_write(cx: &DecisionInput<'_>) -> bool {
    matches!(
        cx.req.interaction,
        Interaction::Update | Interaction::Patch | Interaction::Delete
    ) && cx.req.conditional
}

/// A conditional write a patient or constrained grant allowed on its criteria: the server
/// may still resolve them to other resources (a parameter it ignores, FHIR R4 §3.1.1.5.9),
/// so the matches are read first and checked like a write by id.
pub(super) fn conditional_check(g: &SmartScope, pid: &str) -> Outcome {
    Outcome::Check(Alternative {
        patient: (g.context == Context::Patient).then(|| pid.to_string()),
        constraint: g.constraint.clone(),
    })
}

/// Grants that allowed a write by id only with the stored resource checked.
pub(super) fn stored_decision(
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
pub(super) fn open_write(cx: &DecisionInput<'_>, t: &str, g: &SmartScope) -> Outcome {
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

pub(super) fn if_none_exist_params(cx: &DecisionInput<'_>) -> Result<Option<Vec<Param>>, Decision> {
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
pub(super) fn open_write_with_criteria(
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
pub(super) fn create(cx: &DecisionInput<'_>) -> Decision {
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
pub(super) fn update(cx: &DecisionInput<'_>) -> Decision {
    let t = rt(cx);
    let criteria = cx.req.conditional.then(|| cx.req.params.clone());
    let res = cx.over_grants(Some(&t), Perms::U, |g, pid| match g.context {
        Context::Patient => patient_write(cx, &t, g, pid, criteria.as_deref()),
        _ => open_write_with_criteria(cx, &t, g, criteria.as_deref()),
    });
    stored_decision(cx, t, res)
}

/// delete (incl. conditional): letter `d`. Under a patient grant a delete by id is allowed
/// once the stored resource is shown to be in the compartment (read before write); a
/// conditional delete pinned to the patient is confined by its criteria.
pub(super) fn delete(cx: &DecisionInput<'_>) -> Decision {
    let t = rt(cx);
    let params = cx.req.params.clone();
    let res = cx.over_grants(Some(&t), Perms::D, |g, pid| match g.context {
        Context::Patient => {
            if !cx.policy.compartment.contains(&t) {
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
