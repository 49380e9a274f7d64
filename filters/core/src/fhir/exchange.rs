//! What the FHIR scope filter asks of the host and answers, decided here so the filter only
//! moves data: the request-header edits of a read decided on the response, the stored read
//! before a write (its request and its answer), the response-header policy, and the detail
//! strings of denials made on an answer (docs/checks.md §3).

use super::decide::Denial;
use super::interaction::classify;
use super::policy::FhirPolicy;
use super::response::{check_response, check_stored};
use super::response_check::{ResponseCheck, StoredCheck};
use super::stream::CONDITIONAL_READ_HEADERS;
use super::subsetting;
use crate::denial::Reason;

/// Request-header edits for a read allowed only if its response passes `check`: remove the
/// conditional-read headers (the API must send the whole resource: docs/checks.md
/// "Conditional reads", RFC 9110 §13.1), on searchsets ask for strict handling
/// ([`prefer_strict_handling`]), and extend `_elements` with what the check reads
/// ([`subsetting::rewritten_path`]). `prefer` is the request's `Prefer` header, `path` its
/// `:path` as sent. Made after the DPoP check read the client's `:path` (`htu`).
pub fn response_check_request_edits(
    policy: &FhirPolicy,
    check: &ResponseCheck,
    prefer: Option<&str>,
    path: &str,
) -> Vec<(&'static str, Option<String>)> {
    let mut edits: Vec<(&'static str, Option<String>)> = CONDITIONAL_READ_HEADERS
        .iter()
        .map(|h| (*h, None))
        .collect();
    if matches!(check, ResponseCheck::Searchset(_)) {
        edits.push(("prefer", Some(prefer_strict_handling(prefer))));
    }
    if let Some(p) = subsetting::rewritten_path(&policy.compartment, check, path) {
        edits.push((":path", Some(p)));
    }
    edits
}

/// FHIR R4 §3.1.1.5.9: ask the server to refuse search parameters it does not support instead
/// of ignoring them (the searchset is checked anyway). Keeps the other preferences and
/// replaces any `handling=`.
pub fn prefer_strict_handling(current: Option<&str>) -> String {
    let kept: Vec<&str> = current
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("handling"))
        .collect();
    let mut value = kept.join(", ");
    if !value.is_empty() {
        value.push_str(", ");
    }
    value.push_str("handling=strict");
    value
}

/// The `:path` of the stored read before a write: the request's path without its query, or
/// for a conditional write a search with the request's own criteria (docs/checks.md §3).
pub fn stored_read_path(path_with_query: &str, check: &StoredCheck) -> String {
    let mut path = path_with_query
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_string();
    if let Some(search) = &check.search {
        path.push('?');
        path.push_str(&search.query);
    }
    path
}

/// The headers of the stored read: `GET`, the path, the request's `:authority`, `accept`, and
/// the request headers the policy lists (`FhirPolicy::stored_read_headers`, already chosen).
/// No `Authorization`/`DPoP` unless listed: a proof is bound to the client's own request.
pub fn stored_read_headers(
    path: &str,
    authority: &str,
    listed: &[(String, String)],
) -> Vec<(String, String)> {
    let mut headers = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), authority.to_string()),
        ("accept".to_string(), "application/fhir+json".to_string()),
    ];
    headers.extend(listed.iter().cloned());
    headers
}

/// Decides the stored read's answer. `status` None: no headers (the call failed or timed
/// out); a body over `max_response_bytes` is not read (`body` is asked for only otherwise).
pub fn check_stored_answer(
    policy: &FhirPolicy,
    check: &StoredCheck,
    status: Option<u32>,
    body_size: usize,
    body: impl FnOnce() -> Vec<u8>,
) -> Result<(), Reason> {
    if body_size > policy.max_response_bytes {
        return Err(Reason::ResponseTooLarge);
    }
    check_stored(policy, check, status.unwrap_or(0), &body())
}

/// A request held while the filter reads from the API first: a write by id waiting for its
/// stored resource ([`Decision::AllowIfStoredMatches`]), or a HEAD waiting for the answer to the
/// GET it mirrors ([`Decision::AllowIfReadMatches`]).
///
/// [`Decision::AllowIfStoredMatches`]: super::decide::Decision::AllowIfStoredMatches
/// [`Decision::AllowIfReadMatches`]: super::decide::Decision::AllowIfReadMatches
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldRead {
    Stored(StoredCheck),
    Head(ResponseCheck),
}

impl HeldRead {
    /// The `:path` of the read: the stored read's ([`stored_read_path`]), or for a HEAD the same
    /// path and query (the GET it mirrors).
    pub fn path(&self, path_with_query: &str) -> String {
        match self {
            HeldRead::Stored(c) => stored_read_path(path_with_query, c),
            HeldRead::Head(_) => path_with_query
                .split('#')
                .next()
                .unwrap_or_default()
                .to_string(),
        }
    }

