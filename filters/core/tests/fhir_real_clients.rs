//! What real FHIR clients send (docs/checks.md §3 "paging", "subsetted answers",
//! "Provenance of the patient's data"): HAPI FHIR's paging links, `_summary`/`_elements`,
//! US Core's `_revinclude=Provenance:target`. Each is served for the patient's own data and
//! nothing of another patient's gets through. Policy: `tests/data/fhir_policy.json`.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[path = "support/smart.rs"]
mod smart;

use std::path::PathBuf;

use fapi_guard_core::claims::VerifiedToken;
use fapi_guard_core::denial::Reason;
use fapi_guard_core::fhir::exchange::response_check_request_edits;
use fapi_guard_core::fhir::policy::FhirPolicy;
use fapi_guard_core::fhir::subsetting::rewrite_elements;
use fapi_guard_core::fhir::{check_response, decide, Decision, RequestView, ResponseCheck};
use serde_json::{json, Value};

fn policy() -> FhirPolicy {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/fhir_policy.json");
    FhirPolicy::from_section_json(&std::fs::read(path).unwrap()).unwrap()
}

fn token(scopes: &[&str]) -> VerifiedToken {
    smart::patient_token(scopes.iter().copied(), "anna")
}

const PATIENT: &[&str] = &[
    "patient/Observation.rs",
    "patient/Patient.rs",
    "patient/Provenance.rs",
];

fn get(scopes: &[&str], target: &str) -> Decision {
    let view = RequestView {
        method: "GET",
        path_with_query: target,
        if_none_exist: None,
        content_type: None,
        body: None,
    };
    decide(&policy(), Some(&token(scopes)), &view)
}

fn checked(scopes: &[&str], target: &str) -> ResponseCheck {
    match get(scopes, target) {
        Decision::AllowIfResponseMatches(c) => c,
        other => panic!("{target}: {other:?}"),
    }
}

fn denied(scopes: &[&str], target: &str) -> Reason {
    match get(scopes, target) {
        Decision::Deny(d) => d.reason,
        other => panic!("{target}: {other:?}"),
    }
}

fn answer(check: &ResponseCheck, body: &Value) -> Result<(), Reason> {
    check_response(&policy(), check, 200, &serde_json::to_vec(body).unwrap())
}

fn obs(id: &str, patient: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"code": "laboratory"}]}],
        "subject": {"reference": format!("Patient/{patient}")}})
}

fn entry(r: Value, mode: &str) -> Value {
    json!({"resource": r, "search": {"mode": mode}})
}

fn searchset(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "searchset", "entry": entries})
}

fn provenance(id: &str, targets: &[&str]) -> Value {
    let t: Vec<Value> = targets.iter().map(|r| json!({"reference": r})).collect();
    json!({"resourceType": "Provenance", "id": id, "target": t,
        "recorded": "2024-01-01T00:00:00Z", "agent": [{"who": {"reference": "Practitioner/d"}}]})
}

// ---------- paging ----------

const HAPI_NEXT: &str =
    "/fhir?_getpages=0f1e2d&_getpagesoffset=20&_count=20&_pretty=true&_bundletype=searchset";

#[test]
fn hapi_paging_link_is_a_page_checked_entry_by_entry() {
    let c = checked(PATIENT, HAPI_NEXT);
    assert!(matches!(c, ResponseCheck::Page(_)));
    // HAPI's cached-page form (`_pageId`).
    checked(
        PATIENT,
        "/fhir?_getpages=0f1e2d&_pageId=p2&_bundletype=searchset",
    );
    // The patient's own page passes, with its included Patient and an outcome.
    let own = searchset(vec![
        entry(obs("o1", "anna"), "match"),
        entry(json!({"resourceType": "Patient", "id": "anna"}), "include"),
        entry(json!({"resourceType": "OperationOutcome"}), "outcome"),
    ]);
    assert_eq!(answer(&c, &own), Ok(()));
    // One entry of another patient refuses the page.
    let leak = searchset(vec![
        entry(obs("o1", "anna"), "match"),
        entry(obs("o2", "bert"), "match"),
    ]);
    assert_eq!(answer(&c, &leak), Err(Reason::ResponseOutsideGrant));
    let other_patient = searchset(vec![entry(
        json!({"resourceType": "Patient", "id": "bert"}),
        "include",
    )]);
    assert_eq!(
        answer(&c, &other_patient),
        Err(Reason::ResponseOutsideGrant)
    );
    // A type not granted (Condition), even the patient's own.
    let cond = searchset(vec![entry(
        json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/anna"}}),
        "match",
    )]);
    assert_eq!(answer(&c, &cond), Err(Reason::ResponseOutsideGrant));
    // Not a searchset: refused.
    let not_search = json!({"resourceType": "Bundle", "type": "collection", "entry": []});
    assert_eq!(answer(&c, &not_search), Err(Reason::ResponseOutsideGrant));
}

