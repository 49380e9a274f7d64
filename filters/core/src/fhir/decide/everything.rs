//! `Patient/<pid>/$everything` under a patient grant: which parameters may shape the set
//! (docs/checks.md §3 "`$everything`"). The answer itself is checked entry by entry
//! (`response.rs`), whatever the types.
//!
//! R4 patient-operation-everything.html defines `start`, `end`, `_since`, `_type`, `_count`.
//! Servers add their own; each one accepted here can only narrow or page the set:
//! `_offset` (paging), `_sort`, `_lastUpdated`, `_content`, `_text`, `_filter` (HAPI
//! `BaseJpaResourceProviderPatient.patientInstanceEverything`), `_format`, `_pretty`,
//! `_summary`, `_elements`. `_type` names only types the token is granted.
//! Refused (reason `everything_parameter`):
//! - `_mdm`: HAPI (`BaseJpaResourceProviderPatient.patientInstanceEverything`, the
//!   `Constants.PARAM_MDM` operation parameter) expands the patient to every patient MDM links
//!   to it, so the set covers other patients' compartments;
//! - `_id` (HAPI type level: the set of patients) and any name not listed above, in any case
//!   or with a modifier: the guard cannot tell what it does.

use super::*;

/// Parameters that narrow or page the set (see the module docs).
const NARROWING: &[&str] = &[
    "start",
    "end",
    "_since",
    "_type",
    "_count",
    "_offset",
    "_sort",
    "_lastUpdated",
    "_content",
    "_text",
    "_filter",
    "_format",
    "_pretty",
    "_summary",
    "_elements",
];

/// The operation's parameters: the query, plus a `POST` body's `Parameters` (FHIR R4
/// operations.html: a POST may carry them in a `Parameters` resource).
fn everything_params(cx: &DecisionInput<'_>) -> Result<Vec<Param>, Outcome> {
    let mut out = cx.req.params.clone();
    if cx.req.method != "POST" {
        return Ok(out);
    }
    let Some(body) = cx.body else {
        return Err(Outcome::NeedBody);
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(out);
    }
    let bad = || {
        cx.grant_denial(
            Reason::UnknownFhirRequest,
            "the body is not a FHIR `Parameters` resource",
        )
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| bad())?;
    if v.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(bad());
    }
    for p in v
        .get("parameter")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = p.get("name").and_then(Value::as_str).ok_or_else(bad)?;
        // The value, whichever `value[x]` carries it (`valueString`, `valueCode`, `valueDate`).
        let value = p
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")))
            .and_then(|(_, x)| x.as_str())
            .unwrap_or("");
        out.push(Param::new(name, value));
    }
    Ok(out)
}

/// Checks `$everything`'s parameters under a patient grant. Returns the types `_type` names
/// (`None`: every type), each served by the policy.
pub(super) fn everything_types(cx: &DecisionInput<'_>) -> Result<Option<Vec<String>>, Outcome> {
    let params = everything_params(cx)?;
    if let Some(p) = params
        .iter()
        .find(|p| !NARROWING.contains(&p.name.as_str()))
    {
        let what = if p.name.eq_ignore_ascii_case("_mdm") {
            "`_mdm` widens the set to MDM-linked patients"
        } else {
            "a parameter the guard cannot show to narrow the set"
        };
        return Err(cx.grant_denial(Reason::EverythingParameter, what));
    }
    let mut types: Option<Vec<String>> = None;
    for p in params.iter().filter(|p| p.name == "_type") {
        for t in split_or(&p.value) {
            if !cx.policy.serves(&t) {
                return Err(cx.grant_denial(
                    Reason::EverythingParameter,
                    "`_type` names a type not served here",
                ));
            }
            let list = types.get_or_insert_with(Vec::new);
            if !list.contains(&t) {
                list.push(t);
            }
        }
    }
    Ok(types)
}