    /// The read's headers ([`stored_read_headers`]); a HEAD's searchset read also asks for
    /// strict handling ([`prefer_strict_handling`]), as the GET it mirrors would.
    pub fn headers(
        &self,
        path: &str,
        authority: &str,
        listed: &[(String, String)],
    ) -> Vec<(String, String)> {
        let mut headers = stored_read_headers(path, authority, listed);
        if let HeldRead::Head(ResponseCheck::Searchset(_)) = self {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case("prefer"));
            headers.push(("prefer".to_string(), prefer_strict_handling(None)));
        }
        headers
    }

    /// Decides the read's answer (`status` None: no answer; fails closed). A HEAD goes on only
    /// if the GET's answer passes [`check_response`], as that GET would.
    pub fn check_answer(
        &self,
        policy: &FhirPolicy,
        status: Option<u32>,
        body_size: usize,
        body: impl FnOnce() -> Vec<u8>,
    ) -> Result<(), Reason> {
        match self {
            HeldRead::Stored(c) => check_stored_answer(policy, c, status, body_size, body),
            HeldRead::Head(c) => {
                let Some(status) = status.filter(|s| *s != 0) else {
                    return Err(Reason::StoredReadFailed);
                };
                if body_size > policy.max_response_bytes {
                    return Err(Reason::ResponseTooLarge);
                }
                check_response(policy, c, status, &body())
            }
        }
    }

    /// The denial for a refused answer, named by `label` ([`request_label`]).
    pub fn denial(&self, reason: Reason, label: &str) -> Denial {
        match self {
            HeldRead::Head(_) if reason != Reason::StoredReadFailed => {
                response_denial(reason, label)
            }
            _ => stored_denial(reason, label),
        }
    }
}

/// The response-header policy of a read decided on the response: an encoded body cannot be
/// read (refused rather than passed unchecked), a declared length over
/// `max_response_bytes` is refused before the body comes.
pub fn check_response_headers(
    policy: &FhirPolicy,
    content_encoding: Option<&str>,
    content_length: Option<&str>,
) -> Result<(), Reason> {
    if content_encoding.is_some_and(|e| !e.eq_ignore_ascii_case("identity")) {
        return Err(Reason::ResponseOutsideGrant);
    }
    let too_long = content_length
        .and_then(|l| l.parse::<usize>().ok())
        .is_some_and(|l| l > policy.max_response_bytes);
    if too_long {
        return Err(Reason::ResponseTooLarge);
    }
    Ok(())
}

/// `read Observation`: how denials made on an answer name the request (no ids, no data).
pub fn request_label(policy: &FhirPolicy, method: &str, path_with_query: &str) -> String {
    match classify(&policy.base_path, method, path_with_query) {
        Ok(r) => format!(
            "{} {}",
            r.label(),
            r.resource_type.as_deref().unwrap_or("*")
        ),
        Err(_) => "request".to_string(),
    }
}

/// The denial for a refused stored read, named by `label` ([`request_label`]).
pub fn stored_denial(reason: Reason, label: &str) -> Denial {
    let why = match reason {
        Reason::StoredReadFailed => "the stored resource could not be read",
        Reason::StoredResourceMissing => "no stored resource to change",
        _ => "the stored resource is outside the granted scopes or the patient's compartment",
    };
    Denial {
        reason,
        required_scope: None,
        detail: format!("{label}: {why}"),
    }
}

