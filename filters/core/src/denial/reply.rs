//! How a refusal is answered over HTTP: status, `WWW-Authenticate` challenge (RFC 6750 §3,
//! RFC 9449 §7.1), `Retry-After`, and the body (a FHIR `OperationOutcome` or RFC 9457 problem
//! details, per `api.denial_format`).

use super::reasons::{Class, Reason};
use crate::jose::Alg;
use crate::scheme::Scheme;

/// The body of a denial (policy `api.denial_format`). The status and the `WWW-Authenticate`
/// challenges are the same in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum DenialFormat {
    /// A FHIR R4 `OperationOutcome` in `application/fhir+json` (FHIR R4 http.html, "Error
    /// handling"). The default: the only one a policy with a `fhir` section accepts.
    #[default]
    #[serde(rename = "operation_outcome")]
    OperationOutcome,
    /// RFC 9457 problem details in `application/problem+json`, for plain REST APIs.
    #[serde(rename = "problem+json")]
    ProblemJson,
}

/// RFC 9457 §3.1.1 `type` of a refusal: this prefix and the reason code (`docs/reason-codes.md`).
pub const PROBLEM_TYPE_PREFIX: &str = "urn:fapi-guard:reason:";

/// `Retry-After` on 503 answers (keys not loaded yet, replay cache full).
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// What a denial needs besides its reason to render a reply.
#[derive(Debug, Clone, Default)]
pub struct ChallengeContext<'a> {
    /// Challenge schemes, in order (an API may accept both).
    pub schemes: &'a [Scheme],
    /// `algs` attribute for DPoP challenges (RFC 9449 §7.1).
    pub dpop_algs: &'a [Alg],
    /// A fresh server nonce to send as `DPoP-Nonce`.
    pub dpop_nonce: Option<String>,
    /// `scope` attribute for `insufficient_scope`.
    pub required_scope: Option<String>,
    /// Human-readable detail for the body (no token content, no patient data).
    pub detail: Option<String>,
    /// The body's format (`api.denial_format`).
    pub format: DenialFormat,
}

