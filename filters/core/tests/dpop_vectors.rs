//! RFC 9449's published examples (the shared `rfc9449-dpop-examples.json`, copied unchanged to
//! `tests/fixtures/`; `FAPI_DPOP_VECTORS=<path>` reads another copy): thumbprint, `ath`, the
//! three published proofs, and the resource-server cases derived from §4.3 / §7, run through
//! the whole DPoP decision ([`evaluate`]).
#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[path = "support/dpop.rs"]
mod support;

use fapi_guard_core::claims::VerifiedToken;
use fapi_guard_core::denial::{Class, Reason};
use fapi_guard_core::dpop::replay::{KeyBudget, MemoryStore};
use fapi_guard_core::dpop::{
    evaluate, htu, ClientCert, DpopRequest, Outcome, ProofRequest, RequestTarget,
};
use fapi_guard_core::jose::{CompactJws, Jwk, SignatureVerifier, SoftwareVerifier};
use serde_json::{json, Value};
use support::sha256_b64;

fn vectors() -> Value {
    let path = std::env::var("FAPI_DPOP_VECTORS").unwrap_or_else(|_| {
        format!(
            "{}/tests/fixtures/rfc9449-dpop-examples.json",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    serde_json::from_slice(&std::fs::read(&path).expect("vectors file")).expect("json")
}

#[test]
fn rfc7638_thumbprint_of_the_rfc_key() {
    let v = vectors();
    let jwk = Jwk::from_json(&v["dpop_public_jwk"]).unwrap();
    assert_eq!(jwk.key.thumbprint_s256(), v["dpop_jkt"].as_str().unwrap());
    // The canonical input, hashed independently.
    assert_eq!(
        sha256_b64(v["jkt_canonical_input"].as_str().unwrap()),
        v["dpop_jkt"].as_str().unwrap()
    );
}

#[test]
fn ath_of_the_rfc_token() {
    let v = vectors();
    assert_eq!(
        sha256_b64(v["access_token"].as_str().unwrap()),
        v["access_token_ath"].as_str().unwrap()
    );
}

#[test]
fn published_proofs_parse_and_verify_and_tampered_ones_do_not() {
    let v = vectors();
    for (name, p) in v["proofs"].as_object().unwrap() {
        let compact = p["compact"].as_str().unwrap();
        let jws = CompactJws::parse(compact).unwrap();
        assert_eq!(Value::Object(jws.header.clone()), p["header"], "{name}");
        assert_eq!(Value::Object(jws.payload.clone()), p["claims"], "{name}");
        let key = Jwk::from_json(&jws.header["jwk"]).unwrap().key;
        assert!(
            SoftwareVerifier
                .verify(jws.alg, &key, jws.signing_input.as_bytes(), &jws.signature)
                .is_ok(),
            "{name}"
        );
        let mut sig = jws.signature.clone();
        sig[10] ^= 1;
        assert!(
            SoftwareVerifier
                .verify(jws.alg, &key, jws.signing_input.as_bytes(), &sig)
                .is_err(),
            "{name} tampered"
        );
    }
}

#[test]
fn rfc_access_token_cnf_jkt_is_the_proof_key_thumbprint() {
    let v = vectors();
    let at =
        CompactJws::parse(v["access_token_jwt_with_cnf"]["compact"].as_str().unwrap()).unwrap();
    assert_eq!(at.payload["cnf"]["jkt"], v["dpop_jkt"]);
}

fn split_url(url: &str) -> (&str, &str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let i = rest.find('/').unwrap_or(rest.len());
    (scheme, &rest[..i], &rest[i..])
}

struct RsCase {
    id: String,
    method: String,
    url: String,
    authorization: String,
    dpop: Option<String>,
    jkt: String,
    now: i64,
}

fn rs_case(c: &Value) -> RsCase {
    RsCase {
        id: c["id"].as_str().unwrap().into(),
        method: c["method"].as_str().unwrap().into(),
        url: c["url"].as_str().unwrap().into(),
        authorization: c["authorization"].as_str().unwrap().into(),
        dpop: c["dpop"].as_str().map(str::to_string),
        jkt: c["bound_jkt"].as_str().unwrap().into(),
        now: c["now"].as_i64().unwrap(),
    }
}

/// Runs one case through the whole decision, as the filters would see it: the token filter
/// has verified the (opaque, in the RFC) token and recorded its scheme, hash and `cnf.jkt`.
fn run(c: &RsCase, store: &MemoryStore) -> Result<Outcome, Reason> {
    let (scheme_name, tok) = c.authorization.split_once(' ').unwrap();
    let token = VerifiedToken {
        scheme: if scheme_name == "DPoP" {
            fapi_guard_core::scheme::Scheme::Dpop
        } else {
            fapi_guard_core::scheme::Scheme::Bearer
        },
        token_sha256: sha256_b64(tok),
        iss: "https://server.example.com".into(),
        sub: "someone@example.com".into(),
        client_id: "c".into(),
        exp: c.now + 300,
        scopes: vec![],
        cnf_jkt: Some(c.jkt.clone()),
        cnf_x5t_s256: None,
        claims: Default::default(),
    };
    let (policy, dpop) = support::policy(json!({}));
    let (scheme, authority, path) = split_url(&c.url);
    let headers: Vec<&str> = c.dpop.iter().map(String::as_str).collect();
    let req = DpopRequest {
        proof: ProofRequest {
            method: &c.method,
            target: RequestTarget {
                scheme,
                authority,
                path,
                ..Default::default()
            },
            dpop_headers: &headers,
        },
        client_cert: ClientCert::default(),
    };
    evaluate(
        &policy,
        &dpop,
        &req,
        Some(&token),
        &SoftwareVerifier,
        store,
        &KeyBudget::new(),
        c.now,
    )
    .map_err(|d| d.reason)
}

#[test]
fn rfc9449_resource_server_cases() {
    let v = vectors();
    let cases: Vec<&Value> = v["rs_cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("sequence").is_none())
        .collect();
    assert!(cases.len() >= 10, "the vector file has the RS cases");
    // The exact reason each derived case must produce (the vector file only says accept/reject).
    let want_reason = |id: &str| match id {
        "htm-mismatch" => Some(Reason::DpopHtmMismatch),
        "htu-mismatch" => Some(Reason::DpopHtuMismatch),
        "ath-mismatch" => Some(Reason::DpopAthMismatch),
        "jkt-mismatch" => Some(Reason::DpopJktMismatch),
        "stale-iat" | "future-iat" => Some(Reason::DpopIatOutOfWindow),
        "token-endpoint-proof-at-rs" => Some(Reason::DpopMissingMember),
        "bearer-downgrade" => Some(Reason::BearerDowngrade),
        "missing-dpop-header" => Some(Reason::DpopMissing),
        _ => None,
    };
    for c in cases {
        let case = rs_case(c);
        let got = run(&case, &MemoryStore::new());
        match c["expect"].as_str().unwrap() {
            "accept" => assert!(
                matches!(got, Ok(Outcome::Accepted { .. })),
                "{}: {got:?}",
                case.id
            ),
            "reject" => {
                let r = got.expect_err(&case.id);
                assert_eq!(Some(r), want_reason(&case.id), "{}", case.id);
                match c.get("error").and_then(Value::as_str) {
                    Some("invalid_dpop_proof") => {
                        assert_eq!(r.class(), Class::InvalidDpopProof, "{}", case.id)
                    }
                    Some("invalid_token") => {
                        assert_eq!(r.class(), Class::InvalidToken, "{}", case.id)
                    }
                    _ => {}
                }
            }
            other => panic!("unknown expectation {other}"),
        }
    }
}

#[test]
fn rfc9449_replay_sequence_is_refused_the_second_time() {
    let v = vectors();
    let cases = v["rs_cases"].as_array().unwrap();
    let seq = cases.iter().find(|c| c.get("sequence").is_some()).unwrap();
    let store = MemoryStore::new();
    let expect = seq["expect"].as_array().unwrap();
    for (step, (id, want)) in seq["sequence"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expect)
        .enumerate()
    {
        let c = cases.iter().find(|c| c["id"] == *id).unwrap();
        let got = run(&rs_case(c), &store);
        match want.as_str().unwrap() {
            "accept" => assert!(got.is_ok(), "step {step}: {got:?}"),
            _ => assert_eq!(got, Err(Reason::DpopReplay), "step {step}"),
        }
    }
}

#[test]
fn rfc_token_request_proofs_have_the_normalised_htu() {
    // The two token-endpoint proofs share one `jti` (RFC 9449 §5 figures); htu normalises.
    let v = vectors();
    for name in ["token_request_fig1", "refresh_request_fig"] {
        let htu_claim = v["proofs"][name]["claims"]["htu"].as_str().unwrap();
        assert_eq!(
            htu::parse_htu(htu_claim).unwrap().to_string(),
            "https://server.example.com/token"
        );
    }
}
