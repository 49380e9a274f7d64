//! Whether a resource body matches a search constraint (`p=v`) of a scope or a request: token
//! parameters are read at their element paths, as the server's search would.

use serde_json::Value;

use super::body::values_at;
use crate::fhir::query::{split_or, Param};

/// Element paths searched by token parameters where the name does not follow the
/// kebab-case -> camelCase rule (R4 `SearchParameter` expressions).
const TOKEN_PARAM_PATHS: &[(&str, &str, &str)] = &[
    ("MedicationRequest", "code", "medicationCodeableConcept"),
    ("MedicationStatement", "code", "medicationCodeableConcept"),
    (
        "MedicationAdministration",
        "code",
        "medicationCodeableConcept",
    ),
    ("MedicationDispense", "code", "medicationCodeableConcept"),
    ("Immunization", "vaccine-code", "vaccineCode"),
    ("Encounter", "class", "class"),
    ("Condition", "clinical-status", "clinicalStatus"),
    ("Condition", "verification-status", "verificationStatus"),
    ("AllergyIntolerance", "clinical-status", "clinicalStatus"),
    ("Observation", "value-concept", "valueCodeableConcept"),
];

/// `s` is ASCII (lower case and `-`, checked by [`token_path`]): ASCII upper-casing is the
/// whole of it, and keeps the Unicode case tables out of the module (bench/README.md "Size").
fn kebab_to_camel(s: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in s.chars() {
        if c == '-' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn token_path(resource_type: &str, param: &str) -> Option<String> {
    if let Some((_, _, p)) = TOKEN_PARAM_PATHS
        .iter()
        .find(|(t, n, _)| *t == resource_type && *n == param)
    {
        return Some((*p).to_string());
    }
    // Only plain names map to elements; `_id`, modifiers, chains are not checked here.
    if param.is_empty() || !param.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        return None;
    }
    Some(kebab_to_camel(param))
}

/// Top-level element names a constraint's parameters are evaluated on
/// ([`resource_matches_constraint`]); parameters it cannot evaluate have none.
pub fn constraint_elements(resource_type: &str, constraint: &[Param]) -> Vec<String> {
    constraint
        .iter()
        .filter_map(|p| token_path(resource_type, &p.name))
        .filter_map(|p| p.split('.').next().map(str::to_string))
        .collect()
}

/// Does one element value (code, Coding, CodeableConcept, Identifier, boolean) match a
/// token search value `[system|]code` (FHIR R4 §3.1.1.4.7 token)?
fn token_matches(v: &Value, wanted: &str) -> bool {
    let (sys, code) = match wanted.split_once('|') {
        Some((s, c)) => (Some(s), c),
        None => (None, wanted),
    };
    let pair_matches = |s: Option<&str>, c: Option<&str>| -> bool {
        let sys_ok = match sys {
            None => true,
            Some("") => s.is_none(),
            Some(x) => s == Some(x),
        };
        let code_ok = code.is_empty() && sys.is_some_and(|s| !s.is_empty()) || c == Some(code);
        sys_ok && code_ok
    };
    match v {
        Value::String(s) => sys.is_none() && s == code,
        Value::Bool(b) => sys.is_none() && code == if *b { "true" } else { "false" },
        Value::Object(o) => {
            if let Some(Value::Array(codings)) = o.get("coding") {
                return codings.iter().any(|c| token_matches(c, wanted));
            }
            let s = o.get("system").and_then(Value::as_str);
            let c = o
                .get("code")
                .or_else(|| o.get("value"))
                .and_then(Value::as_str);
            pair_matches(s, c)
        }
        _ => false,
    }
}

/// Does `resource` satisfy every `param=value` of a scope constraint? Only token-style
/// parameters the guard can evaluate are supported; anything else is "no match" (fail closed).
pub fn resource_matches_constraint(resource: &Value, constraint: &[Param]) -> bool {
    let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else {
        return false;
    };
    constraint.iter().all(|p| {
        if p.modifier().is_some() {
            return false;
        }
        let Some(path) = token_path(rt, &p.name) else {
            return false;
        };
        let values = values_at(resource, &path);
        split_or(&p.value)
            .iter()
            .any(|want| values.iter().any(|v| token_matches(v, want)))
    })
}
