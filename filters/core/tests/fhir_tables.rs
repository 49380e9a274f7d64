//! Table-driven tests of the FHIR scope filter's core (docs/checks.md §3). The tables are data
//! under `tests/data/` so they can be reviewed as tables:
//!
//! - `scope_grammar.tsv`: scope string -> parsed grant / not-smart / malformed.
//! - `interactions.tsv`: method + target -> interaction, type, id (or refused).
//! - `scope_decisions.tsv`: scopes × patient context × request (+ body) -> decision.
//! - `responses.tsv`: the same plus an upstream response -> passed or refused.
//!
//! All use the policy in `tests/data/fhir_policy.json`. Bodies are files in `tests/data/bodies/`.
#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::PathBuf;

use fapi_guard_core::claims::VerifiedToken;
use fapi_guard_core::fhir::interaction::classify;
use fapi_guard_core::fhir::policy::FhirPolicy;
use fapi_guard_core::fhir::scope::{parse_scope, Context, ParsedScope};
use fapi_guard_core::fhir::{check_response, check_stored, decide, Decision, RequestView};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Rows of a TSV file: `#` comments and blank lines skipped, first row is the header.
fn rows(name: &str, cols: usize) -> Vec<(usize, Vec<String>)> {
    let text = std::fs::read_to_string(data(name)).unwrap();
    let mut out = Vec::new();
    let mut header_seen = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let cells: Vec<String> = line.split('\t').map(|c| c.trim().to_string()).collect();
        assert_eq!(
            cells.len(),
            cols,
            "{name}:{}: expected {cols} columns, got {}: {line:?}",
            n + 1,
            cells.len()
        );
        if !header_seen {
            header_seen = true;
            continue;
        }
        out.push((n + 1, cells));
    }
    assert!(!out.is_empty(), "{name} has no rows");
    out
}

fn policy() -> FhirPolicy {
    let bytes = std::fs::read(data("fhir_policy.json")).unwrap();
    FhirPolicy::from_section_json(&bytes).unwrap()
}

fn policy_hidden() -> FhirPolicy {
    let mut p = policy();
    p.hide_foreign_as_not_found = true;
    p
}

fn policy_user_system() -> FhirPolicy {
    let mut p = policy();
    p.contexts = vec![Context::User, Context::System];
    p
}

fn token(scopes: &str, patient: &str) -> VerifiedToken {
    let mut claims = serde_json::Map::new();
    if patient != "-" {
        claims.insert("patient".into(), serde_json::Value::String(patient.into()));
    }
    VerifiedToken {
        scheme: fapi_guard_core::scheme::Scheme::Dpop,
        token_sha256: "x".into(),
        iss: "https://issuer.example".into(),
        sub: "user-1".into(),
        client_id: "app".into(),
        exp: 0,
        scopes: scopes.split_whitespace().map(str::to_string).collect(),
        cnf_jkt: None,
        cnf_x5t_s256: None,
        claims,
    }
}

fn body(name: &str) -> Option<Vec<u8>> {
    if name == "-" {
        None
    } else {
        Some(std::fs::read(data("bodies").join(name)).unwrap())
    }
}

fn opt(s: &str) -> Option<&str> {
    (s != "-").then_some(s)
}

