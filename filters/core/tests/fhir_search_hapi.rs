//! FHIR search-parameter reading compared with HAPI FHIR (differential; the table
//! is in docs/checks.md "FHIR search parameters compared with HAPI FHIR"). Each case gives a
//! query, how HAPI FHIR reads it (the HAPI source named by its path in the hapifhir/hapi-fhir
//! repository), and what the guard decides for a `patient/` grant with patient `pat-anna`.
//! The rule: where HAPI's reading is not confined to `pat-anna`, the guard must refuse; where
//! it is, the guard either reads it the same way (`check`: allowed, response checked) or
//! refuses (fails closed). Policy: `tests/data/fhir_policy.json`.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::PathBuf;

use fapi_guard_core::claims::VerifiedToken;
use fapi_guard_core::fhir::policy::FhirPolicy;
use fapi_guard_core::fhir::query::{parse, Param};
use fapi_guard_core::fhir::{decide, Decision, RequestView};

// HAPI sources (paths in github.com/hapifhir/hapi-fhir):
/// `UrlUtil.parseQueryString`: split on `&`, blank segments skipped, no `=` = empty value,
/// name and value URL-decoded (`+` = space, `%2C` = `,`).
const URLUTIL: &str = "hapi-fhir-base/src/main/java/ca/uhn/fhir/util/UrlUtil.java parseQueryString";
/// `ParameterUtil.splitParameterString` / `unescape`: OR-list on `,` unless preceded by `\`;
/// a leading `,` is literal; empty items in between are null, a trailing empty one dropped.
const SPLIT: &str =
    "hapi-fhir-base/src/main/java/ca/uhn/fhir/rest/param/ParameterUtil.java splitParameterString";
/// `ReferenceParam.doSetValueAsQueryToken`: `:Type` qualifier types the value; otherwise
/// the value is parsed as an `IdDt` (type, id, base URL, version).
const REFPARAM: &str =
    "hapi-fhir-base/src/main/java/ca/uhn/fhir/rest/param/ReferenceParam.java doSetValueAsQueryToken";
/// JPA `ResourceLinkPredicateBuilder.createPredicate`: version dropped
/// (`new IdDt(base, type, id, null)`); a non-local base URL matches the URL as given; an
/// untyped id is looked up without a type ("unqualified resource" warning): any target type.
const LINK: &str = "hapi-fhir-jpaserver-base/src/main/java/ca/uhn/fhir/jpa/search/builder/predicate/ResourceLinkPredicateBuilder.java createPredicate";
/// JPA `ResourceIdPredicateBuilder.createPredicateResourceId`: blank `_id` values ignored,
/// a leading `|` stripped, `Type/` prefixed when no `/`, `:not` = not equal.
const RESID: &str = "hapi-fhir-jpaserver-base/src/main/java/ca/uhn/fhir/jpa/search/builder/predicate/ResourceIdPredicateBuilder.java createPredicateResourceId";
/// `SearchParameterMap` / `BaseAndListParam`: repeated parameters AND, comma values OR;
/// chains (`.`), `_has`, `_include` (incl. `*` and `:iterate`) and `:mdm` expansion as the
/// FHIR R4 search page (§3.1.1.4.9, §3.1.1.4.10, §3.1.1.5.4) and HAPI's MDM module define.
const SEARCH: &str =
    "hapi-fhir-jpaserver-base/src/main/java/ca/uhn/fhir/jpa/search/builder/SearchBuilder.java";

