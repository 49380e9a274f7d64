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

use serde::Deserialize;

use crate::error::PolicyError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsDoc {
    /// Exact serialized origins (`https://app.example.org`; RFC 6454 §6.2): no wildcard.
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub allowed_methods: Option<Vec<String>>,
    #[serde(default)]
    pub allowed_headers: Option<Vec<String>>,
    #[serde(default)]
    pub exposed_headers: Option<Vec<String>>,
    #[serde(default)]
    pub max_age_seconds: Option<u64>,
    #[serde(default)]
    pub allow_credentials: Option<bool>,
}

/// Browsers cap a preflight's cache at 2 h (Chromium) or 24 h (Firefox); more is a mistake.
pub const MAX_AGE_SECONDS: u64 = 86_400;

impl CorsDoc {
    /// Checks the section; errors name the field (`cors.allowed_origins[1]`).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.allowed_origins.is_empty() {
            return Err(PolicyError::new(
                "cors.allowed_origins",
                "list at least one origin",
            ));
        }
        for (i, o) in self.allowed_origins.iter().enumerate() {
            let field = || format!("cors.allowed_origins[{i}]");
            if !is_origin(o) {
                return Err(PolicyError::new(
                    field(),
                    "must be an exact origin `https://host[:port]` (lower case, no path, no wildcard)",
                ));
            }
            if self.allowed_origins.iter().take(i).any(|p| p == o) {
                return Err(PolicyError::new(field(), "origin listed twice"));
            }
        }
        for (i, m) in self.allowed_methods.iter().flatten().enumerate() {
            // CONNECT/TRACE are never FHIR; OPTIONS is the preflight itself.
            if !crate::routes::METHODS.contains(&m.as_str())
                || matches!(m.as_str(), "OPTIONS" | "TRACE" | "CONNECT")
            {
                return Err(PolicyError::new(
                    format!("cors.allowed_methods[{i}]"),
                    "must be one of GET, HEAD, POST, PUT, PATCH, DELETE",
                ));
            }
        }
        for (name, list) in [
            ("allowed_methods", &self.allowed_methods),
            ("allowed_headers", &self.allowed_headers),
        ] {
            if list.as_ref().is_some_and(Vec::is_empty) {
                return Err(PolicyError::new(
                    format!("cors.{name}"),
                    "must not be empty (leave it out for the defaults)",
                ));
            }
        }
        for (name, list) in [
            ("allowed_headers", &self.allowed_headers),
            ("exposed_headers", &self.exposed_headers),
        ] {
            for (i, h) in list.iter().flatten().enumerate() {
                // RFC 9110 §5.1 field names; `*` is no wildcard for `Authorization` (Fetch
                // standard, "CORS-safelisted request-header"), so every header is listed.
                if h.is_empty() || !h.bytes().all(is_tchar) {
                    return Err(PolicyError::new(
                        format!("cors.{name}[{i}]"),
                        "must be a header field name (RFC 9110 §5.1), no wildcard",
                    ));
                }
            }
        }
        if self.max_age_seconds.is_some_and(|a| a > MAX_AGE_SECONDS) {
            return Err(PolicyError::new(
                "cors.max_age_seconds",
                format!("must be at most {MAX_AGE_SECONDS}"),
            ));
        }
        Ok(())
    }
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

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    // `*` is a tchar, left out: it would read as a wildcard.
    b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn doc(json: &str) -> CorsDoc {
        serde_json::from_str(json).unwrap()
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
        ];
        for (json, field) in cases {
            assert_eq!(doc(json).validate().unwrap_err().field, field, "{json}");
        }
        doc(r#"{"allowed_origins": ["https://a"], "allowed_headers": ["Authorization", "DPoP"], "max_age_seconds": 600, "allow_credentials": true}"#)
            .validate()
            .unwrap();
    }
}
