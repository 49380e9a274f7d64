//! Batch and transaction Bundles (FHIR R4 §3.1.0.11): every entry decided on its own.

use super::*;

/// Batch / transaction (FHIR R4 §3.1.0.11): every entry authorised on its own; one
/// forbidden entry refuses the whole Bundle.
pub(super) fn batch(
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
            // An entry's body is its `resource` (JSON), never a form.
            content_type: None,
            body: Some(body.as_deref().unwrap_or(&[])),
        };
        match decide_at(policy, Some(token), &view, depth + 1) {
            Decision::Allow => {}
            Decision::AllowIfResponseMatches(
                c @ (ResponseCheck::Resource(_)
                | ResponseCheck::Searchset(_)
                | ResponseCheck::Page(_)),
            ) => checks.push((i, c)),
            // (`AllowIfReadMatches` comes only from `decide`, never for an entry.)
            Decision::AllowIfResponseMatches(ResponseCheck::BundleEntries(_))
            | Decision::AllowIfReadMatches(_)
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
                    | Reason::UnsafeConditionalWrite
                    | Reason::SubsettingHidesCompartment => d.reason,
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