/// (request target, HAPI source, how HAPI reads it, confined to pat-anna in HAPI?, guard).
const CASES: &[(&str, &str, &str, bool, &str)] = &[
    // -- the patient named: typed, untyped, versioned, absolute --
    (
        "/fhir/Observation?patient=pat-anna",
        REFPARAM,
        "single-target `patient`: Patient/pat-anna",
        true,
        "check",
    ),
    (
        "/fhir/Observation?patient=Patient/pat-anna",
        REFPARAM,
        "Patient/pat-anna",
        true,
        "check",
    ),
    (
        "/fhir/Observation?subject=Patient/pat-anna",
        REFPARAM,
        "Patient/pat-anna",
        true,
        "check",
    ),
    (
        "/fhir/Observation?subject:Patient=pat-anna",
        REFPARAM,
        "`:Patient` types the id: Patient/pat-anna",
        true,
        "check",
    ),
    (
        "/fhir/Observation?subject=pat-anna",
        LINK,
        "untyped id: Group/, Device/, Location/pat-anna too",
        false,
        "deny:ambiguous_reference",
    ),
    (
        "/fhir/Observation?performer=pat-anna",
        LINK,
        "untyped id: Practitioner/pat-anna etc. too",
        false,
        "deny:ambiguous_reference",
    ),
    (
        "/fhir/Observation?subject=pat-anna&patient=pat-anna",
        LINK,
        "AND with an untyped id",
        true,
        "deny:ambiguous_reference",
    ),
    (
        "/fhir/Observation?subject:Group=pat-anna",
        REFPARAM,
        "Group/pat-anna",
        false,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Observation?patient=Patient/pat-anna/_history/1",
        LINK,
        "version dropped: Patient/pat-anna",
        true,
        "check",
    ),
    (
        "/fhir/Observation?patient=http://other.example/fhir/Patient/pat-anna",
        LINK,
        "non-local base: references to that URL",
        false,
        "deny:compartment_escape",
    ),
    (
        "/fhir/Observation?patient=Patient/pat-anna/",
        REFPARAM,
        "id `pat-anna/`: not the patient",
        false,
        "deny:compartment_escape",
    ),
    // -- AND / OR / escaping / decoding --
    (
        "/fhir/Observation?patient=pat-anna,pat-bjorn",
        SPLIT,
        "OR: both patients",
        false,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Observation?patient=pat-anna%2Cpat-bjorn",
        URLUTIL,
        "decoded before the split: OR",
        false,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Observation?patient=pat-anna&patient=pat-bjorn",
        SEARCH,
        "AND: nothing",
        true,
        "deny:compartment_escape",
    ),
    (
        "/fhir/Observation?patient=pat-anna\\,x",
        SPLIT,
        "escaped comma: one value `pat-anna,x`",
        false,
        "deny:compartment_escape",
    ),
    (
        "/fhir/Observation?patient=pat-anna%5C%2Cx",
        SPLIT,
        "decoded `\\,`: one value `pat-anna,x`",
        false,
        "deny:compartment_escape",
    ),
    (
        "/fhir/Observation?patient=pat-anna,",
        SPLIT,
        "trailing empty item dropped: pat-anna",
        true,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Observation?patient=,pat-anna",
        SPLIT,
        "leading comma literal: `,pat-anna`",
        false,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Observation?patient=pat-anna+",
        URLUTIL,
        "`+` is a space: `pat-anna `",
        false,
        "deny:compartment_escape",
    ),
    (
        "/fhir/Observation?patient=pat-anna%20",
        URLUTIL,
        "`%20` is a space: `pat-anna `",
        false,
        "deny:compartment_escape",
    ),
    (
        "/fhir/Observation?patient=pat%2Danna",
        URLUTIL,
        "decoded: pat-anna",
        true,
        "check",
    ),
    (
        "/fhir/Observation?pat%69ent=pat-anna",
        URLUTIL,
        "name decoded: patient",
        true,
        "check",
    ),
    (
        "/fhir/Observation?patient=pat-anna&&",
        URLUTIL,
        "blank segments skipped",
        true,
        "check",
    ),
    // -- empty values --
    (
        "/fhir/Observation?patient=",
        RESID,
        "blank value ignored: every patient",
        false,
        "deny:compartment_escape",
    ),
    (
        "/fhir/Observation?patient",
        URLUTIL,
        "no `=`: empty value, ignored: every patient",
        false,
        "deny:compartment_escape",
    ),
    (
        "/fhir/Observation?patient=pat-anna&patient=",
        RESID,
        "blank ignored: pat-anna",
        true,
        "deny:compartment_escape",
    ),
    // -- modifiers --
    (
        "/fhir/Observation?patient:missing=true",
        SEARCH,
        "observations without a patient",
        false,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Observation?patient=pat-anna&subject:missing=false",
        SEARCH,
        "AND narrows: pat-anna",
        true,
        "check",
    ),
    (
        "/fhir/Observation?patient:not=pat-bjorn",
        SEARCH,
        "everyone but pat-bjorn",
        false,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Observation?patient=pat-anna&patient:not=pat-bjorn",
        SEARCH,
        "AND narrows: pat-anna",
        true,
        "check",
    ),
    (
        "/fhir/Observation?patient:mdm=pat-anna",
        SEARCH,
        "MDM-linked patients too",
        false,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Observation?patient=pat-anna&patient:mdm=pat-anna",
        SEARCH,
        "AND narrows: pat-anna",
        true,
        "check",
    ),
    (
        "/fhir/Observation?patient:identifier=urn:x|1",
        SEARCH,
        "any patient with that identifier",
        false,
        "deny:unsafe_search",
    ),
    // -- chains, reverse chains, includes, other escapes --
    (
        "/fhir/Observation?subject:Patient.identifier=urn:x|1",
        SEARCH,
        "chain: any patient with the identifier",
        false,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Observation?patient=pat-anna&subject.name=x",
        SEARCH,
        "chain (AND narrows)",
        true,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Observation?patient=pat-anna&_has:Observation:patient:code=x",
        SEARCH,
        "reverse chain",
        true,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Observation?patient=pat-anna&_include=Observation:patient",
        SEARCH,
        "includes Patient/pat-anna only",
        true,
        "check",
    ),
    (
        "/fhir/Observation?patient=pat-anna&_include=Observation:performer",
        SEARCH,
        "includes performers (other patients possible)",
        false,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Observation?patient=pat-anna&_include=*",
        SEARCH,
        "includes every reference",
        false,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Observation?patient=pat-anna&_include:iterate=Observation:patient",
        SEARCH,
        "iterates further",
        false,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Observation?patient=pat-anna&_list=l1",
        SEARCH,
        "list membership",
        true,
        "deny:unsafe_search",
    ),
    // -- _id on Patient --
    (
        "/fhir/Patient?_id=pat-anna",
        RESID,
        "Patient/pat-anna",
        true,
        "check",
    ),
    (
        "/fhir/Patient?_id=Patient/pat-anna",
        RESID,
        "Patient/pat-anna",
        true,
        "check",
    ),
    (
        "/fhir/Patient?_id=|pat-bjorn",
        RESID,
        "leading `|` stripped: pat-bjorn",
        false,
        "deny:compartment_escape",
    ),
    (
        "/fhir/Patient?_id:not=pat-bjorn",
        RESID,
        "every other patient",
        false,
        "deny:unsafe_search",
    ),
    (
        "/fhir/Patient?_id=pat-anna&_id=",
        RESID,
        "blank ignored: pat-anna",
        true,
        "deny:compartment_escape",
    ),
];