#[test]
fn scope_grammar_table() {
    let mut failures = Vec::new();
    for (line, r) in rows("scope_grammar.tsv", 3) {
        let (name, scope, want) = (&r[0], &r[1], &r[2]);
        let got = match parse_scope(scope) {
            ParsedScope::NotSmart => "not-smart".to_string(),
            ParsedScope::Malformed => "malformed".to_string(),
            ParsedScope::Smart(g) => {
                let c: Vec<String> = g
                    .constraint
                    .iter()
                    .map(|p| format!("{}={}", p.name, p.value))
                    .collect();
                format!(
                    "{}/{}.{}{}",
                    g.context.name(),
                    g.resource_type.as_deref().unwrap_or("*"),
                    g.perms.letters(),
                    if c.is_empty() {
                        String::new()
                    } else {
                        format!("?{}", c.join("&"))
                    }
                )
            }
        };
        if &got != want {
            failures.push(format!(
                "line {line} {name}: `{scope}` -> {got}, want {want}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn interaction_table() {
    let p = policy();
    let mut failures = Vec::new();
    for (line, r) in rows("interactions.tsv", 6) {
        let (name, method, target) = (&r[0], &r[1], &r[2]);
        let want = format!("{} {} {}", r[3], r[4], r[5]);
        let got = match classify(&p.base_path, method, target) {
            Err(_) => "refused - -".to_string(),
            Ok(req) => {
                let extra = match (&req.version, &req.compartment_id) {
                    (Some(v), _) => format!("{}@{v}", req.id.clone().unwrap_or_default()),
                    (_, Some(c)) => format!("Patient/{c}"),
                    _ => req.id.clone().unwrap_or("-".into()),
                };
                format!(
                    "{} {} {}",
                    req.label(),
                    req.resource_type.as_deref().unwrap_or("-"),
                    extra
                )
            }
        };
        if got != want {
            failures.push(format!(
                "line {line} {name}: {method} {target} -> `{got}`, want `{want}`"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn decision_code(d: &Decision) -> String {
    match d {
        Decision::Allow => "allow".into(),
        Decision::AllowIfResponseMatches(_) => "check".into(),
        Decision::AllowIfStoredMatches(_) => "stored".into(),
        Decision::AllowIfReadMatches(_) => "head-read".into(),
        Decision::NeedBody => "need-body".into(),
        Decision::Deny(d) => format!("deny:{}", d.reason.code()),
    }
}

/// The Content-Type a client sends: a form for `_search`, FHIR JSON otherwise.
fn content_type_for(target: &str) -> &'static str {
    if target.split('?').next().unwrap_or("").ends_with("/_search") {
        "application/x-www-form-urlencoded"
    } else {
        "application/fhir+json"
    }
}

/// Decides with the body only when asked for it, as the filter does.
fn run(
    p: &FhirPolicy,
    t: &VerifiedToken,
    method: &str,
    target: &str,
    if_none_exist: Option<&str>,
    body: Option<&[u8]>,
) -> Decision {
    let mut view = RequestView {
        method,
        path_with_query: target,
        if_none_exist,
        content_type: Some(content_type_for(target)),
        body: None,
    };
    let first = decide(p, Some(t), &view);
    if first != Decision::NeedBody {
        return first;
    }
    view.body = Some(body.unwrap_or(b""));
    decide(p, Some(t), &view)
}

#[test]
fn scope_decision_table() {
    let p = policy();
    let hidden = policy_hidden();
    let no_patient = policy_user_system();
    let mut failures = Vec::new();
    let mut n = 0;
    for (line, r) in rows("scope_decisions.tsv", 8) {
        let (name, scopes, patient, method, target, hdr, body_name, want) =
            (&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6], &r[7]);
        let t = token(if scopes == "-" { "" } else { scopes }, patient);
        let b = body(body_name);
        let pol = if name.contains("[hidden]") {
            &hidden
        } else if name.contains("[no-patient]") {
            &no_patient
        } else {
            &p
        };
        let d = run(pol, &t, method, target, opt(hdr), b.as_deref());
        let got = decision_code(&d);
        n += 1;
        if &got != want {
            let detail = match &d {
                Decision::Deny(x) => x.detail.clone(),
                _ => String::new(),
            };
            failures.push(format!(
                "line {line} {name}: {method} {target} -> {got} ({detail}), want {want}"
            ));
        }
        // Every scope denial names what would have been enough (RFC 6750 §3).
        if let Decision::Deny(x) = &d {
            if x.reason.code() == "insufficient_scope" && x.required_scope.is_none() {
                failures.push(format!(
                    "line {line} {name}: insufficient_scope without scope"
                ));
            }
            if x.detail.contains("pat-") {
                failures.push(format!("line {line} {name}: detail leaks a patient id"));
            }
        }
    }
    assert!(n >= 100, "only {n} decision rows");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn response_table() {
    let p = policy();
    let hidden = policy_hidden();
    let mut failures = Vec::new();
    for (line, r) in rows("responses.tsv", 9) {
        let (name, scopes, patient, method, target, req_body, status, resp_body, want) = (
            &r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6], &r[7], &r[8],
        );
        let pol = if name.contains("[hidden]") {
            &hidden
        } else {
            &p
        };
        let t = token(scopes, patient);
        let rb = body(req_body);
        let d = run(pol, &t, method, target, None, rb.as_deref());
        let got = match &d {
            // A HEAD: `response_body` is the answer to the GET the filter sends first.
            Decision::AllowIfResponseMatches(check) | Decision::AllowIfReadMatches(check) => {
                let resp = body(resp_body).unwrap_or_default();
                match check_response(pol, check, status.parse().unwrap(), &resp) {
                    Ok(()) => "pass".to_string(),
                    Err(reason) => format!("refuse:{}:{}", reason.code(), reason.status()),
                }
            }
            Decision::AllowIfStoredMatches(check) => {
                let resp = body(resp_body).unwrap_or_default();
                match check_stored(pol, check, status.parse().unwrap(), &resp) {
                    Ok(()) => "pass".to_string(),
                    Err(reason) => format!("refuse:{}:{}", reason.code(), reason.status()),
                }
            }
            other => format!("no-check:{}", decision_code(other)),
        };
        if &got != want {
            failures.push(format!("line {line} {name}: got {got}, want {want}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn response_size_limit() {
    let mut p = policy();
    p.max_response_bytes = 64;
    let t = token("patient/Observation.rs", "pat-anna");
    let d = run(&p, &t, "GET", "/fhir/Observation/obs-anna-hb", None, None);
    let Decision::AllowIfResponseMatches(check) = d else {
        panic!("expected a response check, got {d:?}");
    };
    let resp = body("obs-anna-hb.json").unwrap();
    assert!(resp.len() > 64);
    let r = check_response(&p, &check, 200, &resp);
    assert_eq!(r.map_err(|e| e.code()), Err("response_too_large"));
}

#[test]
fn request_size_limit() {
    let mut p = policy();
    p.max_request_body_bytes = 16;
    let t = token("user/*.cruds", "-");
    let b = body("batch-anna-ok.json").unwrap();
    let d = run(&p, &t, "POST", "/fhir", None, Some(&b));
    assert_eq!(decision_code(&d), "deny:request_too_large");
}

#[test]
fn bundle_denial_names_the_entry() {
    let p = policy();
    let t = token("patient/*.rs", "pat-anna");
    let b = body("batch-anna-one-foreign.json").unwrap();
    let d = run(&p, &t, "POST", "/fhir", None, Some(&b));
    let Decision::Deny(x) = d else {
        panic!("expected a denial, got {d:?}");
    };
    assert_eq!(x.reason.code(), "bundle_entry_forbidden");
    assert!(x.detail.starts_with("entry[2] refused"), "{}", x.detail);
}

#[test]
fn scope_and_scp_claims() {
    let p = policy();
    let mut t = token("", "pat-anna");
    t.claims.insert(
        "scp".into(),
        serde_json::json!(["openid", "patient/Patient.rs"]),
    );
    let d = run(&p, &t, "GET", "/fhir/Patient/pat-anna", None, None);
    assert_eq!(decision_code(&d), "allow");
    let mut t = token("", "pat-anna");
    t.claims.insert(
        "scope".into(),
        serde_json::json!("openid patient/Patient.rs"),
    );
    let d = run(&p, &t, "GET", "/fhir/Patient/pat-anna", None, None);
    assert_eq!(decision_code(&d), "allow");
}

#[test]
fn no_token_only_public() {
    let p = policy();
    for (target, want) in [
        ("/fhir/metadata", "allow"),
        ("/fhir/.well-known/smart-configuration", "allow"),
        ("/fhir/Patient/pat-anna", "deny:no_verified_token"),
    ] {
        let d = decide(
            &p,
            None,
            &RequestView {
                method: "GET",
                path_with_query: target,
                ..Default::default()
            },
        );
        assert_eq!(decision_code(&d), want, "{target}");
    }
}

#[test]
fn conditional_write_reads_its_own_criteria() {
    // Conditional writes (docs/checks.md §3): the stored read of a conditional write is a
    // search with the same query string as sent, so the server resolves the same matches for
    // the read and the write.
    let p = policy();
    let t = token("patient/Observation.d", "pat-anna");
    let d = run(
        &p,
        &t,
        "DELETE",
        "/fhir/Observation?patient=pat-anna&code=http%3A%2F%2Floinc.org%7C718-7",
        None,
        None,
    );
    let Decision::AllowIfStoredMatches(c) = d else {
        panic!("expected a stored check, got {d:?}");
    };
    let search = c.search.expect("a stored search");
    assert_eq!(
        search.query,
        "patient=pat-anna&code=http%3A%2F%2Floinc.org%7C718-7"
    );
    assert_eq!(search.max_matches, None);
    assert_eq!(c.resource.id, None);
    let t = token("patient/Observation.u", "pat-anna");
    let b = body("obs-new-anna.json").unwrap();
    let d = run(
        &p,
        &t,
        "PUT",
        "/fhir/Observation?patient=pat-anna",
        None,
        Some(&b),
    );
    let Decision::AllowIfStoredMatches(c) = d else {
        panic!("expected a stored check, got {d:?}");
    };
    assert_eq!(c.search.map(|s| s.max_matches), Some(Some(1)));
}
