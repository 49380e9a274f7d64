//! The policy's `cors` section: which browser origins may call the API (Fetch standard,
//! "CORS protocol"). The filters do not act on it: Envoy's own CORS filter, placed before
//! them (envoy/render.py; in Istio a VirtualService `corsPolicy` or an EnvoyFilter from
//! tools/gen_wasmplugins.py), answers preflights and adds the `Access-Control-*` headers to
//! every answer, the filters' denials included. A preflight that reaches the filters (an
//! origin not allowed) is a protected request like any other (docs/checks.md, "CORS").
//!
//! Validated here so a policy with a bad `cors` section is refused at load, naming the
//! field; the defaults of the optional lists live in `policies/schema/policy.schema.json`,
//! which the renderers read.

use serde_json::{Map, Value};

use crate::error::PolicyError;

/// Browsers cap a preflight's cache at 2 h (Chromium) or 24 h (Firefox); more is a mistake.
pub const MAX_AGE_SECONDS: u64 = 86_400;

const FIELDS: [&str; 6] = [
    "allowed_origins",
    "allowed_methods",
    "allowed_headers",
    "exposed_headers",
    "max_age_seconds",
    "allow_credentials",
];

fn err(field: &str, message: impl Into<String>) -> PolicyError {
    PolicyError::new(format!("cors.{field}"), message)
}

/// The list of strings `name` (None when left out).
fn strings<'a>(o: &'a Map<String, Value>, name: &str) -> Result<Option<Vec<&'a str>>, PolicyError> {
    let Some(v) = o.get(name) else {
        return Ok(None);
    };
    v.as_array()
        .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
        .map(Some)
        .ok_or_else(|| err(name, "must be a list of strings"))
}

/// Checks the section (read as plain JSON: the filters keep nothing of it); errors name the
/// field (`cors.allowed_origins[1]`). Exact origins (RFC 6454 §6.2) and header names, no
/// wildcard anywhere: `*` never covers `Authorization` (Fetch standard, "CORS-safelisted
/// request-header"), and with credentials it is no wildcard at all.
pub fn validate(v: &Value) -> Result<(), PolicyError> {
    let Some(o) = v.as_object() else {
        return Err(PolicyError::new("cors", "must be an object"));
    };
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(err(k, "unknown field"));
    }
    let origins = strings(o, "allowed_origins")?.unwrap_or_default();
    if origins.is_empty() {
        return Err(err("allowed_origins", "list at least one origin"));
    }
    for (i, origin) in origins.iter().enumerate() {
        let field = format!("allowed_origins[{i}]");
        if !is_origin(origin) {
            return Err(err(
                &field,
                "must be an exact origin `https://host[:port]` (lower case, no path, no wildcard)",
            ));
        }
        if origins.iter().take(i).any(|p| p == origin) {
            return Err(err(&field, "origin listed twice"));
        }
    }
    for (name, check) in [
        ("allowed_methods", is_method as fn(&str) -> bool),
        ("allowed_headers", is_field_name),
        ("exposed_headers", is_field_name),
    ] {
        let Some(list) = strings(o, name)? else {
            continue;
        };
        if list.is_empty() && name != "exposed_headers" {
            return Err(err(
                name,
                "must not be empty (leave it out for the defaults)",
            ));
        }
        if let Some(i) = list.iter().position(|x| !check(x)) {
            return Err(err(
                &format!("{name}[{i}]"),
                "must be one of GET, HEAD, POST, PUT, PATCH, DELETE / a header field name (RFC 9110 §5.1), no wildcard",
            ));
        }
    }
    if let Some(a) = o.get("max_age_seconds") {
        if !a.as_u64().is_some_and(|a| a <= MAX_AGE_SECONDS) {
            return Err(err(
                "max_age_seconds",
                format!("must be a whole number of seconds, at most {MAX_AGE_SECONDS}"),
            ));
        }
    }
    if o.get("allow_credentials").is_some_and(|c| !c.is_boolean()) {
        return Err(err("allow_credentials", "must be true or false"));
    }
    Ok(())
}

/// CONNECT/TRACE are never FHIR; OPTIONS is the preflight itself.
fn is_method(m: &str) -> bool {
    crate::routes::METHODS.contains(&m) && !matches!(m, "OPTIONS" | "TRACE" | "CONNECT")
}

/// RFC 9110 §5.1 field names (`tchar`s), `*` left out: it would read as a wildcard.
fn is_field_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b))
}

/// RFC 6454 §6.2 serialization of an http(s) origin, as a browser sends it in `Origin`:
/// scheme, lower-case host, optional port; nothing else.
fn is_origin(o: &str) -> bool {
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (rest, None),
    };
    let host_ok = !host.is_empty()
        && !host.starts_with('.')
        && host.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'.' | b'-' | b'[' | b']' | b':')
        });
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<(), PolicyError> {
        validate(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn exact_origins_only() {
        for ok in [
            "https://app.example.org",
            "http://localhost:3000",
            "https://10.0.0.1:8443",
        ] {
            assert!(is_origin(ok), "{ok}");
        }
        for bad in [
            "*",
            "https://*.example.org",
            "https://app.example.org/",
            "https://App.example.org",
            "app.example.org",
            "https://",
            "https://a:",
            "https://a:99999x",
            "null",
            "https://user@app",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"allowed_origins": []}"#, "cors.allowed_origins"),
            (
                r#"{"allowed_origins": ["https://a", "https://a"]}"#,
                "cors.allowed_origins[1]",
            ),
            (
                r#"{"allowed_origins": ["https://a"], "allowed_methods": ["GET", "TRACE"]}"#,
                "cors.allowed_methods[1]",
            ),
            (
                r#"{"allowed_origins": ["https://a"], "allowed_headers": ["*"]}"#,
                "cors.allowed_headers[0]",
            ),
            (
                r#"{"allowed_origins": ["https://a"], "exposed_headers": ["a b"]}"#,
                "cors.exposed_headers[0]",
            ),
            (
                r#"{"allowed_origins": ["https://a"], "allowed_headers": []}"#,
                "cors.allowed_headers",
            ),
            (
                r#"{"allowed_origins": ["https://a"], "max_age_seconds": 86401}"#,
                "cors.max_age_seconds",
            ),
            (
                r#"{"allowed_origins": ["https://a"], "allow_credentials": "yes"}"#,
                "cors.allow_credentials",
            ),
            (
                r#"{"allowed_origins": "https://a"}"#,
                "cors.allowed_origins",
            ),
            (
                r#"{"allowed_origins": ["https://a"], "origins": []}"#,
                "cors.origins",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(check(json).unwrap_err().field, field, "{json}");
        }
        check(r#"{"allowed_origins": ["https://a"], "allowed_headers": ["Authorization", "DPoP"], "exposed_headers": [], "max_age_seconds": 600, "allow_credentials": true}"#)
            .unwrap();
    }
}
