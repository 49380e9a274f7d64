//! The log line of a dry-run refusal (`mode: shadow`, docs/checks.md §4): which request would
//! have been refused (method, the matching `routes[]` rule, the client) and why, so an API
//! owner can tell clients and routes apart before enforcing. Never the path itself (a FHIR path
//! holds patient ids), the token, or a claim other than `client_id`.

use crate::denial::Reason;

/// The request a shadow refusal is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShadowRequest {
    pub method: String,
    /// The matching rule's `path` / `path_prefix` ([`crate::policy::Policy::route_label`]).
    pub route: String,
    /// The token's `client_id`, if it has one.
    pub client_id: Option<String>,
    /// The token verified (false: `client_id` is what an unverified token says).
    pub verified: bool,
}

/// Longest value logged; a longer one is shown as `(not shown)`.
const MAX_VALUE: usize = 100;

/// A value as logged: printable identifier characters only (no spaces, quotes or controls, so
/// a client cannot forge log fields), else `(not shown)`.
fn safe(v: &str) -> &str {
    let ok = !v.is_empty()
        && v.len() <= MAX_VALUE
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/@+-{}()".contains(&b));
    if ok {
        v
    } else {
        "(not shown)"
    }
}

/// The `client_id` claim of a presented (not necessarily verified) compact JWT.
pub fn client_id_of(token: &str) -> Option<String> {
    let (_, payload) = crate::diagnostics::decode_unverified(token)?;
    payload.get("client_id")?.as_str().map(str::to_string)
}

/// `fapi_guard.<filter>: shadow_denied reason=.. status=.. method=.. route=.. client_id=..`.
pub fn log_line(filter: &str, reason: Reason, req: &ShadowRequest) -> String {
    let client = match &req.client_id {
        Some(c) if req.verified => safe(c).to_string(),
        Some(c) => format!("{} (unverified)", safe(c)),
        None => "-".to_string(),
    };
    format!(
        "fapi_guard.{filter}: shadow_denied reason={} status={} method={} route={} client_id={client} (mode shadow: passed)",
        reason.code(),
        reason.status(),
        safe(&req.method),
        safe(&req.route),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_request_and_nothing_of_the_token() {
        let mut req = ShadowRequest {
            method: "GET".into(),
            route: "/orgs/{orgnr}/documents".into(),
            client_id: Some("helseid-client-1".into()),
            verified: true,
        };
        assert_eq!(
            log_line("token", Reason::AuthzScope, &req),
            "fapi_guard.token: shadow_denied reason=authz_missing_scope status=403 method=GET route=/orgs/{orgnr}/documents client_id=helseid-client-1 (mode shadow: passed)"
        );
        req.verified = false;
        req.client_id = Some("x reason=ok".into());
        let line = log_line("token", Reason::Expired, &req);
        assert!(
            line.ends_with("client_id=(not shown) (unverified) (mode shadow: passed)"),
            "{line}"
        );
        req.client_id = None;
        assert!(log_line("dpop", Reason::DpopMissing, &req).contains("client_id=- "));
    }

    #[test]
    fn client_id_of_a_presented_token() {
        // {"alg":"none"}.{"client_id":"c1","sub":"s"}.
        let t = "eyJhbGciOiJub25lIn0.eyJjbGllbnRfaWQiOiJjMSIsInN1YiI6InMifQ.";
        assert_eq!(client_id_of(t).as_deref(), Some("c1"));
        assert_eq!(client_id_of("not.a.token"), None);
    }
}
