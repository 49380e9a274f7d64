//! The compiled `fhir` section the decisions read: served types, contexts, allowed
//! operations, the patient compartment, body caps, and the stored read before a write.

use super::document::FhirDoc;
use crate::error::PolicyError;
use crate::fhir::compartment::Compartment;
use crate::fhir::interaction::Level;
use crate::fhir::scope::{Context, Perms};

/// One allowed operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRule {
    pub name: String,
    pub levels: Vec<Level>,
    pub resource_types: Vec<String>,
    pub perms: Perms,
    pub all_types: bool,
}

/// The compiled `fhir` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirPolicy {
    pub server: crate::fhir::server::Server,
    pub base_path: String,
    pub contexts: Vec<Context>,
    pub patient_claim: String,
    pub resource_types: Vec<String>,
    pub patient_shared_types: Vec<String>,
    pub operations: Vec<OperationRule>,
    /// The patient compartment decided with (`fhir.compartment`).
    pub compartment: Compartment,
    pub max_response_bytes: usize,
    pub hide_foreign_as_not_found: bool,
    pub max_request_body_bytes: usize,
    pub hold_headers_while_buffering: bool,
    pub read_before_write_cluster: String,
    pub read_before_write_headers: Vec<String>,
}

/// Headers the stored read sets itself, or that describe the client's own message.
pub(super) const RBW_NEVER: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "accept",
    "accept-encoding",
    "if-none-exist",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "dpop",
];
pub(super) const RBW_CREDENTIALS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

impl FhirPolicy {
    /// The request headers to copy onto the stored read (read before write): every value of
    /// each name in `read_before_write_headers`, in request order (docs/checks.md).
    pub fn stored_read_headers(&self, request: &[(String, String)]) -> Vec<(String, String)> {
        request
            .iter()
            .filter(|(k, _)| {
                self.read_before_write_headers
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(k))
            })
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    }

    pub fn serves(&self, t: &str) -> bool {
        self.resource_types.iter().any(|x| x == t)
    }

    pub fn is_shared(&self, t: &str) -> bool {
        self.patient_shared_types.iter().any(|x| x == t)
    }

    pub fn operation(&self, name: &str) -> Option<&OperationRule> {
        self.operations.iter().find(|o| o.name == name)
    }

    /// A policy from a JSON `fhir` section alone (tests, tools).
    pub fn from_section_json(bytes: &[u8]) -> Result<FhirPolicy, PolicyError> {
        let doc: FhirDoc = crate::json_locate::parse(bytes, "fhir")?;
        doc.compile()
    }
}
