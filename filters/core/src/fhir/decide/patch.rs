//! Patches (letter `u`): FHIRPath Patch and JSON Patch bodies read through an allow-list of
//! plain element paths (docs/checks.md §3, patch paths).

use super::*;

/// Why a patch body is refused: not a patch at all, or a path the guard cannot prove.
pub(super) type PatchRefusal = (Reason, &'static str);

/// A FHIR element name as it appears in JSON (`status`, `valueQuantity`, `_status` for a
/// primitive's extensions). Anything else in a patch path is refused (docs/checks.md).
pub(super) fn is_element_name(s: &str) -> bool {
    let s = s.strip_prefix('_').unwrap_or(s);
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic()) && b.all(|c| c.is_ascii_alphanumeric())
}

/// An array index in a JSON Pointer (RFC 6901 §4: `0` or no leading zeros).
pub(super) fn is_index(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

/// A reference string the guard cannot resolve: conditional (`Patient?identifier=...`,
/// FHIR R4 http.html#trules), also percent-encoded.
pub(super) fn is_conditional_reference(r: &str) -> bool {
    r.contains('?') || r.to_ascii_lowercase().contains("%3f")
}

/// Any `Reference.reference` anywhere in `v` that is conditional.
pub(super) fn has_conditional_reference(v: &Value) -> bool {
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
pub(super) fn json_pointer_element(p: &str, dash_ok: bool) -> Result<String, PatchRefusal> {
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
pub(super) fn fhirpath_element(p: &str, t: &str) -> Result<Option<String>, PatchRefusal> {
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
pub(super) fn patched_elements(body: &[u8], t: &str) -> Result<Vec<String>, PatchRefusal> {
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
            .any(|(i, n)| names.iter().take(i).any(|m| m == n))
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
pub(super) fn patch(cx: &DecisionInput<'_>) -> Decision {
    let t = rt(cx);
    let criteria = cx.req.conditional.then(|| cx.req.params.clone());
    let res = cx.over_grants(Some(&t), Perms::U, |g, pid| match g.context {
        Context::Patient => {
            if t == "Patient" {
                // Same path allow-list and conditional-reference rules as every type below;
                // only the patient in context, by id.
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
            }
            if !cx.policy.compartment.contains(&t) {
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
            let mut guarded = cx.policy.compartment.elements(&t);
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
            if t == "Patient" {
                // `Patient/<pid>` is the patient's by id; no stored read needed.
                return Outcome::Allow;
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
