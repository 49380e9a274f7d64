//! Operations (`$everything`, ...): only those the policy lists, at its levels, with its
//! letters.

use super::*;

/// Operations: only those the policy lists, at the levels it lists, with its letters.
pub(super) fn operation(cx: &DecisionInput<'_>) -> Decision {
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
    // The grant test is the one of `grants.rs` (`has_plain_on`); operations keep their own loop
    // over contexts because an all-types operation may be allowed by several grants together
    // (one per type), which the per-grant `over_grants` cannot express.
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
                    cx.has_plain_on(*ctx, t.as_deref(), letters)
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
