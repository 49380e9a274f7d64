//! The chain explainer (`explain.rs`, used by `fapi-guard explain` and the web page): the
//! trace for an allowed request and for refusals of each filter, the answer the proxy would
//! give, safe `diagnostics` facts, and bad input that must not panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/dpop.rs"]
mod support;

use fapi_guard_core::explain::{explain_json, Options, Outcome, Request, Trace};
use serde_json::{json, Value};
use support::*;

const ISS: &str = "https://issuer.test";
const AUD: &str = "explain-api";
const AUTHORITY: &str = "rs.example.org";

fn signer() -> Key {
    Key::es(7)
}

fn policy() -> Value {
    let mut jwk = signer().jwk();
    jwk["kid"] = json!("k1");
    json!({
        "api": {"name": "explain", "audience": AUD},
        "issuers": [{"issuer": ISS, "jwks": {"keys": [jwk]}}],
        "routes": [{"path_prefix": "/r4/metadata", "methods": ["GET"], "require": "none"}],
        "fhir": {"base_path": "/r4", "resource_types": ["Patient", "Observation"]}
    })
}

fn access_token(over: Value, kid: &str) -> (String, Key) {
    let dpop_key = Key::es(9);
    let mut c = json!({"iss": ISS, "sub": "u1", "aud": AUD, "client_id": "app", "jti": "t1",
        "iat": NOW - 10, "exp": NOW + 300, "scope": "patient/*.rs", "patient": "pat-anna",
        "cnf": {"jkt": dpop_key.jkt()}});
    for (k, v) in over.as_object().unwrap() {
        c[k] = v.clone();
    }
    let h = json!({"typ": "at+jwt", "alg": "ES256", "kid": kid});
    (signer().sign(&h, &c), dpop_key)
}

fn proof(key: &Key, method: &str, htu: &str, token: &str) -> String {
    key.sign(
        &key.header(),
        &json!({"jti": "p1", "htm": method, "htu": htu, "iat": NOW, "ath": sha256_b64(token)}),
    )
}

fn run(
    method: &str,
    path: &str,
    headers: Vec<(String, String)>,
    response: Option<(u32, &[u8])>,
) -> Trace {
    let req = Request {
        method,
        path,
        scheme: "https",
        authority: AUTHORITY,
        headers: &headers,
        body: None,
    };
    let opts = Options {
        now: NOW,
        response,
        ..Default::default()
    };
    explain_json(policy().to_string().as_bytes(), &req, &opts).unwrap()
}

fn with_token(method: &str, path: &str, token: &str, key: &Key, htu: Option<&str>) -> Trace {
    let htu = htu.map(str::to_string).unwrap_or(format!(
        "https://{AUTHORITY}{}",
        path.split('?').next().unwrap()
    ));
    let headers = vec![
        ("Authorization".to_string(), format!("DPoP {token}")),
        ("DPoP".to_string(), proof(key, method, &htu, token)),
    ];
    run(method, path, headers, None)
}