#[test]
fn page_under_constrained_and_user_grants() {
    let lab = ["patient/Observation.rs?category=laboratory"];
    let c = checked(&lab, HAPI_NEXT);
    assert_eq!(
        answer(&c, &searchset(vec![entry(obs("o1", "anna"), "match")])),
        Ok(())
    );
    let mut vital = obs("o3", "anna");
    vital["category"] = json!([{"coding": [{"code": "vital-signs"}]}]);
    assert_eq!(
        answer(&c, &searchset(vec![entry(vital, "match")])),
        Err(Reason::ResponseOutsideGrant)
    );
    // user/ grants: any patient, but only granted types.
    let c = checked(&["user/Observation.rs"], HAPI_NEXT);
    assert_eq!(
        answer(&c, &searchset(vec![entry(obs("o2", "bert"), "match")])),
        Ok(())
    );
    // `user/*.rs` allows any page, as it allows any system search.
    assert_eq!(get(&["user/*.rs"], HAPI_NEXT), Decision::Allow);
    let pat = json!({"resourceType": "Patient", "id": "bert"});
    assert_eq!(
        answer(&c, &searchset(vec![entry(pat, "include")])),
        Err(Reason::ResponseOutsideGrant)
    );
}

#[test]
fn page_links_carry_only_what_hapi_reads() {
    for bad in [
        "/fhir?_getpages=a&patient=bert",
        "/fhir?_getpages=a&_getpages=b",
        "/fhir?_getpages=",
        "/fhir?_getpages=a&_elements=status",
    ] {
        assert_eq!(denied(PATIENT, bad), Reason::UnknownFhirRequest, "{bad}");
    }
    // No search grant at all.
    assert_eq!(
        denied(&["patient/Observation.r"], HAPI_NEXT),
        Reason::InsufficientScope
    );
    // A system search without `_getpages` is still refused under patient grants.
    assert_eq!(
        denied(PATIENT, "/fhir?_count=20"),
        Reason::InsufficientScope
    );
}

#[test]
fn cursor_pages_of_other_servers_are_type_searches() {
    // Microsoft `ct`, IBM `_page`, Medplum `_offset`: the original query plus a cursor.
    for target in [
        "/fhir/Observation?patient=anna&ct=eyJ0b2tlbiI6MX0%3D",
        "/fhir/Observation?patient=anna&_count=10&_page=2",
        "/fhir/Observation?patient=anna&_count=10&_offset=10",
    ] {
        assert!(
            matches!(checked(PATIENT, target), ResponseCheck::Searchset(_)),
            "{target}"
        );
    }
}

// ---------- _summary / _elements ----------

#[test]
fn elements_are_extended_with_what_the_check_reads() {
    let target = "/fhir/Observation?patient=anna&_elements=status,code";
    let c = checked(PATIENT, target);
    let edits = response_check_request_edits(&policy(), &c, None, target);
    let path = edits
        .iter()
        .find(|(n, _)| *n == ":path")
        .and_then(|(_, v)| v.clone())
        .expect(":path rewritten");
    assert!(path.starts_with("/fhir/Observation?patient=anna&_elements=status,code,"));
    assert!(path.contains("subject"), "{path}");
    // A constraint's element too.
    let lab = ["patient/Observation.rs?category=laboratory"];
    let t = "/fhir/Observation?patient=anna&category=laboratory&_elements=status";
    let c = checked(&lab, t);
    let edits = response_check_request_edits(&policy(), &c, None, t);
    let p = edits.iter().find(|(n, _)| *n == ":path").unwrap().1.clone();
    assert!(p.unwrap().contains("category"));
    // A read by id of a compartment type.
    let t = "/fhir/Observation/o1?_elements=status";
    let c = checked(PATIENT, t);
    assert!(response_check_request_edits(&policy(), &c, None, t)
        .iter()
        .any(|(n, v)| *n == ":path" && v.as_deref().is_some_and(|p| p.contains("subject"))));
    // Patient is checked on `id`: nothing to add.
    let t = "/fhir/Patient?_id=anna&_elements=name";
    let c = checked(PATIENT, t);
    assert!(!response_check_request_edits(&policy(), &c, None, t)
        .iter()
        .any(|(n, _)| *n == ":path"));
    // Provenance included: its `target` is kept.
    let t = "/fhir/Observation?patient=anna&_revinclude=Provenance:target&_elements=status";
    let c = checked(PATIENT, t);
    let p = response_check_request_edits(&policy(), &c, None, t)
        .into_iter()
        .find(|(n, _)| *n == ":path")
        .unwrap()
        .1
        .unwrap();
    assert!(p.contains("target") && p.contains("subject"), "{p}");
}

#[test]
fn rewrite_keeps_the_rest_of_the_target() {
    let needed = vec!["subject".to_string()];
    assert_eq!(
        rewrite_elements("/fhir/Observation?a=%2C1&_elements=status&b", &needed).as_deref(),
        Some("/fhir/Observation?a=%2C1&_elements=status,subject&b")
    );
    assert_eq!(
        rewrite_elements("/fhir/Observation?%5Felements=subject", &needed),
        None
    );
    assert_eq!(
        rewrite_elements("/fhir/Observation?_elements=", &needed).as_deref(),
        Some("/fhir/Observation?_elements=subject")
    );
}