fn policy() -> FhirPolicy {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/fhir_policy.json");
    FhirPolicy::from_section_json(&std::fs::read(path).unwrap()).unwrap()
}

fn token() -> VerifiedToken {
    let mut claims = serde_json::Map::new();
    claims.insert("patient".into(), "pat-anna".into());
    VerifiedToken {
        scheme: fapi_guard_core::scheme::Scheme::Dpop,
        token_sha256: "x".into(),
        iss: "https://issuer.example".into(),
        sub: "user-1".into(),
        client_id: "app".into(),
        exp: 0,
        scopes: ["patient/Observation.rs", "patient/Patient.rs"]
            .map(String::from)
            .to_vec(),
        cnf_jkt: None,
        cnf_x5t_s256: None,
        claims,
    }
}

fn code(d: &Decision) -> String {
    match d {
        Decision::AllowIfResponseMatches(_) => "check".into(),
        Decision::Deny(x) => format!("deny:{}", x.reason.code()),
        other => format!("{other:?}"),
    }
}

#[test]
fn guard_reads_searches_as_hapi_does_or_refuses() {
    let (p, t) = (policy(), token());
    let mut wrong = Vec::new();
    for (target, src, hapi, confined, want) in CASES {
        // A reading HAPI does not confine to the patient must be refused (a bypass otherwise).
        assert!(
            *confined || want.starts_with("deny:"),
            "{target}: table says allow where HAPI ({src}) reads: {hapi}"
        );
        let (base, query) = target.split_once('?').unwrap();
        for (method, path, body) in [
            ("GET", target.to_string(), None),
            // The same parameters as a form body (FHIR R4 §3.1.1.0 `POST [type]/_search`).
            ("POST", format!("{base}/_search"), Some(query.as_bytes())),
        ] {
            let mut view = RequestView {
                method,
                path_with_query: &path,
                if_none_exist: None,
                content_type: Some("application/x-www-form-urlencoded"),
                body: None,
            };
            let mut d = decide(&p, Some(&t), &view);
            if d == Decision::NeedBody {
                view.body = Some(body.unwrap_or_default());
                d = decide(&p, Some(&t), &view);
            }
            if code(&d) != *want {
                wrong.push(format!(
                    "{method} {path}: got {}, want {want} (HAPI: {hapi})",
                    code(&d)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn query_split_agrees_with_hapi_url_util() {
    // UrlUtil.parseQueryString + ParameterUtil.splitParameterString, where they agree.
    let read = |q: &str| -> Vec<(String, Vec<String>)> {
        parse(q)
            .unwrap()
            .iter()
            .map(|p: &Param| (p.name.clone(), p.or_values()))
            .collect()
    };
    let v = |n: &str, vals: &[&str]| (n.to_string(), vals.iter().map(|s| s.to_string()).collect());
    assert_eq!(read("a=1&&b=2"), vec![v("a", &["1"]), v("b", &["2"])]);
    assert_eq!(read("a"), vec![v("a", &[""])]);
    assert_eq!(read("a=x+y%20z"), vec![v("a", &["x y z"])]);
    assert_eq!(read("a=1,2&a=3"), vec![v("a", &["1", "2"]), v("a", &["3"])]);
    assert_eq!(read("a=1%2C2"), vec![v("a", &["1", "2"])]);
    assert_eq!(read("a=1\\,2"), vec![v("a", &["1,2"])]);
    assert_eq!(read("a%3Ab=1"), vec![v("a:b", &["1"])]);
    // Where HAPI differs, the guard keeps the extra empty item, and `pin` refuses it
    // (the CASES rows with `,` at either end): HAPI drops a trailing one, keeps a leading `,`.
    assert_eq!(read("a=1,"), vec![v("a", &["1", ""])]);
    assert_eq!(read("a=,1"), vec![v("a", &["", "1"])]);
}