fn diagnostics(t: &Trace) -> String {
    let body: Value = serde_json::from_str(t.answer.body.as_deref().unwrap()).unwrap();
    body["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .to_string()
}

fn failed(t: &Trace) -> Vec<(&'static str, &'static str)> {
    t.steps
        .iter()
        .filter(|s| s.outcome == Outcome::Fail)
        .map(|s| (s.filter, s.reason.unwrap_or("")))
        .collect()
}

#[test]
fn allowed_request_passes_every_check_in_order() {
    let (tok, key) = access_token(json!({}), "k1");
    let t = with_token("GET", "/r4/Patient/pat-anna", &tok, &key, None);
    assert!(t.answer.forwarded, "{:?}", t.answer);
    assert!(failed(&t).is_empty());
    let filters: Vec<&str> = t.steps.iter().map(|s| s.filter).collect();
    let first = |f| filters.iter().position(|x| *x == f).unwrap();
    assert!(first("token") < first("dpop") && first("dpop") < first("fhir_scope"));
    assert!(t.decoded.iter().all(|d| d.verified));
}

#[test]
fn public_route_skips_every_filter() {
    let t = run("GET", "/r4/metadata", vec![], None);
    assert!(t.answer.forwarded);
    assert_eq!(t.route, "public");
}

#[test]
fn no_token_is_the_bare_challenge() {
    let t = run("GET", "/r4/Patient/pat-anna", vec![], None);
    assert_eq!(t.answer.status, Some(401));
    assert_eq!(t.answer.reason, Some("missing_token"));
    let www: Vec<&str> = t
        .answer
        .headers
        .iter()
        .filter(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(www, vec!["DPoP algs=\"PS256 ES256 EdDSA\""]);
}

#[test]
fn expired_token_says_exp_against_the_clock_and_never_the_token() {
    let (tok, key) = access_token(json!({"exp": NOW - 100}), "k1");
    let t = with_token("GET", "/r4/Patient/pat-anna", &tok, &key, None);
    assert_eq!(t.answer.status, Some(401));
    assert_eq!(failed(&t), vec![("token", "expired")]);
    let d = diagnostics(&t);
    assert!(
        d.contains(&format!("exp {}", NOW - 100)) && d.contains(&format!("proxy clock {NOW}")),
        "{d}"
    );
    let body = t.answer.body.unwrap();
    assert!(!body.contains(&tok) && !body.contains("pat-anna"), "{body}");
    assert!(t.decoded.iter().all(|d| !d.verified));
}

#[test]
fn unknown_kid_is_named() {
    let (tok, key) = access_token(json!({}), "rotated-2");
    let t = with_token("GET", "/r4/Patient/pat-anna", &tok, &key, None);
    assert_eq!(failed(&t), vec![("token", "unknown_key")]);
    assert!(
        diagnostics(&t).contains("kid `rotated-2`"),
        "{}",
        diagnostics(&t)
    );
}

#[test]
fn wrong_htu_names_the_expected_one() {
    let (tok, key) = access_token(json!({}), "k1");
    let t = with_token(
        "GET",
        "/r4/Patient/pat-anna?x=1",
        &tok,
        &key,
        Some("https://elsewhere.example/r4/Patient/pat-anna"),
    );
    assert_eq!(t.answer.status, Some(401));
    assert_eq!(failed(&t), vec![("dpop", "dpop_htu_mismatch")]);
    assert!(
        diagnostics(&t).contains("expected htu `https://rs.example.org/r4/Patient/pat-anna`"),
        "{}",
        diagnostics(&t)
    );
    let www = &t
        .answer
        .headers
        .iter()
        .find(|(k, _)| k == "www-authenticate")
        .unwrap()
        .1;
    assert!(www.contains("invalid_dpop_proof"), "{www}");
}

#[test]
fn other_patient_and_missing_scope_are_fhir_refusals() {
    let (tok, key) = access_token(json!({}), "k1");
    let t = with_token("GET", "/r4/Patient/pat-bjorn", &tok, &key, None);
    assert_eq!(t.answer.status, Some(403));
    assert_eq!(failed(&t), vec![("fhir_scope", "compartment_escape")]);

    let (tok, key) = access_token(json!({"scope": "patient/Observation.rs"}), "k1");
    let t = with_token("GET", "/r4/Patient/pat-anna", &tok, &key, None);
    assert_eq!(t.answer.reason, Some("insufficient_scope"));
    let www = &t
        .answer
        .headers
        .iter()
        .find(|(k, _)| k == "www-authenticate")
        .unwrap()
        .1;
    assert!(www.contains("scope=\""), "{www}");
}

#[test]
fn response_body_decides_reads_by_id() {
    let (tok, key) = access_token(json!({}), "k1");
    let htu = format!("https://{AUTHORITY}/r4/Observation/o1");
    let headers = vec![
        ("Authorization".to_string(), format!("DPoP {tok}")),
        ("DPoP".to_string(), proof(&key, "GET", &htu, &tok)),
    ];
    let pending = run("GET", "/r4/Observation/o1", headers.clone(), None);
    assert!(pending.steps.iter().any(|s| s.outcome == Outcome::Pending));
    let foreign = json!({"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/pat-bjorn"}}).to_string();
    let t = run(
        "GET",
        "/r4/Observation/o1",
        headers.clone(),
        Some((200, foreign.as_bytes())),
    );
    assert_eq!(t.answer.status, Some(403));
    assert_eq!(failed(&t), vec![("fhir_scope", "response_outside_grant")]);
    let own = json!({"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/pat-anna"}}).to_string();
    let t = run(
        "GET",
        "/r4/Observation/o1",
        headers,
        Some((200, own.as_bytes())),
    );
    assert!(
        t.answer.forwarded && t.answer.status == Some(200),
        "{:?}",
        t.answer
    );
}

