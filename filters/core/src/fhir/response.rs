//! Decisions on the upstream's answer, made in the response phase: [`check_response`] for
//! reads the request alone cannot decide, [`check_stored`] for the read before a write
//! (docs/checks.md §3, BOLA).

use serde_json::Value;

use super::compartment::{
    is_patient_ref, names_other_patient, resource_matches_constraint, Compartment,
};
use super::policy::FhirPolicy;
use super::response_check::{
    PageCheck, PageGrant, ResourceCheck, ResponseCheck, SearchCheck, StoredCheck, StoredSearch,
};
use super::scope::Perms;
use crate::denial::Reason;

// ---------- the response ----------

fn resource_passes(cm: &Compartment, rc: &ResourceCheck, res: &Value) -> bool {
    if res.get("resourceType").and_then(Value::as_str) != Some(rc.resource_type.as_str()) {
        return false;
    }
    if let Some(id) = &rc.id {
        if res.get("id").and_then(Value::as_str) != Some(id.as_str()) {
            return false;
        }
    }
    rc.alternatives.iter().any(|a| {
        a.patient.as_deref().is_none_or(|p| cm.resource_in(res, p))
            && (a.constraint.is_empty() || resource_matches_constraint(res, &a.constraint))
    })
}

fn check_one(cm: &Compartment, rc: &ResourceCheck, v: &Value) -> bool {
    if !rc.history {
        return resource_passes(cm, rc, v);
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
                .all(|r| resource_passes(cm, rc, r))
        })
        .unwrap_or(true)
}

/// The entries of a searchset or page: (mode, resource), `None` when `entry` is not an array.
fn entries_of(v: &Value) -> Option<Vec<(&str, &Value)>> {
    if v.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return None;
    }
    let list = match v.get("entry") {
        None => return Some(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return None,
    };
    Some(
        list.iter()
            .filter_map(|e| {
                let mode = e
                    .get("search")
                    .and_then(|s| s.get("mode"))
                    .and_then(Value::as_str)
                    .unwrap_or("match");
                Some((mode, e.get("resource")?))
            })
            .collect(),
    )
}

fn resource_type(r: &Value) -> Option<&str> {
    r.get("resourceType").and_then(Value::as_str)
}

/// `Type/id` of a resource, as a relative reference names it.
fn reference_key(r: &Value) -> Option<String> {
    Some(format!(
        "{}/{}",
        resource_type(r)?,
        r.get("id").and_then(Value::as_str)?
    ))
}

/// An included Provenance (`_revinclude=Provenance:target`) is decided by what it is about:
/// every `Provenance.target` (FHIR R4 provenance.html, `Reference(Any)` 1..*) must be the
/// patient or a resource of the same answer that passed its check (`proven`). Anything else,
/// an absolute or logical reference included, is unprovable and refused.
fn provenance_proven(r: &Value, pid: &str, proven: &[String]) -> bool {
    let Some(targets) = r.get("target").and_then(Value::as_array) else {
        return false;
    };
    !targets.is_empty()
        && targets.iter().all(|t| {
            let Some(reference) = t.get("reference").and_then(Value::as_str) else {
                return false;
            };
            let unversioned = reference
                .split_once("/_history/")
                .map_or(reference, |(r, _)| r);
            is_patient_ref(unversioned, pid) || proven.iter().any(|k| k == unversioned)
        })
}

/// Included Provenance entries wait for the rest of the answer ([`provenance_proven`]).
fn is_included_provenance(mode: &str, r: &Value) -> bool {
    mode == "include" && resource_type(r) == Some("Provenance")
}

fn searchset_passes(cm: &Compartment, sc: &SearchCheck, v: &Value) -> bool {
    let Some(entries) = entries_of(v) else {
        return false;
    };
    let mut proven = Vec::new();
    for (mode, r) in &entries {
        if is_included_provenance(mode, r) {
            continue;
        }
        let rt = resource_type(r);
        // `$everything`: whatever the type, an entry that names another patient anywhere
        // (contained resources, nested Bundles too) is not this patient's to see.
        let everything = *mode != "outcome" && sc.non_compartment_types_pass;
        let ok = if everything && names_other_patient(r, &sc.patient) {
            false
        } else if everything && !rt.is_some_and(|t| cm.contains(t)) {
            rt.is_some()
        } else {
            match *mode {
                "outcome" => is_outcome(r),
                "include" => cm.resource_in(r, &sc.patient),
                _ => {
                    sc.resource_type.as_deref().is_none_or(|t| rt == Some(t))
                        && cm.resource_in(r, &sc.patient)
                        && (sc.constraints.is_empty()
                            || sc
                                .constraints
                                .iter()
                                .any(|c| resource_matches_constraint(r, c)))
                }
            }
        };
        if !ok {
            return false;
        }
        proven.extend(reference_key(r));
    }
    entries
        .iter()
        .filter(|(mode, r)| is_included_provenance(mode, r))
        .all(|(_, r)| provenance_proven(r, &sc.patient, &proven))
}

