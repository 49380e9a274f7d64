//! FHIR R4 `CompartmentDefinition/patient` as data: for each resource type, the search
//! parameters that put a resource in a patient's compartment, and the element paths those
//! parameters search (from the R4 `SearchParameter` expressions). Plus the checks that read
//! a resource body: "is this resource in patient X's compartment", "does it match `p=v`".
//!
//! Rooms: [`definition`] the R4 table, [`membership`] the compartment the policy decides with,
//! [`body`] the patient references in a body, [`constraint`] matching a `p=v` constraint.

pub mod body;
pub mod constraint;
pub mod definition;
pub mod membership;

pub use body::{is_patient_ref, names_other_patient};
pub use constraint::{constraint_elements, resource_matches_constraint};
pub use definition::{PATIENT_COMPARTMENT, SUBJECT_ONLY};
pub use membership::{Compartment, Params};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r4() -> Compartment {
        Compartment::default()
    }

    #[test]
    fn membership() {
        let obs = json!({"resourceType":"Observation","subject":{"reference":"Patient/a"},
            "performer":[{"reference":"Practitioner/p"}]});
        assert!(r4().resource_in(&obs, "a"));
        assert!(!r4().resource_in(&obs, "b"));
        assert!(r4().written_for(&obs, "a"));
        let shared = json!({"resourceType":"Observation","subject":{"reference":"Patient/b"},
            "performer":[{"reference":"Patient/a"}]});
        assert!(r4().resource_in(&shared, "a"));
        assert!(!r4().written_for(&shared, "a"));
        let abs =
            json!({"resourceType":"Observation","subject":{"reference":"https://x/Patient/a"}});
        assert!(!r4().resource_in(&abs, "a"));
        let ver =
            json!({"resourceType":"Condition","subject":{"reference":"Patient/a/_history/3"}});
        assert!(r4().resource_in(&ver, "a"));
        let pat = json!({"resourceType":"Patient","id":"a"});
        assert!(r4().resource_in(&pat, "a"));
        assert!(!r4().resource_in(&pat, "ab"));
        let care = json!({"resourceType":"CarePlan","subject":{"reference":"Patient/x"},
            "activity":[{"detail":{"performer":[{"reference":"Patient/a"}]}}]});
        assert!(r4().resource_in(&care, "a"));
        let nort = json!({"subject":{"reference":"Patient/a"}});
        assert!(!r4().resource_in(&nort, "a"));
        let unknown = json!({"resourceType":"Practitioner","id":"a"});
        assert!(!r4().resource_in(&unknown, "a"));
    }

    #[test]
    fn other_patients_named_anywhere() {
        let own = json!({"resourceType":"Device","patient":{"reference":"Patient/a"}});
        assert!(!names_other_patient(&own, "a"));
        for r in [
            "Patient/b",
            "Patient/b/_history/2",
            "https://x.example/fhir/Patient/b",
            "https://x.example/fhir/Patient/b/_history/1",
            "Patient?identifier=urn:x|1",
        ] {
            let v = json!({"resourceType":"Task","contained":[{"resourceType":"Bundle",
                "entry":[{"resource":{"resourceType":"AuditEvent","entity":[{"what":{"reference":r}}]}}]}]});
            assert!(names_other_patient(&v, "a"), "{r}");
        }
        for r in [
            "Patient/a",
            "https://x.example/Patient/a/_history/3",
            "#p1",
            "Practitioner/b",
            "RelatedPerson/Patient",
        ] {
            let v = json!({"resourceType":"Task","for":{"reference":r}});
            assert!(!names_other_patient(&v, "a"), "{r}");
        }
        // Patient writes: `link.other` is a compartment element (R4 Patient `link`).
        let linked =
            json!({"resourceType":"Patient","id":"a","link":[{"other":{"reference":"Patient/b"}}]});
        assert!(!r4().written_for(&linked, "a"));
        let related = json!({"resourceType":"Patient","id":"a","link":[{"other":{"reference":"RelatedPerson/r"}}]});
        assert!(r4().written_for(&related, "a"));
        let bin = json!({"resourceType":"Binary","securityContext":{"reference":"Patient/a"}});
        assert!(r4().resource_in(&bin, "a") && !r4().resource_in(&bin, "b"));
    }

    #[test]
    fn constraints() {
        let obs = json!({"resourceType":"Observation","status":"final","category":[{"coding":[
            {"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}]});
        let ok = |q: &str| {
            let params = super::super::query::parse_strict(q).unwrap();
            resource_matches_constraint(&obs, &params)
        };
        assert!(ok("category=laboratory"));
        assert!(ok(
            "category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
        ));
        assert!(ok(
            "category=http://terminology.hl7.org/CodeSystem/observation-category|"
        ));
        assert!(!ok("category=|laboratory"));
        assert!(!ok("category=vital-signs"));
        assert!(ok("category=vital-signs,laboratory"));
        assert!(ok("status=final"));
        assert!(!ok("status=final&category=vital-signs"));
        assert!(!ok("category:not=vital-signs"));
        assert!(!ok("subject.name=x"));
    }
}
