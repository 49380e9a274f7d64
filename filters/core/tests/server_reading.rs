//! Reading the request as the server does (docs/checks.md "Reading the request as the server
//! does"; `fhir::server`): method override, parameter-name case and repetition, `_search`
//! bodies by Content-Type, tokens in form bodies, and the count oracle, per `fhir.server`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/smart.rs"]
mod smart;

use fapi_guard_core::claims::VerifiedToken;
use fapi_guard_core::denial::Reason;
use fapi_guard_core::fhir::policy::FhirPolicy;
use fapi_guard_core::fhir::response_check::SearchCheck;
use fapi_guard_core::fhir::server::Server;
use fapi_guard_core::fhir::{check_response, decide, Decision, RequestView, ResponseCheck};
use fapi_guard_core::policy::{Policy, RequestFault};

const FORM: &str = "application/x-www-form-urlencoded";

fn fhir(server: Server) -> FhirPolicy {
    let mut p = FhirPolicy::from_section_json(
        br#"{"base_path": "/fhir", "resource_types": ["Patient", "Observation", "Condition"]}"#,
    )
    .unwrap();
    p.server = server;
    p
}

fn token(scopes: &str) -> VerifiedToken {
    smart::patient_token(scopes.split_whitespace(), "pat-anna")
}

/// Decides as the filter does: with the body once it is asked for.
fn run(
    server: Server,
    scopes: &str,
    method: &str,
    target: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Decision {
    let p = fhir(server);
    let t = token(scopes);
    let mut view = RequestView {
        method,
        path_with_query: target,
        content_type,
        ..Default::default()
    };
    let d = decide(&p, Some(&t), &view);
    if d != Decision::NeedBody {
        return d;
    }
    view.body = Some(body);
    decide(&p, Some(&t), &view)
}

fn reason(d: &Decision) -> Option<Reason> {
    match d {
        Decision::Deny(x) => Some(x.reason),
        _ => None,
    }
}

fn policy(server: Option<&str>) -> Policy {
    let fhir = match server {
        Some(s) => format!(r#", "fhir": {{"base_path": "/fhir", "server": "{s}"}}"#),
        None => String::new(),
    };
    let doc = format!(
        r#"{{"api": {{"name": "a", "audience": "a"}},
            "issuers": [{{"issuer": "https://i", "jwks_uri": "https://i/jwks", "jwks_cluster": "c"}}],
            "routes": [{{"path_prefix": "/fhir/metadata", "methods": ["GET"], "require": "none"}}]
            {fhir}}}"#
    );
    Policy::from_json(doc.as_bytes()).unwrap()
}

#[test]
fn method_override_refused_on_every_route_without_a_profile_that_ignores_it() {
    for server in [
        None,
        Some("generic"),
        Some("microsoft"),
        Some("firely"),
        Some("medplum"),
    ] {
        let p = policy(server);
        for h in [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
        ] {
            for path in ["/fhir/metadata", "/fhir/Observation/o1", "/rest/anything"] {
                let r = p.route("GET", path, &|n| n == h);
                assert_eq!(
                    r.err(),
                    Some(RequestFault::MethodOverride),
                    "{server:?} {h} {path}"
                );
            }
        }
        for q in [
            "_method=DELETE",
            "X-Method-Override=PUT",
            "%5Fmethod=DELETE",
            "x-http-method=DELETE",
        ] {
            let r = p.route("GET", &format!("/fhir/metadata?{q}"), &|_| false);
            assert_eq!(
                r.err(),
                Some(RequestFault::MethodOverride),
                "{server:?} {q}"
            );
        }
        assert!(p
            .route("GET", "/fhir/metadata?_format=json", &|_| false)
            .is_ok());
    }
    // HAPI dispatches on the request method alone: every form passes.
    let hapi = policy(Some("hapi"));
    assert!(hapi
        .route("GET", "/fhir/Observation/o1?_method=DELETE", &|_| true)
        .is_ok());
    // IBM honours its two names only.
    let ibm = policy(Some("ibm"));
    assert!(ibm
        .route("GET", "/fhir/x", &|n| n == "x-method-override")
        .is_err());
    assert!(ibm
        .route("GET", "/fhir/x?x-http-method-override=PUT", &|_| false)
        .is_err());
    assert!(ibm
        .route("GET", "/fhir/x?_method=DELETE", &|n| n == "x-http-method")
        .is_ok());
    assert_eq!(
        RequestFault::MethodOverride.reason().code(),
        "method_override"
    );
}