/// One page entry under one grant: the type granted (`s` for matches, `r` for the rest), in
/// the patient's compartment under a `patient/` grant (reference data the policy shares
/// excepted), and meeting the grant's constraint.
fn page_entry_passes(
    policy: &FhirPolicy,
    g: &PageGrant,
    mode: &str,
    r: &Value,
    proven: &[String],
) -> bool {
    let Some(rt) = resource_type(r) else {
        return false;
    };
    let letters = if mode == "match" { Perms::S } else { Perms::R };
    if !g.scope.covers_type(rt) || !g.scope.perms.contains(letters) {
        return false;
    }
    let confined = match &g.patient {
        None => true,
        Some(pid) if is_included_provenance(mode, r) => provenance_proven(r, pid, proven),
        Some(_) if policy.is_shared(rt) => true,
        Some(pid) => policy.compartment.resource_in(r, pid),
    };
    confined
        && (g.scope.constraint.is_empty() || resource_matches_constraint(r, &g.scope.constraint))
}

fn page_passes(policy: &FhirPolicy, pc: &PageCheck, v: &Value) -> bool {
    if v.get("type").and_then(Value::as_str) != Some("searchset") {
        return false;
    }
    let Some(entries) = entries_of(v) else {
        return false;
    };
    let mut proven = Vec::new();
    let passes = |mode: &str, r: &Value, proven: &[String]| {
        if mode == "outcome" {
            return is_outcome(r);
        }
        pc.grants
            .iter()
            .any(|g| page_entry_passes(policy, g, mode, r, proven))
    };
    for (mode, r) in &entries {
        if is_included_provenance(mode, r) {
            continue;
        }
        if !passes(mode, r, &proven) {
            return false;
        }
        proven.extend(reference_key(r));
    }
    entries
        .iter()
        .filter(|(mode, r)| is_included_provenance(mode, r))
        .all(|(mode, r)| passes(mode, r, &proven))
}

fn check_any(policy: &FhirPolicy, check: &ResponseCheck, v: &Value) -> bool {
    match check {
        ResponseCheck::Page(pc) => page_passes(policy, pc, v),
        ResponseCheck::Resource(rc) => check_one(&policy.compartment, rc, v),
        ResponseCheck::Searchset(sc) => searchset_passes(&policy.compartment, sc, v),
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
                            Some(r) => check_any(policy, c, r),
                        },
                    })
        }
    }
}

fn is_outcome(v: &Value) -> bool {
    v.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome")
}

/// The response headers a check reads besides `:status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseMeta<'a> {
    /// `X-Security-Context`: a Binary served as raw bytes names its `securityContext` here
    /// (R4 binary.html "Serving Binary Resources using the RESTful API").
    pub security_context: Option<&'a str>,
}

/// A Binary read answered with raw bytes (the client asked for a non-FHIR `Accept`, R4
/// binary.html): the body is the content, not a resource; the check is made on a Binary
/// carrying the `X-Security-Context` header as its `securityContext`.
fn raw_binary(
    check: &ResponseCheck,
    meta: &ResponseMeta<'_>,
    body: &[u8],
) -> Option<Result<Value, Reason>> {
    let ResponseCheck::Resource(rc) = check else {
        return None;
    };
    if rc.resource_type != "Binary" || rc.history {
        return None;
    }
    // The content may itself be FHIR JSON (a document kept as a Binary): only a Binary
    // resource is the resource itself.
    let is_resource = serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v.get("resourceType").and_then(Value::as_str) == Some("Binary"));
    if is_resource {
        return None;
    }
    Some(match meta.security_context {
        None => Err(Reason::BinarySecurityContextMissing),
        Some(sc) => Ok(serde_json::json!({
            "resourceType": "Binary",
            "id": rc.id,
            "securityContext": {"reference": sc.trim()},
        })),
    })
}

/// Decides a buffered response for [`Decision::AllowIfResponseMatches`](super::decide::Decision::AllowIfResponseMatches). Error statuses with
/// an empty or OperationOutcome body pass (they carry no resource); anything unreadable fails,
/// and so do 304, 412 and 206 (answers about the resource without it).
pub fn check_response(
    policy: &FhirPolicy,
    check: &ResponseCheck,
    status: u32,
    body: &[u8],
) -> Result<(), Reason> {
    check_response_meta(policy, check, status, &ResponseMeta::default(), body)
}