#[test]
fn summary_values_that_keep_or_hide_the_compartment() {
    for ok in ["true", "data", "false", "count"] {
        checked(
            PATIENT,
            &format!("/fhir/Observation?patient=anna&_summary={ok}"),
        );
    }
    for bad in [
        "/fhir/Observation?patient=anna&_summary=text",
        "/fhir/Observation?patient=anna&_summary=bogus",
        "/fhir/Observation/o1?_summary=text",
        "/fhir/Observation?patient=anna&_elements:exclude=subject",
    ] {
        assert_eq!(
            denied(PATIENT, bad),
            Reason::SubsettingHidesCompartment,
            "{bad}"
        );
    }
    // `Patient/[id]/*`: the types of the answer are not known.
    assert_eq!(
        denied(&["patient/*.rs"], "/fhir/Patient/anna/*?_elements=status"),
        Reason::SubsettingHidesCompartment
    );
    // Patient is decided on `id`: a text summary keeps it.
    checked(PATIENT, "/fhir/Patient?_id=anna&_summary=text");
    // A patient read without a check is not touched.
    assert_eq!(
        get(PATIENT, "/fhir/Patient/anna?_summary=text"),
        Decision::Allow
    );
}

#[test]
fn elements_that_cannot_be_rewritten_are_refused() {
    let p = policy();
    let t = token(PATIENT);
    // In a form body: the guard does not rewrite bodies.
    let view = RequestView {
        method: "POST",
        path_with_query: "/fhir/Observation/_search",
        if_none_exist: None,
        content_type: Some("application/x-www-form-urlencoded"),
        body: Some(b"patient=anna&_elements=status"),
    };
    match decide(&p, Some(&t), &view) {
        Decision::Deny(d) => assert_eq!(d.reason, Reason::SubsettingHidesCompartment),
        other => panic!("{other:?}"),
    }
    // In a Bundle entry.
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation?patient=anna&_elements=status"}}]});
    let body = serde_json::to_vec(&bundle).unwrap();
    let view = RequestView {
        method: "POST",
        path_with_query: "/fhir",
        if_none_exist: None,
        content_type: Some("application/fhir+json"),
        body: Some(&body),
    };
    match decide(&p, Some(&t), &view) {
        Decision::Deny(d) => assert_eq!(d.reason, Reason::SubsettingHidesCompartment),
        other => panic!("{other:?}"),
    }
}

// ---------- _revinclude=Provenance:target ----------

#[test]
fn provenance_of_the_patients_own_entries_is_served() {
    let c = checked(
        PATIENT,
        "/fhir/Observation?patient=anna&_revinclude=Provenance:target",
    );
    let own = searchset(vec![
        entry(obs("o1", "anna"), "match"),
        entry(provenance("p1", &["Observation/o1/_history/2"]), "include"),
        entry(
            provenance("p2", &["Patient/anna", "Observation/o1"]),
            "include",
        ),
    ]);
    assert_eq!(answer(&c, &own), Ok(()));
    // A Provenance that also targets a resource not in the answer (another patient's).
    for targets in [
        &["Observation/o1", "Observation/o9"][..],
        &["Observation/o9"],
        &["https://other.example/fhir/Observation/o1"],
        &[],
    ] {
        let leak = searchset(vec![
            entry(obs("o1", "anna"), "match"),
            entry(provenance("p3", targets), "include"),
        ]);
        assert_eq!(
            answer(&c, &leak),
            Err(Reason::ResponseOutsideGrant),
            "{targets:?}"
        );
    }
    // The same on Patient, and with the target type named.
    checked(
        PATIENT,
        "/fhir/Patient?_id=anna&_revinclude=Provenance:target",
    );
    checked(
        PATIENT,
        "/fhir/Observation?patient=anna&_revinclude=Provenance:target:Observation",
    );
}

#[test]
fn provenance_revinclude_needs_a_provenance_grant_and_the_searched_type() {
    assert_eq!(
        denied(
            &["patient/Observation.rs"],
            "/fhir/Observation?patient=anna&_revinclude=Provenance:target"
        ),
        Reason::UnsafeSearch
    );
    assert_eq!(
        denied(
            PATIENT,
            "/fhir/Observation?patient=anna&_revinclude=Provenance:target:Condition"
        ),
        Reason::UnsafeSearch
    );
    assert_eq!(
        denied(
            PATIENT,
            "/fhir/Observation?patient=anna&_revinclude=Provenance:entity"
        ),
        Reason::UnsafeSearch
    );
}

#[test]
fn provenance_on_a_page_is_proven_by_the_page() {
    let c = checked(PATIENT, HAPI_NEXT);
    let own = searchset(vec![
        entry(obs("o1", "anna"), "match"),
        entry(provenance("p1", &["Observation/o1"]), "include"),
    ]);
    assert_eq!(answer(&c, &own), Ok(()));
    let leak = searchset(vec![
        entry(obs("o1", "anna"), "match"),
        entry(provenance("p1", &["Observation/o2"]), "include"),
    ]);
    assert_eq!(answer(&c, &leak), Err(Reason::ResponseOutsideGrant));
}