#[test]
fn override_in_a_form_body_is_refused_where_the_server_reads_forms() {
    // IBM's `getParameter` reads a form body on any method: `GET` + form `x-method-override`.
    for server in [Server::Generic, Server::Ibm] {
        let d = run(
            server,
            "patient/Observation.rs",
            "GET",
            "/fhir/Observation/o1",
            Some(FORM),
            b"x-method-override=DELETE",
        );
        assert_eq!(reason(&d), Some(Reason::MethodOverride), "{server:?}");
        let d = run(
            server,
            "patient/Observation.rs",
            "POST",
            "/fhir/Observation/_search",
            Some(FORM),
            b"patient=pat-anna&x-method-override=DELETE",
        );
        assert_eq!(reason(&d), Some(Reason::MethodOverride), "{server:?}");
    }
    // A form in another case of its media type, which IBM's `contains` ignores but a servlet
    // container may read.
    let d = run(
        Server::Ibm,
        "patient/Observation.rs",
        "POST",
        "/fhir/Observation/_search?patient=pat-anna",
        Some("Application/X-WWW-Form-Urlencoded"),
        b"x-method-override=DELETE",
    );
    assert_eq!(reason(&d), Some(Reason::MethodOverride));
    let d = run(
        Server::Hapi,
        "patient/Observation.rs",
        "GET",
        "/fhir/Observation/o1",
        Some(FORM),
        b"x-method-override=DELETE",
    );
    assert!(matches!(d, Decision::AllowIfResponseMatches(_)), "{d:?}");
}

#[test]
fn parameter_case_by_profile() {
    let user = "user/Observation.rs";
    let target = "/fhir/Observation?_INCLUDE=Observation:subject:Patient";
    let d = run(Server::Generic, user, "GET", target, None, b"");
    assert_eq!(reason(&d), Some(Reason::ParameterNameAmbiguous));
    // Microsoft reads `_INCLUDE` as `_include`: decided as such (Patient is not granted).
    let d = run(Server::Microsoft, user, "GET", target, None, b"");
    assert_eq!(reason(&d), Some(Reason::InsufficientScope));
    // HAPI reads `_INCLUDE` as an unknown parameter (case-sensitive map).
    let d = run(Server::Hapi, user, "GET", target, None, b"");
    assert_eq!(d, Decision::Allow);
    // `_TYPE` on a system search, and a compartment pin in another case.
    let d = run(
        Server::Generic,
        user,
        "GET",
        "/fhir?_type=Observation&_TYPE=Patient",
        None,
        b"",
    );
    assert_eq!(reason(&d), Some(Reason::ParameterNameAmbiguous));
    let d = run(
        Server::Microsoft,
        user,
        "GET",
        "/fhir?_type=Observation&_TYPE=Patient",
        None,
        b"",
    );
    assert_eq!(reason(&d), Some(Reason::InsufficientScope));
    let d = run(
        Server::Generic,
        "patient/Observation.rs",
        "GET",
        "/fhir/Observation?patient=pat-anna&PATIENT=pat-bjorn",
        None,
        b"",
    );
    assert_eq!(reason(&d), Some(Reason::ParameterNameAmbiguous));
    let d = run(
        Server::Microsoft,
        "patient/Observation.rs",
        "GET",
        "/fhir/Observation?patient=pat-anna&PATIENT=pat-bjorn",
        None,
        b"",
    );
    assert_eq!(reason(&d), Some(Reason::CompartmentEscape));
}

#[test]
fn repeated_controls_refused_under_generic_also_across_query_and_body() {
    let user = "user/Observation.rs user/Condition.rs";
    let d = run(
        Server::Generic,
        user,
        "GET",
        "/fhir?_type=Observation&_type=Condition",
        None,
        b"",
    );
    assert_eq!(reason(&d), Some(Reason::ParameterNameAmbiguous));
    let d = run(
        Server::Hapi,
        user,
        "GET",
        "/fhir?_type=Observation&_type=Condition",
        None,
        b"",
    );
    assert_eq!(d, Decision::Allow);
    let d = run(
        Server::Generic,
        user,
        "POST",
        "/fhir/Observation/_search?_count=10",
        Some(FORM),
        b"_count=0",
    );
    assert_eq!(reason(&d), Some(Reason::ParameterNameAmbiguous));
}

#[test]
fn search_bodies_by_content_type() {
    let pinned_in_body = b"patient=pat-anna";
    let target = "/fhir/Observation/_search?_summary=count";
    let scopes = "patient/Observation.rs";
    // A form body is read: pinned.
    let d = run(
        Server::Generic,
        scopes,
        "POST",
        target,
        Some(FORM),
        pinned_in_body,
    );
    assert!(matches!(d, Decision::AllowIfResponseMatches(_)), "{d:?}");
    // Another body: servers differ -> refused under generic (415) and the unread profiles.
    for (server, ct) in [
        (Server::Generic, Some("application/json")),
        (Server::Generic, None),
        (Server::Generic, Some("Application/X-WWW-Form-Urlencoded")),
        (Server::Firely, Some("application/fhir+json")),
        (Server::Microsoft, Some("multipart/form-data; boundary=b")),
    ] {
        let d = run(server, scopes, "POST", target, ct, pinned_in_body);
        assert_eq!(
            reason(&d),
            Some(Reason::SearchBodyNotForm),
            "{server:?} {ct:?}"
        );
        assert_eq!(Reason::SearchBodyNotForm.status(), 415);
    }
    // HAPI and Microsoft ignore it: decided on the query alone, which is not pinned.
    for server in [Server::Hapi, Server::Microsoft, Server::Ibm] {
        let d = run(
            server,
            scopes,
            "POST",
            target,
            Some("application/json"),
            pinned_in_body,
        );
        assert_eq!(reason(&d), Some(Reason::UnsafeSearch), "{server:?}");
    }
    // A `user/` constraint carried only in an ignored JSON body is missing.
    let d = run(
        Server::Hapi,
        "user/Observation.rs?category=laboratory",
        "POST",
        "/fhir/Observation/_search",
        Some("application/json"),
        b"category=laboratory",
    );
    assert_eq!(reason(&d), Some(Reason::QueryConstraintMissing));
    // An empty body with any Content-Type: the query alone.
    let d = run(
        Server::Generic,
        scopes,
        "POST",
        "/fhir/Observation/_search?patient=pat-anna",
        Some("application/json"),
        b"",
    );
    assert!(matches!(d, Decision::AllowIfResponseMatches(_)), "{d:?}");
}