#[test]
fn bad_input_gets_a_message_not_a_panic() {
    let req = Request {
        method: "GET",
        path: "/r4/Patient/x",
        ..Default::default()
    };
    let opts = Options {
        now: NOW,
        ..Default::default()
    };
    let e = explain_json(
        br#"{"api":{"name":"a","audience":"b"},"issuers":[],"x":1}"#,
        &req,
        &opts,
    )
    .unwrap_err();
    assert!(e.contains("policy field `x`"), "{e}");
    assert!(explain_json(b"not json", &req, &opts).is_err());
    let huge = vec![b' '; fapi_guard_core::explain::MAX_INPUT_BYTES + 1];
    assert!(explain_json(&huge, &req, &opts)
        .unwrap_err()
        .contains("refused unread"));
    for garbage in [
        "DPoP ",
        "DPoP a.b.c",
        "DPoP ????",
        "DPoP eyJ.eyJ.x",
        "Basic abc",
        "DPoP x, DPoP y",
    ] {
        let t = run(
            "GET",
            "/r4/Patient/pat-anna",
            vec![("authorization".into(), garbage.into())],
            None,
        );
        assert_eq!(
            t.answer.status,
            Some(if garbage.contains(',') { 400 } else { 401 }),
            "{garbage}: {:?}",
            t.answer
        );
    }
    let (tok, _) = access_token(json!({}), "k1");
    let t = run(
        "GET",
        "/r4/Patient/pat-anna",
        vec![
            ("authorization".into(), format!("DPoP {tok}")),
            ("dpop".into(), "garbage".into()),
        ],
        None,
    );
    assert_eq!(t.answer.reason, Some("dpop_malformed"));
}

/// docs/checks.md §4 `unmatched: deny`: a path no rule lists is refused 403 `route_not_listed`
/// before the token is read (no challenge); listed and public routes are unchanged; in shadow
/// mode the refusal is a dry run.
#[test]
fn unmatched_deny_refuses_unlisted_paths_before_the_token() {
    let explain = |p: Value, method: &str, path: &str| {
        let req = Request {
            method,
            path,
            scheme: "https",
            authority: AUTHORITY,
            headers: &[],
            body: None,
        };
        let opts = Options {
            now: NOW,
            ..Default::default()
        };
        explain_json(p.to_string().as_bytes(), &req, &opts).unwrap()
    };
    let mut p = policy();
    p["unmatched"] = json!("deny");
    p["routes"] = json!([
        {"path_prefix": "/r4/metadata", "methods": ["GET"], "require": "none"},
        {"path_prefix": "/r4/Patient", "methods": ["GET"], "require": "token"}
    ]);
    let t = explain(p.clone(), "GET", "/r4/admin");
    assert_eq!(t.answer.status, Some(403));
    assert_eq!(t.answer.reason, Some("route_not_listed"));
    assert!(!t.answer.forwarded);
    assert!(
        !t.answer
            .headers
            .iter()
            .any(|(k, _)| k == "www-authenticate"),
        "{:?}",
        t.answer.headers
    );
    // A listed method and path still needs (only) a token; the method counts too.
    assert_eq!(
        explain(p.clone(), "GET", "/r4/Patient/1").answer.reason,
        Some("missing_token")
    );
    assert_eq!(
        explain(p.clone(), "DELETE", "/r4/Patient/1").answer.reason,
        Some("route_not_listed")
    );
    assert!(explain(p.clone(), "GET", "/r4/metadata").answer.forwarded);
    // Default (`token_only`, as before): the unlisted path needs a token.
    assert_eq!(
        explain(policy(), "GET", "/r4/admin").answer.reason,
        Some("missing_token")
    );
    // Shadow: decided, not enforced.
    p["mode"] = json!("shadow");
    assert!(explain(p, "GET", "/r4/admin").answer.forwarded);
}
