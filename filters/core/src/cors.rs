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

use serde_json::Value;

use crate::error::PolicyError;

/// Browsers cap a preflight's cache at 2 h (Chromium) or 24 h (Firefox); more is a mistake.
pub const MAX_AGE_SECONDS: u64 = 86_400;

/// Checks the section (read as plain JSON: the filters keep nothing of it); errors name the
/// field (`cors.allowed_origins[1]`). Exact origins (RFC 6454 §6.2) and header names, no
/// wildcard anywhere: `*` never covers `Authorization` (Fetch standard, "CORS-safelisted
/// request-header"), and with credentials it is no wildcard at all.
#[inline]
pub fn validate(v: &Value) -> Result<(), PolicyError> {
    let o = v
        .as_object()
        .ok_or_else(|| PolicyError::new("cors", "must be an object"))?;
    if !o.contains_key("allowed_origins") {
        return Err(PolicyError::new("cors.allowed_origins", "required"));
    }
    for (k, v) in o {
        let (checked, why) = match k.as_str() {
            "allowed_origins" => (
                items(v, is_origin, false),
                "exact origins `https://host[:port]` (lower case, no path, no wildcard)",
            ),
            "allowed_methods" => (
                items(v, is_method, false),
                "methods among GET, HEAD, POST, PUT, PATCH, DELETE",
            ),
            "allowed_headers" | "exposed_headers" => (
                items(v, is_field_name, k == "exposed_headers"),
                "header field names (RFC 9110 §5.1), no wildcard",
            ),
            "max_age_seconds" => (
                ok_if(v.as_u64().is_some_and(|a| a <= MAX_AGE_SECONDS)),
                "seconds, at most 86400",
            ),
            "allow_credentials" => (ok_if(v.is_boolean()), "true or false"),
            _ => (Err(None), "unknown field"),
        };
        if let Err(at) = checked {
            let field = match at {
                Some(i) => format!("cors.{k}[{i}]"),
                None => format!("cors.{k}"),
            };
            return Err(PolicyError::new(field, why));
        }
    }
    Ok(())
}

fn ok_if(ok: bool) -> Result<(), Option<usize>> {
    if ok {
        Ok(())
    } else {
        Err(None)
    }
}

/// A list of strings that each pass `check`: `Err(None)` not such a list (or empty where it
/// must not be: leave it out for the defaults), `Err(Some(i))` item `i` fails.
fn items(v: &Value, check: fn(&str) -> bool, may_be_empty: bool) -> Result<(), Option<usize>> {
    let list = v.as_array().filter(|a| may_be_empty || !a.is_empty());
    let list = list.ok_or(None)?;
    match list.iter().position(|x| !x.as_str().is_some_and(check)) {
        Some(i) => Err(Some(i)),
        None => Ok(()),
    }
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
                r#"{"allowed_origins": ["https://a", "https://*.a"]}"#,
                "cors.allowed_origins[1]",
            ),
            (r#"{"allowed_methods": ["GET"]}"#, "cors.allowed_origins"),
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