#[test]
fn token_in_a_form_body_is_refused() {
    for body in [
        &b"patient=pat-anna&access_token=abc"[..],
        b"%61ccess_token=abc",
        b"ACCESS%5FTOKEN=x",
    ] {
        let d = run(
            Server::Generic,
            "patient/Observation.rs",
            "POST",
            "/fhir/Observation/_search",
            Some(FORM),
            body,
        );
        assert_eq!(reason(&d), Some(Reason::TokenInBody));
    }
}

fn searchset_check(pin_read: bool) -> ResponseCheck {
    ResponseCheck::Searchset(SearchCheck {
        resource_type: Some("Observation".into()),
        patient: "pat-anna".into(),
        constraints: Vec::new(),
        non_compartment_types_pass: false,
        pin_read,
    })
}

fn bundle(total: u64, entries: usize) -> Vec<u8> {
    let e: Vec<serde_json::Value> = (0..entries)
        .map(|i| {
            serde_json::json!({"resource": {"resourceType": "Observation", "id": format!("o{i}"),
                "subject": {"reference": "Patient/pat-anna"}}, "search": {"mode": "match"}})
        })
        .collect();
    serde_json::to_vec(
        &serde_json::json!({"resourceType": "Bundle", "type": "searchset",
        "total": total, "entry": e}),
    )
    .unwrap()
}

#[test]
fn no_count_oracle_unless_the_pin_was_read() {
    let p = fhir(Server::Generic);
    // Pin read (query): page one of 20 with total 57 is paging, and `_summary=count` counts
    // the patient's own.
    assert_eq!(
        check_response(&p, &searchset_check(true), 200, &bundle(57, 20)),
        Ok(())
    );
    assert_eq!(
        check_response(&p, &searchset_check(true), 200, &bundle(3, 0)),
        Ok(())
    );
    // Pin not read: a total above the entries seen counts other patients'.
    assert_eq!(
        check_response(&p, &searchset_check(false), 200, &bundle(57, 20)),
        Err(Reason::SearchTotalUnchecked)
    );
    assert_eq!(
        check_response(&p, &searchset_check(false), 200, &bundle(3, 0)),
        Err(Reason::SearchTotalUnchecked)
    );
    assert_eq!(
        check_response(&p, &searchset_check(false), 200, &bundle(2, 2)),
        Ok(())
    );
    // Every patient-grant search the guard allows pinned in a form the server reads.
    let d = run(
        Server::Generic,
        "patient/Observation.rs",
        "GET",
        "/fhir/Observation?patient=pat-anna&_summary=count",
        None,
        b"",
    );
    match d {
        Decision::AllowIfResponseMatches(ResponseCheck::Searchset(sc)) => assert!(sc.pin_read),
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_field_is_read_and_checked() {
    let p = policy(Some("microsoft"));
    assert_eq!(p.server(), Server::Microsoft);
    assert_eq!(policy(None).server(), Server::Generic);
    let bad = br#"{"api": {"name": "a", "audience": "a"},
        "issuers": [{"issuer": "https://i", "jwks_uri": "https://i/jwks", "jwks_cluster": "c"}],
        "fhir": {"server": "tomcat"}}"#;
    let err = Policy::from_json(bad).unwrap_err().to_string();
    assert!(err.contains("fhir.server"), "{err}");
}

#[test]
fn the_explainer_refuses_overrides_as_the_filters_do() {
    use fapi_guard_core::explain::{explain, Options, Request};
    let p = policy(None);
    let headers = vec![("X-HTTP-Method-Override".to_string(), "DELETE".to_string())];
    let req = Request {
        method: "GET",
        path: "/fhir/metadata",
        scheme: "http",
        authority: "api",
        headers: &headers,
        body: None,
    };
    let t = explain(&p, &req, &Options::default());
    assert_eq!(t.answer.reason, Some("method_override"));
    assert_eq!(t.answer.status, Some(400));
    assert!(!t.answer.forwarded);
    let plain = Request {
        headers: &[],
        ..req
    };
    assert!(explain(&p, &plain, &Options::default()).answer.forwarded);
}