/// A complete HTTP reply for the host to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn quote(s: &str) -> String {
    // RFC 7235 quoted-string: escape `"` and `\`; our values never contain control chars.
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Reason {
    pub fn status(self) -> u32 {
        match self.class() {
            Class::NoCredentials
            | Class::InvalidToken
            | Class::InvalidDpopProof
            | Class::UseDpopNonce => 401,
            Class::InvalidRequest | Class::BadFhirRequest => 400,
            Class::UnsupportedMediaType => 415,
            Class::InsufficientScope | Class::Forbidden => 403,
            Class::NotFound => 404,
            Class::Unavailable => 503,
            Class::TooManyRequests => 429,
        }
    }

    fn error_attr(self) -> Option<&'static str> {
        match self.class() {
            Class::NoCredentials => None,
            Class::InvalidRequest => Some("invalid_request"),
            Class::InvalidToken => Some("invalid_token"),
            Class::InvalidDpopProof => Some("invalid_dpop_proof"),
            Class::UseDpopNonce => Some("use_dpop_nonce"),
            Class::InsufficientScope => Some("insufficient_scope"),
            Class::Forbidden
            | Class::NotFound
            | Class::BadFhirRequest
            | Class::UnsupportedMediaType
            | Class::Unavailable
            | Class::TooManyRequests => None,
        }
    }

    /// Whether the reply carries a `WWW-Authenticate` challenge. A 503 does not: the
    /// credentials may be fine, the guard cannot decide now (it sends `Retry-After`).
    fn challenges(self) -> bool {
        !matches!(
            self.class(),
            Class::Forbidden
                | Class::NotFound
                | Class::BadFhirRequest
                | Class::UnsupportedMediaType
                | Class::Unavailable
                | Class::TooManyRequests
        )
    }

    /// FHIR `OperationOutcome.issue.code` (FHIR R4 IssueType).
    fn issue_code(self) -> &'static str {
        match self.class() {
            Class::NoCredentials
            | Class::InvalidToken
            | Class::InvalidDpopProof
            | Class::UseDpopNonce => "login",
            Class::InvalidRequest | Class::BadFhirRequest => "invalid",
            Class::UnsupportedMediaType => "not-supported",
            Class::InsufficientScope | Class::Forbidden => "forbidden",
            Class::NotFound => "not-found",
            Class::Unavailable => "transient",
            Class::TooManyRequests => "throttled",
        }
    }

    /// Renders the reply. The single place that decides status, challenge and body.
    pub fn reply(self, ctx: &ChallengeContext<'_>) -> Reply {
        let mut headers = Vec::new();
        if self.challenges() {
            let schemes: &[Scheme] = if ctx.schemes.is_empty() {
                &[Scheme::Bearer]
            } else {
                ctx.schemes
            };
            for scheme in schemes {
                let mut attrs: Vec<String> = Vec::new();
                if let Some(err) = self.error_attr() {
                    attrs.push(format!("error=\"{err}\""));
                }
                if let (Some(scope), Class::InsufficientScope) = (&ctx.required_scope, self.class())
                {
                    attrs.push(format!("scope=\"{}\"", quote(scope)));
                }
                if *scheme == Scheme::Dpop && !ctx.dpop_algs.is_empty() {
                    let algs: Vec<&str> = ctx.dpop_algs.iter().map(|a| a.name()).collect();
                    attrs.push(format!("algs=\"{}\"", algs.join(" ")));
                }
                let value = if attrs.is_empty() {
                    scheme.name().to_string()
                } else {
                    format!("{} {}", scheme.name(), attrs.join(", "))
                };
                headers.push(("www-authenticate".to_string(), value));
            }
        }
        if let Some(nonce) = &ctx.dpop_nonce {
            headers.push(("dpop-nonce".to_string(), nonce.clone()));
        }
        if self.class() == Class::Unavailable {
            // RFC 9110 §10.2.3: keys reload / replay entries expire within seconds.
            headers.push(("retry-after".to_string(), RETRY_AFTER_SECONDS.to_string()));
        }
        let (content_type, body) = self.body(ctx.format, ctx.detail.as_deref());
        headers.push(("content-type".to_string(), content_type.to_string()));
        headers.push(("cache-control".to_string(), "no-store".to_string()));
        Reply {
            status: self.status(),
            headers,
            body,
        }
    }

    /// The body in `format` and its `Content-Type`. The text is `code` or `code: detail` (safe
    /// facts only: no token content, no patient data) in both formats.
    pub fn body(self, format: DenialFormat, detail: Option<&str>) -> (&'static str, Vec<u8>) {
        let text = match detail {
            Some(d) => format!("{}: {}", self.code(), d),
            None => self.code().to_string(),
        };
        match format {
            DenialFormat::OperationOutcome => {
                ("application/fhir+json", self.operation_outcome(text))
            }
            DenialFormat::ProblemJson => ("application/problem+json", self.problem(text)),
        }
    }

    /// RFC 9457 §3: `type` names the reason (a URI, §3.1.1), `title` is the status's phrase
    /// (the same for every occurrence, §3.1.3), `status` (§3.1.2), `detail` the safe facts
    /// (§3.1.4), and the extension member `code` (§3.2) the bare reason code.
    fn problem(self, detail: String) -> Vec<u8> {
        let title = match self.status() {
            401 => "Unauthorized",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            429 => "Too Many Requests",
            _ => "Service Unavailable",
        };
        // Written out, members in order (as serde_json would): codes and titles need no JSON
        // escaping; `detail` is escaped as a JSON string (`to_string`, not `Value`'s `Display`:
        // the same bytes without a second copy of the writer, bench/README.md "Size").
        let code = self.code();
        let detail = serde_json::to_string(&detail).unwrap_or_default();
        format!(
            r#"{{"code":"{code}","detail":{detail},"status":{},"title":"{title}","type":"{PROBLEM_TYPE_PREFIX}{code}"}}"#,
            self.status()
        )
        .into_bytes()
    }

    /// The `OperationOutcome` body with `diagnostics`.
    fn operation_outcome(self, diagnostics: String) -> Vec<u8> {
        let body = serde_json::json!({
            "resourceType": "OperationOutcome",
            "issue": [{
                "severity": "error",
                "code": self.issue_code(),
                "details": { "coding": [{ "system": "urn:fapi-guard:reason", "code": self.code() }] },
                "diagnostics": diagnostics,
            }]
        });
        // `to_vec`, not `Value`'s `Display` (`to_string`): the same compact JSON.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}
