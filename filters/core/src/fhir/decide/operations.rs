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
    // For operations whose result spans every type, the grants of a context must together
    // cover every type (`covers_every_type`); the one grant check decides per context.
    let scope_type = if rule.all_types { None } else { t.as_deref() };
    let checks = cx.over_contexts(scope_type, letters, |ctx, pid| {
        if ctx == Context::Patient {
            // A patient grant allows it only with the result checked; a user/system grant may
            // still allow it outright.
            if level != Level::Instance || t.as_deref() != Some("Patient") {
                return cx.grant_denial(
                    Reason::UnsafeSearch,
                    "the operation cannot be confined to the patient",
                );
            }
            if cx.req.id.as_deref() != Some(pid) {
                return cx.grant_denial(cx.foreign(), "another patient's compartment");
            }
            let types = if name == "everything" {
                match everything_types(cx) {
                    Ok(t) => t,
                    Err(o) => return o,
                }
            } else {
                None
            };
            let ok = if let Some(types) = &types {
                // `_type`: only the types it names come back; each must be granted.
                cx.covers_every_type(Context::Patient, types.iter().map(String::as_str), letters)
            } else if rule.all_types {
                cx.covers_every_type(
                    Context::Patient,
                    cx.policy
                        .resource_types
                        .iter()
                        .map(String::as_str)
                        .filter(|x| cx.policy.compartment.contains(x) || cx.policy.is_shared(x)),
                    letters,
                )
            } else {
                cx.has_plain(Context::Patient, "Patient", letters)
            };
            if ok {
                Outcome::Check(Alternative {
                    patient: Some(pid.to_string()),
                    constraint: Vec::new(),
                })
            } else {
                Outcome::Deny(Denial {
                    reason: Reason::InsufficientScope,
                    required_scope: Some(format!(
                        "patient/{}.{}",
                        scope_type.unwrap_or("*"),
                        letters.letters()
                    )),
                    detail: format!("{}: not granted on every type it returns", cx.what()),
                })
            }
        } else {
            let ok = if rule.all_types {
                cx.covers_every_type(
                    ctx,
                    cx.policy.resource_types.iter().map(String::as_str),
                    letters,
                )
            } else {
                cx.has_plain_on(ctx, t.as_deref(), letters)
            };
            if ok {
                Outcome::Allow
            } else {
                Outcome::Deny(Denial {
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
    });
    match checks {
        Err(d) => d,
        // Only a patient grant asks for a check: the searchset must be that patient's.
        Ok(alternatives) => match alternatives.into_iter().find_map(|a| a.patient) {
            Some(patient) => {
                Decision::AllowIfResponseMatches(ResponseCheck::Searchset(SearchCheck {
                    resource_type: None,
                    patient,
                    constraints: Vec::new(),
                    non_compartment_types_pass: true,
                    pin_read: true,
                }))
            }
            None => deny(
                Reason::UnknownFhirRequest,
                format!("{}: undecidable", cx.what()),
            ),
        },
    }
}