/// The denial for a response that failed its check, named by `label`.
pub fn response_denial(reason: Reason, label: &str) -> Denial {
    Denial {
        reason,
        required_scope: None,
        detail: format!(
            "{label}: the response holds a resource outside the granted scopes or the patient's compartment"
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fhir::response_check::{ResourceCheck, SearchCheck, StoredSearch};

    fn policy() -> FhirPolicy {
        FhirPolicy::from_section_json(br#"{"response_check": {"max_body_bytes": 100}}"#).unwrap()
    }

    #[test]
    fn prefer_gets_strict_handling_and_keeps_the_rest() {
        assert_eq!(prefer_strict_handling(None), "handling=strict");
        assert_eq!(
            prefer_strict_handling(Some("return=minimal, handling=lenient")),
            "return=minimal, handling=strict"
        );
        let search = ResponseCheck::Searchset(SearchCheck {
            resource_type: None,
            patient: "p".into(),
            constraints: Vec::new(),
            non_compartment_types_pass: true,
            pin_read: true,
        });
        let edits =
            response_check_request_edits(&policy(), &search, Some("HANDLING=lenient"), "/fhir/x");
        assert!(edits.contains(&("prefer", Some("handling=strict".to_string()))));
        assert!(edits.contains(&("if-none-match", None)));
    }

    #[test]
    fn stored_read_is_a_plain_get_or_the_writes_own_search() {
        let mut c = StoredCheck {
            resource: ResourceCheck {
                resource_type: "Observation".into(),
                id: Some("o1".into()),
                history: false,
                alternatives: Vec::new(),
            },
            absent_ok: false,
            search: None,
        };
        assert_eq!(
            stored_read_path("/fhir/Observation/o1?x=1", &c),
            "/fhir/Observation/o1"
        );
        c.search = Some(Box::new(StoredSearch {
            query: "patient=p&code=x".into(),
            max_matches: Some(1),
        }));
        assert_eq!(
            stored_read_path("/fhir/Observation?patient=p&code=x", &c),
            "/fhir/Observation?patient=p&code=x"
        );
        let h = stored_read_headers("/p", "api", &[("x-tenant-id".into(), "t".into())]);
        assert_eq!(h.len(), 5);
        assert!(!h.iter().any(|(k, _)| k == "authorization" || k == "dpop"));
    }

    #[test]
    fn response_headers_and_stored_answers_fail_closed() {
        let p = policy();
        assert_eq!(check_response_headers(&p, None, Some("100")), Ok(()));
        assert_eq!(check_response_headers(&p, Some("identity"), None), Ok(()));
        assert_eq!(
            check_response_headers(&p, Some("gzip"), None),
            Err(Reason::ResponseOutsideGrant)
        );
        assert_eq!(
            check_response_headers(&p, None, Some("101")),
            Err(Reason::ResponseTooLarge)
        );
        let c = StoredCheck {
            resource: ResourceCheck {
                resource_type: "Observation".into(),
                id: Some("o1".into()),
                history: false,
                alternatives: Vec::new(),
            },
            absent_ok: false,
            search: None,
        };
        let mut read = false;
        assert_eq!(
            check_stored_answer(&p, &c, Some(200), 101, || {
                read = true;
                Vec::new()
            }),
            Err(Reason::ResponseTooLarge)
        );
        assert!(!read, "an oversized answer is not read");
        assert!(check_stored_answer(&p, &c, None, 0, Vec::new).is_err());
    }

    #[test]
    fn head_reads_the_get_it_mirrors_and_fails_closed() {
        let p = policy();
        let search = HeldRead::Head(ResponseCheck::Searchset(SearchCheck {
            resource_type: Some("Observation".into()),
            patient: "p".into(),
            constraints: Vec::new(),
            non_compartment_types_pass: false,
            pin_read: true,
        }));
        let path = search.path("/fhir/Observation?patient=p&code=x");
        assert_eq!(path, "/fhir/Observation?patient=p&code=x");
        let listed = [("prefer".to_string(), "handling=lenient".to_string())];
        let h = search.headers(&path, "api", &listed);
        assert!(h.contains(&(":method".into(), "GET".into())));
        assert_eq!(
            h.iter().filter(|(k, _)| k == "prefer").collect::<Vec<_>>(),
            [&("prefer".to_string(), "handling=strict".to_string())]
        );
        assert!(!h.iter().any(|(k, _)| k == "authorization" || k == "dpop"));
        let empty = br#"{"resourceType":"Bundle","type":"searchset","entry":[]}"#;
        assert_eq!(
            search.check_answer(&p, Some(200), empty.len(), || empty.to_vec()),
            Ok(())
        );
        let foreign =
            br#"{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/q"}}"#;
        let read = HeldRead::Head(ResponseCheck::Resource(ResourceCheck {
            resource_type: "Observation".into(),
            id: Some("o".into()),
            history: false,
            alternatives: vec![crate::fhir::response_check::Alternative {
                patient: Some("p".into()),
                constraint: Vec::new(),
            }],
        }));
        assert_eq!(
            read.check_answer(&p, Some(200), foreign.len(), || foreign.to_vec()),
            Err(Reason::ResponseOutsideGrant)
        );
        // No answer, or one too large to read: refused, the body not read.
        assert_eq!(
            read.check_answer(&p, None, 0, Vec::new),
            Err(Reason::StoredReadFailed)
        );
        assert_eq!(
            read.check_answer(&p, Some(0), 0, Vec::new),
            Err(Reason::StoredReadFailed)
        );
        let mut asked = false;
        assert_eq!(
            read.check_answer(&p, Some(200), 101, || {
                asked = true;
                Vec::new()
            }),
            Err(Reason::ResponseTooLarge)
        );
        assert!(!asked, "an oversized answer is not read");
        assert!(read
            .denial(Reason::ResponseOutsideGrant, "read Observation")
            .detail
            .contains("the response holds a resource outside"));
    }
}
