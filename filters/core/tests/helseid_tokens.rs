//! HelseID's real token shapes, minted by joserfc (`fixtures/make_helseid_fixtures.py`):
//! an RS256 token from an RSA 3072 key whose JWKS entry carries `x5c`/`x5t`/`x5t#S256`; the
//! Duende claim layout with and without `sub`; `scope` as array and string; DPoP proofs in
//! every alg HelseID advertises plus `Ed25519` (RFC 9864).
#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use fapi_guard_core::denial::Reason;
use fapi_guard_core::denial::Scheme;
use fapi_guard_core::dpop::replay::MemoryStore;
use fapi_guard_core::dpop::{
    evaluate, ClientCert, DpopRequest, KeyBudget, ProofRequest, RequestTarget,
};
use fapi_guard_core::jose::{Jwks, SoftwareVerifier};
use fapi_guard_core::jwks_store::KeyRing;
use fapi_guard_core::policy::Policy;
use fapi_guard_core::token::{self, Presented};
use serde_json::{json, Value};

fn fx() -> Value {
    serde_json::from_slice(include_bytes!("fixtures/helseid_joserfc.json")).unwrap()
}

fn policy(token: Value, dpop: Option<Value>) -> Policy {
    let f = fx();
    let mut p = json!({
        "api": {"name": "helseid", "audience": f["audience"], "sole_audience": true},
        "issuers": [{"issuer": f["issuer"], "jwks": f["jwks"]}],
        "token": token,
    });
    if let Some(d) = dpop {
        p["dpop"] = d;
    }
    Policy::from_json(p.to_string().as_bytes()).unwrap()
}

fn validate(p: &Policy, name: &str) -> Result<fapi_guard_core::claims::VerifiedToken, Reason> {
    let f = fx();
    let tok = f["tokens"][name].as_str().unwrap();
    let ring = KeyRing::new(p);
    token::validate(
        p,
        &ring,
        &SoftwareVerifier,
        Presented {
            scheme: Scheme::Dpop,
            token: tok,
        },
        f["iat"].as_i64().unwrap() + 5,
    )
}

const HELSEID: &str = r#"{"allowed_algs": ["RS256"], "require_sub": false}"#;

#[test]
fn jwks_with_x5c_parses_and_keys_are_found_by_kid_only() {
    let f = fx();
    let jwks = Jwks::parse(f["jwks"].to_string().as_bytes()).unwrap();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].key.rsa_bits(), 3072);
    // x5t / x5t#S256 are not key ids: selecting by them finds nothing (RFC 8725 §3.10).
    let x5t = f["jwks"]["keys"][0]["x5t"].as_str().unwrap();
    assert!(jwks
        .select(Some(x5t), fapi_guard_core::jose::Alg::RS256)
        .is_none());
}

#[test]
fn rs256_needs_the_policy_to_allow_it() {
    // FAPI 2.0 §5.4 default (PS256/ES256/EdDSA): HelseID's RS256 token is refused.
    let p = policy(json!({}), None);
    assert_eq!(validate(&p, "user").err(), Some(Reason::AlgNotAllowed));
    let p = policy(serde_json::from_str(HELSEID).unwrap(), None);
    let v = validate(&p, "user").unwrap();
    assert_eq!(
        v.scopes,
        vec![
            "nhn:helseid-sample-api/read",
            "nhn:helseid-sample-api/write",
            "openid"
        ]
    );
    assert!(v.sub.starts_with("y7km"));
}

#[test]
fn client_credentials_without_sub() {
    // RFC 9068 §2.2 strict by default: no `sub` → missing_claim.
    let p = policy(json!({"allowed_algs": ["RS256"]}), None);
    assert_eq!(
        validate(&p, "client_credentials").err(),
        Some(Reason::MissingClaim)
    );
    let p = policy(serde_json::from_str(HELSEID).unwrap(), None);
    let v = validate(&p, "client_credentials").unwrap();
    assert_eq!(v.sub, "");
    assert_eq!(v.client_id, "7f3c2a9e-1b4d-4f6e-9a8b-2c1d0e9f8a7b");
    assert_eq!(
        v.scopes,
        vec![
            "nhn:helseid-sample-api/read",
            "nhn:helseid-sample-api/write"
        ]
    );
}

#[test]
fn scope_array_with_a_non_string_fails_closed() {
    let p = policy(serde_json::from_str(HELSEID).unwrap(), None);
    assert_eq!(
        validate(&p, "scope_not_strings").err(),
        Some(Reason::MissingClaim)
    );
}

#[test]
fn dpop_proofs_in_every_helseid_alg() {
    let f = fx();
    let all = json!([
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "Ed25519"
    ]);
    let p = policy(
        serde_json::from_str(HELSEID).unwrap(),
        Some(json!({"allowed_algs": all})),
    );
    let d = p.dpop.clone().unwrap();
    let fapi_only = policy(serde_json::from_str(HELSEID).unwrap(), Some(json!({})));
    let d_fapi = fapi_only.dpop.clone().unwrap();
    let now = f["iat"].as_i64().unwrap();
    let v = validate(&p, "user").unwrap();
    let htu = f["htu"].as_str().unwrap();
    let path = htu.strip_prefix("https://api.example.org").unwrap();
    for proof in f["proofs"].as_array().unwrap() {
        let alg = proof["alg"].as_str().unwrap();
        let mut tok = v.clone();
        tok.cnf_jkt = Some(proof["jkt"].as_str().unwrap().to_string());
        let compact = proof["compact"].as_str().unwrap();
        let tampered = {
            let (head, sig) = compact.rsplit_once('.').unwrap();
            let mut s = sig.to_string().into_bytes();
            s[5] = if s[5] == b'A' { b'B' } else { b'A' };
            format!("{head}.{}", String::from_utf8(s).unwrap())
        };
        let run = |dpop, proof: &str| {
            let hdrs = [proof];
            let req = DpopRequest {
                proof: ProofRequest {
                    method: "GET",
                    target: RequestTarget {
                        scheme: "https",
                        authority: "api.example.org",
                        path,
                        ..Default::default()
                    },
                    dpop_headers: &hdrs,
                },
                client_cert: ClientCert::default(),
            };
            evaluate(
                &p,
                dpop,
                &req,
                Some(&tok),
                &SoftwareVerifier,
                &MemoryStore::new(),
                &KeyBudget::new(),
                now,
            )
            .map(|_| ())
            .map_err(|e| e.reason)
        };
        assert_eq!(run(&d, compact), Ok(()), "{alg}");
        assert_eq!(
            run(&d, &tampered),
            Err(Reason::DpopBadSignature),
            "{alg} tampered"
        );
        let fapi = matches!(alg, "PS256" | "ES256" | "Ed25519");
        assert_eq!(
            run(&d_fapi, compact).is_ok(),
            fapi,
            "{alg} under the FAPI default"
        );
    }
}