/// [`check_response`] with the response headers it may need ([`ResponseMeta`]).
pub fn check_response_meta(
    policy: &FhirPolicy,
    check: &ResponseCheck,
    status: u32,
    meta: &ResponseMeta<'_>,
    body: &[u8],
) -> Result<(), Reason> {
    check_response_into(policy, check, status, meta, body, &mut |_| {})
}

/// [`check_response_meta`] that also hands the answer it parsed to `seen` (the audit
/// record's patients, without a second parse).
pub fn check_response_into(
    policy: &FhirPolicy,
    check: &ResponseCheck,
    status: u32,
    meta: &ResponseMeta<'_>,
    body: &[u8],
    seen: &mut dyn FnMut(&Value),
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
    if success {
        if let Some(binary) = raw_binary(check, meta, body) {
            if let Ok(v) = &binary {
                seen(v);
            }
            return match binary {
                Ok(v) if check_any(policy, check, &v) => Ok(()),
                Ok(_) => Err(foreign),
                Err(reason) => Err(reason),
            };
        }
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Err(foreign);
    };
    seen(&v);
    if !success && is_outcome(&v) {
        return Ok(());
    }
    if let ResponseCheck::Searchset(sc) = check {
        if !sc.pin_read && total_above_matches(&v) {
            return Err(Reason::SearchTotalUnchecked);
        }
    }
    if check_any(policy, check, &v) {
        Ok(())
    } else {
        Err(foreign)
    }
}

/// docs/checks.md "No count oracle": a searchset's `total` (FHIR R4 Bundle.total: every
/// match, across pages) above its `match` entries. On a pinned search this is paging (page
/// one of 20 with total 57); on one the server did not pin, it counts other patients'.
fn total_above_matches(v: &Value) -> bool {
    let matches = v.get("entry").and_then(Value::as_array).map_or(0, |es| {
        es.iter()
            .filter(|e| {
                e.get("search")
                    .and_then(|s| s.get("mode"))
                    .and_then(Value::as_str)
                    .unwrap_or("match")
                    == "match"
            })
            .count()
    });
    v.get("total")
        .and_then(Value::as_u64)
        .is_some_and(|t| t > matches as u64)
}

/// The stored search of a conditional write: a complete searchset (no `next` page, `total`
/// not above what it shows) whose matches are few enough and each pass the check.
fn stored_matches_pass(
    cm: &Compartment,
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
    Ok(matches
        .iter()
        .all(|r| resource_passes(cm, &check.resource, r)))
}

/// Decides the answer to the stored read of [`Decision::AllowIfStoredMatches`](super::decide::Decision::AllowIfStoredMatches). `status` 0
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
        None => resource_passes(&policy.compartment, &check.resource, &v),
        Some(search) => stored_matches_pass(&policy.compartment, check, search, &v)?,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fhir::response_check::Alternative;

    #[test]
    fn raw_binary_is_decided_on_x_security_context() {
        let policy = FhirPolicy::from_section_json(b"{}").unwrap();
        let check = ResponseCheck::Resource(ResourceCheck {
            resource_type: "Binary".into(),
            id: Some("b1".into()),
            history: false,
            alternatives: vec![Alternative {
                patient: Some("a".into()),
                constraint: Vec::new(),
            }],
        });
        let run = |sc: Option<&str>, body: &[u8]| {
            let meta = ResponseMeta {
                security_context: sc,
            };
            check_response_meta(&policy, &check, 200, &meta, body)
        };
        assert_eq!(run(Some("Patient/a"), b"\x89PNG"), Ok(()));
        assert_eq!(
            run(Some("Patient/b"), b"\x89PNG"),
            Err(Reason::ResponseOutsideGrant)
        );
        assert_eq!(
            run(None, b"\x89PNG"),
            Err(Reason::BinarySecurityContextMissing)
        );
        // Raw JSON content is still raw: the header decides.
        assert_eq!(
            run(Some("Patient/b"), b"{\"a\":1}"),
            Err(Reason::ResponseOutsideGrant)
        );
        // FHIR JSON content (a Bundle kept as a Binary) served raw: the header decides.
        let doc = br#"{"resourceType":"Bundle","type":"document"}"#;
        assert_eq!(run(Some("Patient/a"), doc), Ok(()));
        assert_eq!(run(None, doc), Err(Reason::BinarySecurityContextMissing));
        // A FHIR Binary resource is decided on its own `securityContext`, not the header.
        let own =
            br#"{"resourceType":"Binary","id":"b1","securityContext":{"reference":"Patient/a"}}"#;
        assert_eq!(run(Some("Patient/b"), own), Ok(()));
        let other =
            br#"{"resourceType":"Binary","id":"b1","securityContext":{"reference":"Patient/b"}}"#;
        assert_eq!(
            run(Some("Patient/a"), other),
            Err(Reason::ResponseOutsideGrant)
        );
    }
}
