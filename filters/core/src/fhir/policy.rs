//! The policy's `fhir` section: how the FHIR scope filter reads SMART scopes for this API.
//!
//! ```json
//! "fhir": {
//!   "base_path": "/fhir",
//!   "scope_contexts": ["patient", "user", "system"],
//!   "patient_claim": "patient",
//!   "resource_types": ["Patient", "Observation", "Condition", "Medication"],
//!   "patient_shared_types": ["Medication"],
//!   "operations": [
//!     {"name": "$everything", "levels": ["instance"], "resource_types": ["Patient"],
//!      "permissions": "rs", "all_types": true}
//!   ],
//!   "response_check": {"max_body_bytes": 1048576},
//!   "hide_foreign_as_not_found": false,
//!   "max_request_body_bytes": 1048576,
//!   "read_before_write_cluster": "api"
//! }
//! ```
//!
//! Rooms: [`document`] the section as written, [`compile`] its checks, [`rules`] the compiled
//! section.

pub mod compile;
pub mod document;
pub mod rules;

pub use document::{CompartmentDoc, FhirDoc, OperationDoc, ResponseCheckDoc};
pub use rules::{FhirPolicy, OperationRule};

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"base_path":"fhir"}"#, "fhir.base_path"),
            (r#"{"base_path":"/a//b"}"#, "fhir.base_path"),
            (r#"{"scope_contexts":[]}"#, "fhir.scope_contexts"),
            (
                r#"{"scope_contexts":["patient","admin"]}"#,
                "fhir.scope_contexts[1]",
            ),
            (
                r#"{"scope_contexts":["user","user"]}"#,
                "fhir.scope_contexts[1]",
            ),
            (r#"{"patient_claim":""}"#, "fhir.patient_claim"),
            (
                r#"{"resource_types":["Patient","observation"]}"#,
                "fhir.resource_types[1]",
            ),
            (r#"{"resource_types":[]}"#, "fhir.resource_types"),
            (
                r#"{"resource_types":["Patient"],"patient_shared_types":["Medication"]}"#,
                "fhir.patient_shared_types[0]",
            ),
            (
                r#"{"patient_shared_types":["Observation"],"resource_types":["Observation"]}"#,
                "fhir.patient_shared_types[0]",
            ),
            (
                r#"{"operations":[{"name":"$","levels":["type"],"permissions":"r"}]}"#,
                "fhir.operations[0].name",
            ),
            (
                r#"{"operations":[{"name":"a","levels":[],"permissions":"r"}]}"#,
                "fhir.operations[0].levels",
            ),
            (
                r#"{"operations":[{"name":"a","levels":["type","global"],"permissions":"r"}]}"#,
                "fhir.operations[0].levels[1]",
            ),
            (
                r#"{"operations":[{"name":"a","levels":["type"],"permissions":"sr"}]}"#,
                "fhir.operations[0].permissions",
            ),
            (
                r#"{"operations":[{"name":"a","levels":["type"],"permissions":"r","resource_types":["Foo"]}]}"#,
                "fhir.operations[0].resource_types[0]",
            ),
            (
                r#"{"operations":[{"name":"a","levels":["system"],"permissions":"r","resource_types":["Patient"]}]}"#,
                "fhir.operations[0].resource_types",
            ),
            (
                r#"{"operations":[{"name":"a","levels":["type"],"permissions":"r"},{"name":"$a","levels":["type"],"permissions":"r"}]}"#,
                "fhir.operations[1].name",
            ),
            (
                r#"{"response_check":{"max_body_bytes":0}}"#,
                "fhir.response_check.max_body_bytes",
            ),
            (
                r#"{"max_request_body_bytes":999999999}"#,
                "fhir.max_request_body_bytes",
            ),
            (r#"{"unknown_field":1}"#, "fhir.unknown_field"),
            (
                r#"{"read_before_write_cluster":""}"#,
                "fhir.read_before_write_cluster",
            ),
            (
                r#"{"read_before_write_cluster":"a b"}"#,
                "fhir.read_before_write_cluster",
            ),
            (
                r#"{"operations":[{"name":"a","levels":["type"],"permissions":"r","extra":1}]}"#,
                "fhir.operations[0].extra",
            ),
            (
                r#"{"read_before_write_headers":["x-tenant","X-Tenant-2"]}"#,
                "fhir.read_before_write_headers[1]",
            ),
            (
                r#"{"read_before_write_headers":[":authority"]}"#,
                "fhir.read_before_write_headers[0]",
            ),
            (
                r#"{"read_before_write_headers":["authorization"]}"#,
                "fhir.read_before_write_headers[0]",
            ),
            (
                r#"{"read_before_write_headers":["cookie"]}"#,
                "fhir.read_before_write_headers[0]",
            ),
            (
                r#"{"read_before_write_headers":["dpop"],"read_before_write_copy_credentials":true}"#,
                "fhir.read_before_write_headers[0]",
            ),
            (
                r#"{"read_before_write_headers":["content-length"]}"#,
                "fhir.read_before_write_headers[0]",
            ),
            (
                r#"{"read_before_write_headers":["x-t","x-t"]}"#,
                "fhir.read_before_write_headers[1]",
            ),
            (
                r#"{"read_before_write_headers":[""]}"#,
                "fhir.read_before_write_headers[0]",
            ),
            (
                r#"{"compartment":{"preset":"narrow"}}"#,
                "fhir.compartment.preset",
            ),
            (
                r#"{"compartment":{"params":{"Practitioner":[]}}}"#,
                "fhir.compartment.params.Practitioner",
            ),
            (
                r#"{"compartment":{"params":{"Observation":["subject","actor"]}}}"#,
                "fhir.compartment.params.Observation[1]",
            ),
            (
                r#"{"compartment":{"params":{"Observation":["subject","subject"]}}}"#,
                "fhir.compartment.params.Observation[1]",
            ),
            (
                r#"{"compartment":{"params":{"Patient":[]}}}"#,
                "fhir.compartment.params.Patient",
            ),
            (r#"{"compartment":{"extra":1}}"#, "fhir.compartment.extra"),
            (
                r#"{"compartment":{"params":{"Group":"member"}}}"#,
                "fhir.compartment.params.Group",
            ),
        ];
        for (doc, field) in cases {
            match FhirPolicy::from_section_json(doc.as_bytes()) {
                Ok(_) => panic!("accepted {doc}"),
                Err(e) => assert_eq!(e.field, *field, "{doc}: {e}"),
            }
        }
    }

    #[test]
    fn stored_read_headers_copy_only_the_listed_names() {
        let p = FhirPolicy::from_section_json(
            br#"{"read_before_write_headers":["x-tenant-id","authorization"],"read_before_write_copy_credentials":true}"#,
        );
        let p = p.ok();
        let req: Vec<(String, String)> = [
            ("X-Tenant-Id", "t1"),
            ("authorization", "Bearer x"),
            ("dpop", "proof"),
            ("cookie", "s=1"),
            ("x-tenant-id", "t2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let got = p.map(|p| p.stored_read_headers(&req)).unwrap_or_default();
        let want: Vec<(String, String)> = [
            ("x-tenant-id", "t1"),
            ("authorization", "Bearer x"),
            ("x-tenant-id", "t2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
        let none = FhirPolicy::from_section_json(b"{}").ok();
        assert_eq!(none.map(|p| p.stored_read_headers(&req).len()), Some(0));
        let ok = FhirPolicy::from_section_json(
            br#"{"read_before_write_headers":["cookie"],"read_before_write_copy_credentials":true}"#,
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn narrower_compartment() {
        use crate::fhir::response_check::{Alternative, ResourceCheck, ResponseCheck};
        let check = ResponseCheck::Resource(ResourceCheck {
            resource_type: "Observation".into(),
            id: None,
            history: false,
            alternatives: vec![Alternative {
                patient: Some("a".into()),
                constraint: Vec::new(),
            }],
        });
        // A child's result (subject b) the parent (a) performed.
        let performed = br#"{"resourceType":"Observation","subject":{"reference":"Patient/b"},
            "performer":[{"reference":"Patient/a"}]}"#;
        let own = br#"{"resourceType":"Observation","subject":{"reference":"Patient/a"}}"#;
        let run = |doc: &str, body: &[u8]| {
            let p = FhirPolicy::from_section_json(doc.as_bytes()).ok();
            p.map(|p| crate::fhir::check_response(&p, &check, 200, body).is_ok())
        };
        assert_eq!(run("{}", performed), Some(true));
        assert_eq!(
            run(r#"{"compartment":{"preset":"r4"}}"#, performed),
            Some(true)
        );
        for narrow in [
            r#"{"compartment":{"preset":"subject_only"}}"#,
            r#"{"compartment":{"params":{"Observation":["subject"]}}}"#,
        ] {
            assert_eq!(run(narrow, performed), Some(false), "{narrow}");
            assert_eq!(run(narrow, own), Some(true), "{narrow}");
        }
        // A preset, then one type put back to its R4 parameters.
        let back = r#"{"compartment":{"preset":"subject_only","params":{"Observation":["subject","performer"]}}}"#;
        assert_eq!(run(back, performed), Some(true));
        // The roster: Group is in by `member` (R4), out under subject_only or `[]`.
        let contains = |doc: &str, t: &str| {
            FhirPolicy::from_section_json(doc.as_bytes())
                .ok()
                .map(|p| p.compartment.contains(t))
        };
        assert_eq!(contains("{}", "Group"), Some(true));
        assert_eq!(
            contains(r#"{"compartment":{"preset":"subject_only"}}"#, "Group"),
            Some(false)
        );
        assert_eq!(
            contains(r#"{"compartment":{"params":{"Group":[]}}}"#, "Group"),
            Some(false)
        );
        assert_eq!(
            contains(r#"{"compartment":{"preset":"subject_only"}}"#, "Patient"),
            Some(true)
        );
        assert_eq!(
            contains(r#"{"compartment":{"preset":"subject_only"}}"#, "Binary"),
            Some(true)
        );
    }

    #[test]
    fn defaults() {
        let p = FhirPolicy::from_section_json(b"{}").ok();
        let p = p.as_ref();
        assert_eq!(p.map(|p| p.base_path.as_str()), Some("/"));
        assert_eq!(p.map(|p| p.contexts.len()), Some(3));
        assert_eq!(p.map(|p| p.serves("Observation")), Some(true));
        assert_eq!(p.map(|p| p.serves("Practitioner")), Some(false));
        assert_eq!(p.map(|p| p.read_before_write_cluster.as_str()), Some("api"));
        let p = FhirPolicy::from_section_json(br#"{"base_path":"/fhir/"}"#).ok();
        assert_eq!(p.map(|p| p.base_path), Some("/fhir".to_string()));
    }
}
