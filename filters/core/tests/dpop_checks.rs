//! docs/checks.md §2 items 1–16, one named case per check with an allowed twin, on proofs signed
//! in-test (ES256 and EdDSA) and by joserfc (PS256, ES256, EdDSA: `fixtures/dpop_joserfc.json`).
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

use fapi_guard_core::denial::Reason;
use fapi_guard_core::dpop::proof::PROOF_KEY_CACHE_ENTRIES;
use fapi_guard_core::dpop::replay::{KeyBudget, MemoryStore};
use fapi_guard_core::dpop::{
    evaluate, evaluate_cached, nonce, ClientCert, DpopRequest, Outcome, ProofKeyCache,
    ProofRequest, RequestTarget,
};
use fapi_guard_core::jose::SoftwareVerifier;
use serde_json::{json, Value};
use support::*;

/// What to change in a valid proof / request.
enum Mutation {
    None,
    Header(&'static str, Value),
    DropHeader(&'static str),
    Claim(&'static str, Value),
    DropClaim(&'static str),
    /// Sign with the first key but put `jwk` of another key in the header.
    OtherJwk,
    PrivateJwk,
    FlipSignature,
    /// Replace the compact proof by this string.
    Raw(&'static str),
    /// Send the header this many times.
    Repeat(usize),
    NoHeader,
    Method(&'static str),
}

fn build(key: &Key, m: &Mutation) -> (Vec<String>, &'static str) {
    let mut header = key.header();
    let mut claims = claims("jti-1");
    let mut method = "GET";
    let mut flip = false;
    let mut count = 1;
    match m {
        Mutation::None => {}
        Mutation::Header(k, v) => header[*k] = v.clone(),
        Mutation::DropHeader(k) => {
            header.as_object_mut().unwrap().remove(*k);
        }
        Mutation::Claim(k, v) => claims[*k] = v.clone(),
        Mutation::DropClaim(k) => {
            claims.as_object_mut().unwrap().remove(*k);
        }
        Mutation::OtherJwk => {
            header["jwk"] = match key {
                Key::Es(_) => Key::es(99).jwk(),
                Key::Ed(_) => Key::ed(99).jwk(),
            }
        }
        Mutation::PrivateJwk => header["jwk"] = key.private_jwk(),
        Mutation::FlipSignature => flip = true,
        Mutation::Raw(s) => return (vec![s.to_string()], method),
        Mutation::Repeat(n) => count = *n,
        Mutation::NoHeader => count = 0,
        Mutation::Method(x) => method = x,
    }
    let mut proof = key.sign(&header, &claims);
    if flip {
        // Change one signature character (not the last: its low bits may be padding).
        let mut bytes = proof.into_bytes();
        let i = bytes.len() - 5;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        proof = String::from_utf8(bytes).unwrap();
    }
    (vec![proof; count], method)
}

fn run_with(dpop_section: Value, key: &Key, m: &Mutation, now: i64) -> Result<Outcome, Reason> {
    let (policy, dpop) = policy(dpop_section);
    let (headers, method) = build(key, m);
    let hdrs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let tok = token(Some(&key.jkt()));
    let req = DpopRequest {
        proof: ProofRequest {
            method,
            target: target(),
            dpop_headers: &hdrs,
        },
        client_cert: ClientCert::default(),
    };
    let uncached = evaluate(
        &policy,
        &dpop,
        &req,
        Some(&tok),
        &SoftwareVerifier,
        &MemoryStore::new(),
        &KeyBudget::new(),
        now,
    )
    .map_err(|d| d.reason);
    // The worker's proof key cache must not change any answer: warm it with a valid proof of
    // the same key (a header it then knows), then decide the same request again.
    let keys = ProofKeyCache::new(PROOF_KEY_CACHE_ENTRIES);
    let (valid, _) = build(key, &Mutation::None);
    let warm = DpopRequest {
        proof: ProofRequest {
            method: "GET",
            target: target(),
            dpop_headers: &[valid[0].as_str()],
        },
        client_cert: ClientCert::default(),
    };
    let budget = KeyBudget::new();
    let first = evaluate_cached(
        &policy,
        &dpop,
        &warm,
        Some(&tok),
        &SoftwareVerifier,
        &MemoryStore::new(),
        &budget,
        &keys,
        now,
    );
    if first.is_ok() {
        assert_eq!(keys.len(), 1, "a valid proof's header is cached");
    }
    let cached = evaluate_cached(
        &policy,
        &dpop,
        &req,
        Some(&tok),
        &SoftwareVerifier,
        &MemoryStore::new(),
        &KeyBudget::new(),
        &keys,
        now,
    )
    .map_err(|d| d.reason);
    assert_eq!(cached, uncached, "cached and uncached proof checks differ");
    uncached
}

#[test]
fn every_proof_check_has_a_denied_case_and_an_allowed_twin() {
    use Mutation::*;
    let cases: Vec<(&str, Mutation, Option<Reason>)> = vec![
        ("valid proof", None, Option::None),
        // §2.1 exactly one DPoP header, a well-formed JWS
        ("§2.1 no DPoP header", NoHeader, Some(Reason::DpopMissing)),
        (
            "§2.1 two DPoP headers",
            Repeat(2),
            Some(Reason::DpopMultiple),
        ),
        (
            "§2.1 not a JWS",
            Raw("not-a-jws"),
            Some(Reason::DpopMalformed),
        ),
        (
            "§2.1 four parts",
            Raw("a.b.c.d"),
            Some(Reason::DpopMalformed),
        ),
        (
            "§2.1 bad base64url",
            Raw("eyJ0eXAiOiJkcG9wK2p3dCJ9=.e30.AA"),
            Some(Reason::DpopMalformed),
        ),
        (
            "§2.1 crit not understood",
            Header("crit", json!(["exp"])),
            Some(Reason::DpopMalformed),
        ),
        // §2.2 required members
        (
            "§2.2 no typ",
            DropHeader("typ"),
            Some(Reason::DpopMissingMember),
        ),
        (
            "§2.2 no alg",
            DropHeader("alg"),
            Some(Reason::DpopMissingMember),
        ),
        (
            "§2.2 no jwk",
            DropHeader("jwk"),
            Some(Reason::DpopMissingMember),
        ),
        (
            "§2.2 no jti",
            DropClaim("jti"),
            Some(Reason::DpopMissingMember),
        ),
        (
            "§2.2 no htm",
            DropClaim("htm"),
            Some(Reason::DpopMissingMember),
        ),
        (
            "§2.2 no htu",
            DropClaim("htu"),
            Some(Reason::DpopMissingMember),
        ),
        (
            "§2.2 no iat",
            DropClaim("iat"),
            Some(Reason::DpopMissingMember),
        ),
        (
            "§2.2 no ath (required at an RS)",
            DropClaim("ath"),
            Some(Reason::DpopMissingMember),
        ),
        (
            "§2.2 iat not a number",
            Claim("iat", json!("1700000000")),
            Some(Reason::DpopMalformed),
        ),
        (
            "§2.2 jti empty",
            Claim("jti", json!("")),
            Some(Reason::DpopMalformed),
        ),
        // §2.3 typ
        (
            "§2.3 typ JWT",
            Header("typ", json!("JWT")),
            Some(Reason::DpopBadTyp),
        ),
        (
            "§2.3 typ case differs",
            Header("typ", json!("DPoP+JWT")),
            Some(Reason::DpopBadTyp),
        ),
        (
            "§2.3 typ application/dpop+jwt",
            Header("typ", json!("application/dpop+jwt")),
            Some(Reason::DpopBadTyp),
        ),
        // §2.4 alg
        (
            "§2.4 alg none",
            Header("alg", json!("none")),
            Some(Reason::DpopAlgNotAllowed),
        ),
        (
            "§2.4 alg HS256",
            Header("alg", json!("HS256")),
            Some(Reason::DpopAlgNotAllowed),
        ),
        (
            "§2.4 alg RS256 not on the list",
            Header("alg", json!("RS256")),
            Some(Reason::DpopAlgNotAllowed),
        ),
        // §2.5 public key only
        ("§2.5 jwk with d", PrivateJwk, Some(Reason::DpopPrivateKey)),
        (
            "§2.5 jwk oct with k",
            Header("jwk", json!({"kty": "oct", "k": "c2VjcmV0"})),
            Some(Reason::DpopPrivateKey),
        ),
        (
            "§2.5 jwk not an object",
            Header("jwk", json!("x")),
            Some(Reason::DpopBadJwk),
        ),
        (
            "§2.5 jwk unknown kty",
            Header("jwk", json!({"kty": "XYZ"})),
            Some(Reason::DpopBadJwk),
        ),
        // §2.6 signature
        (
            "§2.6 tampered signature",
            FlipSignature,
            Some(Reason::DpopBadSignature),
        ),
        // The token is bound to the signing key, so the binding (compared before the
        // signature, docs/checks.md) already refuses the other `jwk`.
        (
            "§2.6 signed by another key than jwk",
            OtherJwk,
            Some(Reason::DpopJktMismatch),
        ),
        // §2.7 htm
        (
            "§2.7 htm POST for GET",
            Method("POST"),
            Some(Reason::DpopHtmMismatch),
        ),
        (
            "§2.7 htm lower case",
            Claim("htm", json!("get")),
            Some(Reason::DpopHtmMismatch),
        ),
        // §2.8 htu (see dpop_htu.rs for normalisation)
        (
            "§2.8 htu other path",
            Claim("htu", json!("https://rs.example.org/fhir/Patient/124")),
            Some(Reason::DpopHtuMismatch),
        ),
        (
            "§2.8 htu other host",
            Claim("htu", json!("https://evil.example.org/fhir/Patient/123")),
            Some(Reason::DpopHtuMismatch),
        ),
        (
            "§2.8 htu http for https",
            Claim("htu", json!("http://rs.example.org/fhir/Patient/123")),
            Some(Reason::DpopHtuMismatch),
        ),
        (
            "§2.8 htu relative",
            Claim("htu", json!("/fhir/Patient/123")),
            Some(Reason::DpopHtuMismatch),
        ),
        (
            "§2.8 allowed: case, default port, query, fragment",
            Claim(
                "htu",
                json!("HTTPS://RS.Example.org:443/fhir/Patient/%31%323?y=2#f"),
            ),
            Option::None,
        ),
        // §2.9 iat window (default 60 s back, 10 s ahead)
        (
            "§2.9 iat 61 s old",
            Claim("iat", json!(NOW - 61)),
            Some(Reason::DpopIatOutOfWindow),
        ),
        (
            "§2.9 allowed: iat 60 s old",
            Claim("iat", json!(NOW - 60)),
            Option::None,
        ),
        (
            "§2.9 iat 11 s ahead",
            Claim("iat", json!(NOW + 11)),
            Some(Reason::DpopIatOutOfWindow),
        ),
        (
            "§2.9 allowed: iat 10 s ahead",
            Claim("iat", json!(NOW + 10)),
            Option::None,
        ),
        (
            "§2.9 allowed: fractional iat",
            Claim("iat", json!(NOW as f64 + 0.5)),
            Option::None,
        ),
        // §2.11 ath
        (
            "§2.11 ath of another token",
            Claim("ath", json!(sha256_b64("other-token"))),
            Some(Reason::DpopAthMismatch),
        ),
        (
            "§2.11 ath padded",
            Claim("ath", json!(format!("{}=", sha256_b64(TOKEN)))),
            Some(Reason::DpopAthMismatch),
        ),
        // §2.16 unknown members ignored
        (
            "§2.16 unknown header member",
            Header("x-custom", json!({"a": 1})),
            Option::None,
        ),
        (
            "§2.16 unknown claim",
            Claim("x-extra", json!([1, 2])),
            Option::None,
        ),
        (
            "§2.2 jwk null",
            Header("jwk", json!(null)),
            Some(Reason::DpopMissingMember),
        ),
    ];
    for key in [Key::es(7), Key::ed(7)] {
        for (name, m, want) in &cases {
            let got = run_with(json!({}), &key, m, NOW);
            match want {
                Option::None => assert!(
                    matches!(got, Ok(Outcome::Accepted { .. })),
                    "{} {name}: {got:?}",
                    key.alg()
                ),
                Some(r) => assert_eq!(got, Err(*r), "{} {name}", key.alg()),
            }
        }
    }
}

#[test]
fn jwk_extra_members_are_ignored_and_jwk_alg_must_agree() {
    for key in [Key::es(3), Key::ed(3)] {
        let mut jwk = key.jwk();
        jwk["kid"] = json!("k1");
        jwk["use"] = json!("sig");
        jwk["ext"] = json!(true);
        assert!(
            run_with(json!({}), &key, &Mutation::Header("jwk", jwk.clone()), NOW).is_ok(),
            "{}",
            key.alg()
        );
        jwk["alg"] = json!("PS256");
        assert_eq!(
            run_with(json!({}), &key, &Mutation::Header("jwk", jwk), NOW),
            Err(Reason::DpopBadJwk),
            "{}",
            key.alg()
        );
    }
}

#[test]
fn ed25519_spelling_of_eddsa_is_accepted_and_alg_list_is_enforced() {
    let key = Key::ed(5);
    // npm `dpop` writes alg "Ed25519" (docs/checks.md §2.4).
    assert!(run_with(
        json!({}),
        &key,
        &Mutation::Header("alg", json!("Ed25519")),
        NOW
    )
    .is_ok());
    // A policy that allows only ES256 refuses EdDSA in either spelling, and an EC key under EdDSA.
    let es_only = json!({"allowed_algs": ["ES256"]});
    assert_eq!(
        run_with(es_only.clone(), &key, &Mutation::None, NOW),
        Err(Reason::DpopAlgNotAllowed)
    );
    assert_eq!(
        run_with(
            es_only,
            &key,
            &Mutation::Header("alg", json!("Ed25519")),
            NOW
        ),
        Err(Reason::DpopAlgNotAllowed)
    );
    // Algorithm confusion: an EC key with alg EdDSA.
    let ec = Key::es(5);
    assert_eq!(
        run_with(
            json!({}),
            &ec,
            &Mutation::Header("alg", json!("EdDSA")),
            NOW
        ),
        Err(Reason::DpopBadJwk)
    );
}

#[test]
fn jkt_must_match_cnf() {
    // §2.12: a valid proof by a key the token is not bound to.
    let key = Key::es(11);
    let other = Key::es(12);
    let (policy, dpop) = policy(json!({}));
    let proof = key.sign(&key.header(), &claims("j"));
    let hdrs = [proof.as_str()];
    for (name, bound, want) in [
        ("bound to the proof key", key.jkt(), Ok(())),
        (
            "bound to another key",
            other.jkt(),
            Err(Reason::DpopJktMismatch),
        ),
    ] {
        let tok = token(Some(&bound));
        let got = evaluate(
            &policy,
            &dpop,
            &request(&hdrs),
            Some(&tok),
            &SoftwareVerifier,
            &MemoryStore::new(),
            &KeyBudget::new(),
            NOW,
        )
        .map(|_| ())
        .map_err(|d| d.reason);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn replay_of_the_same_proof_is_refused_and_a_new_jti_is_not() {
    // §2.10
    let key = Key::ed(21);
    let (policy, dpop) = policy(json!({}));
    let store = MemoryStore::new();
    let tok = token(Some(&key.jkt()));
    let p1 = key.sign(&key.header(), &claims("same"));
    let p2 = key.sign(&key.header(), &claims("other"));
    let steps = [
        (&p1, NOW, Ok(())),
        (&p1, NOW + 5, Err(Reason::DpopReplay)),
        (&p2, NOW + 5, Ok(())),
    ];
    for (i, (p, now, want)) in steps.iter().enumerate() {
        let hdrs = [p.as_str()];
        let got = evaluate(
            &policy,
            &dpop,
            &request(&hdrs),
            Some(&tok),
            &SoftwareVerifier,
            &store,
            &KeyBudget::new(),
            *now,
        )
        .map(|_| ())
        .map_err(|d| d.reason);
        assert_eq!(got, *want, "step {i}");
    }
}

#[test]
fn token_binding_rules() {
    let key = Key::es(31);
    let proof = key.sign(&key.header(), &claims("t"));
    let hdrs = [proof.as_str()];
    let bearer_bound = {
        let mut t = token(Some(&key.jkt()));
        t.scheme = fapi_guard_core::scheme::Scheme::Bearer;
        t
    };
    let bearer_unbound = {
        let mut t = token(None);
        t.scheme = fapi_guard_core::scheme::Scheme::Bearer;
        t
    };
    let long = format!("/fhir/metadata/{}", "a".repeat(5000));
    let cases = [
        // §2.14: a cnf.jkt token as Bearer
        (
            "bearer downgrade",
            json!({}),
            Some(bearer_bound.clone()),
            "/fhir/Patient/123",
            Err(Reason::BearerDowngrade),
        ),
        (
            "bearer downgrade, dpop not required",
            json!({"required": false}),
            Some(bearer_bound),
            "/fhir/Patient/123",
            Err(Reason::BearerDowngrade),
        ),
        (
            "required: unbound bearer token",
            json!({}),
            Some(bearer_unbound.clone()),
            "/fhir/Patient/123",
            Err(Reason::BearerDowngrade),
        ),
        (
            "not required: unbound bearer token passes",
            json!({"required": false}),
            Some(bearer_unbound),
            "/fhir/Patient/123",
            Ok(false),
        ),
        (
            "DPoP scheme, token without cnf.jkt",
            json!({"required": false}),
            Some(token(None)),
            "/fhir/Patient/123",
            Err(Reason::TokenNotDpopBound),
        ),
        (
            "no verified token on a protected route",
            json!({}),
            None,
            "/fhir/Patient/123",
            Err(Reason::NoVerifiedToken),
        ),
        ("public route", json!({}), None, "/fhir/metadata", Ok(true)),
        // The canonical path first, public routes included (docs/checks.md).
        (
            "dot-segment through a public route",
            json!({}),
            None,
            "/fhir/metadata/../Patient/123",
            Err(Reason::PathNotCanonical),
        ),
        (
            "servlet `..;` through a public route",
            json!({}),
            None,
            "/fhir/metadata/..;/Patient/123",
            Err(Reason::PathNotCanonical),
        ),
        (
            "path over the cap",
            json!({}),
            None,
            long.as_str(),
            Err(Reason::PathTooLong),
        ),
    ];
    for (name, section, tok, path, want) in cases {
        let (policy, dpop) = policy(section);
        let req = DpopRequest {
            proof: ProofRequest {
                method: "GET",
                target: RequestTarget {
                    scheme: "https",
                    authority: "rs.example.org",
                    path,
                    ..Default::default()
                },
                dpop_headers: &hdrs,
            },
            client_cert: ClientCert::default(),
        };
        let got = evaluate(
            &policy,
            &dpop,
            &req,
            tok.as_ref(),
            &SoftwareVerifier,
            &MemoryStore::new(),
            &KeyBudget::new(),
            NOW,
        )
        .map(|o| o == Outcome::Public)
        .map_err(|d| d.reason);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn denials_render_dpop_challenges_with_algs() {
    let key = Key::es(41);
    let (policy, dpop) = policy(json!({}));
    let tok = token(Some(&key.jkt()));
    let mut c = claims("r");
    c["htm"] = json!("POST");
    let proof = key.sign(&key.header(), &c);
    let hdrs = [proof.as_str()];
    let d = evaluate(
        &policy,
        &dpop,
        &request(&hdrs),
        Some(&tok),
        &SoftwareVerifier,
        &MemoryStore::new(),
        &KeyBudget::new(),
        NOW,
    )
    .unwrap_err();
    let reply = d.reply(&policy, &dpop);
    assert_eq!(reply.status, 401);
    let www: Vec<&str> = reply
        .headers
        .iter()
        .filter(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        www,
        vec![r#"DPoP error="invalid_dpop_proof", algs="PS256 ES256 EdDSA""#]
    );
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(
        body["issue"][0]["details"]["coding"][0]["code"],
        "dpop_htm_mismatch"
    );
    assert!(
        !reply.headers.iter().any(|(k, _)| k == "dpop-nonce"),
        "no nonce when nonces are off"
    );
}

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"; // 32 bytes

#[test]
fn nonce_challenge_then_retry() {
    // §2.13 / RFC 9449 §9
    let key = Key::es(51);
    let section = json!({"nonce": {"enabled": true, "secret": SECRET, "window_seconds": 60}});
    let (policy, dpop) = policy(section);
    let cfg = dpop.nonce.clone().unwrap();
    let tok = token(Some(&key.jkt()));
    let store = MemoryStore::new();
    let eval = |proof: &str, now: i64| {
        let hdrs = [proof];
        evaluate(
            &policy,
            &dpop,
            &request(&hdrs),
            Some(&tok),
            &SoftwareVerifier,
            &store,
            &KeyBudget::new(),
            now,
        )
    };

    // 1. No nonce: 401 use_dpop_nonce with a DPoP-Nonce header.
    let d = eval(&key.sign(&key.header(), &claims("n1")), NOW).unwrap_err();
    assert_eq!(d.reason, Reason::DpopNonceRequired);
    let issued = d.nonce.clone().unwrap();
    let reply = d.reply(&policy, &dpop);
    assert_eq!(reply.status, 401);
    assert!(reply
        .headers
        .iter()
        .any(|(k, v)| k == "www-authenticate" && v.starts_with(r#"DPoP error="use_dpop_nonce""#)));
    assert!(reply
        .headers
        .iter()
        .any(|(k, v)| k == "dpop-nonce" && *v == issued));

    // 2. Retry with that nonce: accepted, and a fresh nonce is offered.
    let mut c = claims("n2");
    c["nonce"] = json!(issued);
    match eval(&key.sign(&key.header(), &c), NOW + 1) {
        Ok(Outcome::Accepted { nonce: Some(n), .. }) => assert!(nonce::verify(&cfg, &n, NOW + 1)),
        other => panic!("retry: {other:?}"),
    }

    // 3. Previous window still accepted, two windows later not.
    let cases = [
        ("nonce from previous window", issued.clone(), NOW + 60, true),
        ("nonce two windows old", issued.clone(), NOW + 130, false),
        ("garbage nonce", "abc".to_string(), NOW, false),
        (
            "nonce under another secret",
            nonce::issue(
                &fapi_guard_core::dpop::policy::NonceConfig {
                    secret: vec![9; 32],
                    window_seconds: 60,
                },
                NOW,
            ),
            NOW,
            false,
        ),
    ];
    for (i, (name, n, now, ok)) in cases.into_iter().enumerate() {
        let mut c = claims(&format!("case-{i}"));
        c["nonce"] = json!(n);
        c["iat"] = json!(now);
        let got = eval(&key.sign(&key.header(), &c), now);
        if ok {
            assert!(got.is_ok(), "{name}: {got:?}");
        } else {
            assert_eq!(
                got.map_err(|d| d.reason).err(),
                Some(Reason::DpopNonceRequired),
                "{name}"
            );
        }
    }

    // 4. An invalid proof without a nonce is invalid_dpop_proof, not use_dpop_nonce.
    let mut c = claims("n9");
    c["htm"] = json!("PUT");
    assert_eq!(
        eval(&key.sign(&key.header(), &c), NOW).unwrap_err().reason,
        Reason::DpopHtmMismatch
    );
}

#[test]
fn nonces_off_means_no_nonce_offered_and_nonce_claim_ignored() {
    let key = Key::ed(52);
    let mut c = claims("x");
    c["nonce"] = json!("whatever");
    let (policy, dpop) = policy(json!({"nonce": {"enabled": false, "secret": "short"}}));
    let proof = key.sign(&key.header(), &c);
    let hdrs = [proof.as_str()];
    let tok = token(Some(&key.jkt()));
    let got = evaluate(
        &policy,
        &dpop,
        &request(&hdrs),
        Some(&tok),
        &SoftwareVerifier,
        &MemoryStore::new(),
        &KeyBudget::new(),
        NOW,
    );
    assert_eq!(
        got,
        Ok(Outcome::Accepted {
            nonce: None,
            claim: None
        })
    );
}

type MtlsCase<'a> = (
    &'a str,
    Value,
    Option<&'a str>,
    Option<&'a str>,
    Result<(), Reason>,
);

#[test]
fn mtls_bound_tokens() {
    // RFC 8705 §3: cnf.x5t#S256 vs the certificate digest the proxy saw.
    let cert_der = b"not really DER, only hashed";
    let digest = <sha2::Sha256 as sha2::Digest>::digest(cert_der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let x5t = b64(&digest);
    let other_hex = "00".repeat(32);
    let xfcc_ok =
        format!("By=spiffe://cluster.local/ns/a/sa/b;Hash={hex};Subject=\"CN=client, O=x\";URI=");
    let xfcc_other = format!("Hash={other_hex},By=x;Hash={hex}");
    // A token bound only by certificate (no DPoP), DPoP not required.
    let mut tok = token(None);
    tok.scheme = fapi_guard_core::scheme::Scheme::Bearer;
    tok.cnf_x5t_s256 = Some(x5t.clone());
    let connection = json!({"required": false});
    let xfcc = json!({"required": false, "mtls": {"client_cert_source": "xfcc"}});
    let upper = hex.to_uppercase();
    let cases: Vec<MtlsCase> = vec![
        (
            "connection cert matches",
            connection.clone(),
            Some(&hex),
            None,
            Ok(()),
        ),
        (
            "connection cert upper-case hex",
            connection.clone(),
            Some(&upper),
            None,
            Ok(()),
        ),
        (
            "connection cert differs",
            connection.clone(),
            Some(&other_hex),
            None,
            Err(Reason::MtlsThumbprintMismatch),
        ),
        (
            "no connection cert",
            connection.clone(),
            None,
            None,
            Err(Reason::MtlsCertMissing),
        ),
        (
            "connection source ignores XFCC",
            connection.clone(),
            None,
            Some(&xfcc_ok),
            Err(Reason::MtlsCertMissing),
        ),
        (
            "XFCC matches (opt-in)",
            xfcc.clone(),
            None,
            Some(&xfcc_ok),
            Ok(()),
        ),
        (
            "XFCC first element differs",
            xfcc.clone(),
            Some(&hex),
            Some(&xfcc_other),
            Err(Reason::MtlsThumbprintMismatch),
        ),
        (
            "XFCC source ignores the connection",
            xfcc.clone(),
            Some(&hex),
            None,
            Err(Reason::MtlsCertMissing),
        ),
        (
            "XFCC without Hash",
            xfcc,
            None,
            Some("By=x;URI=y"),
            Err(Reason::MtlsCertMissing),
        ),
    ];
    for (name, section, conn, xf, want) in cases {
        let (policy, dpop) = policy(section);
        let req = DpopRequest {
            proof: ProofRequest {
                method: "GET",
                target: target(),
                dpop_headers: &[],
            },
            client_cert: ClientCert {
                connection_sha256_hex: conn,
                xfcc: xf,
            },
        };
        let got = evaluate(
            &policy,
            &dpop,
            &req,
            Some(&tok),
            &SoftwareVerifier,
            &MemoryStore::new(),
            &KeyBudget::new(),
            NOW,
        )
        .map(|_| ())
        .map_err(|d| d.reason);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn mtls_and_dpop_together_both_checked() {
    let key = Key::es(61);
    let digest = <sha2::Sha256 as sha2::Digest>::digest(b"cert");
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut tok = token(Some(&key.jkt()));
    tok.cnf_x5t_s256 = Some(b64(&digest));
    let (policy, dpop) = policy(json!({}));
    let proof = key.sign(&key.header(), &claims("m"));
    for (name, hdrs, conn, want) in [
        (
            "both fine",
            vec![proof.as_str()],
            Some(hex.as_str()),
            Ok(()),
        ),
        (
            "proof fine, no cert",
            vec![proof.as_str()],
            None,
            Err(Reason::MtlsCertMissing),
        ),
        (
            "cert fine, no proof",
            vec![],
            Some(hex.as_str()),
            Err(Reason::DpopMissing),
        ),
    ] {
        let req = DpopRequest {
            proof: ProofRequest {
                method: "GET",
                target: target(),
                dpop_headers: &hdrs,
            },
            client_cert: ClientCert {
                connection_sha256_hex: conn,
                xfcc: None,
            },
        };
        let got = evaluate(
            &policy,
            &dpop,
            &req,
            Some(&tok),
            &SoftwareVerifier,
            &MemoryStore::new(),
            &KeyBudget::new(),
            NOW,
        )
        .map(|_| ())
        .map_err(|d| d.reason);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn proofs_signed_by_joserfc_for_each_fapi_alg() {
    let fx: Value = serde_json::from_slice(include_bytes!("fixtures/dpop_joserfc.json")).unwrap();
    let (policy, dpop) = policy(json!({}));
    let now = fx["iat"].as_i64().unwrap();
    let proofs = fx["proofs"].as_array().unwrap();
    let algs: Vec<&str> = proofs.iter().map(|p| p["alg"].as_str().unwrap()).collect();
    assert_eq!(algs, vec!["PS256", "ES256", "EdDSA"]);
    for p in proofs {
        let alg = p["alg"].as_str().unwrap();
        let mut tok = token(Some(p["jkt"].as_str().unwrap()));
        tok.token_sha256 = sha256_b64(fx["access_token"].as_str().unwrap());
        assert_eq!(tok.token_sha256, fx["ath"].as_str().unwrap());
        let compact = p["compact"].as_str().unwrap();
        let tampered = {
            let (head, sig) = compact.rsplit_once('.').unwrap();
            let mut s = sig.to_string().into_bytes();
            s[3] = if s[3] == b'A' { b'B' } else { b'A' };
            format!("{head}.{}", String::from_utf8(s).unwrap())
        };
        let run = |proof: &str, path: &'static str| {
            let hdrs = [proof];
            let req = DpopRequest {
                proof: ProofRequest {
                    method: "GET",
                    target: RequestTarget {
                        scheme: "https",
                        authority: "rs.example.org",
                        path,
                        ..Default::default()
                    },
                    dpop_headers: &hdrs,
                },
                client_cert: ClientCert::default(),
            };
            evaluate(
                &policy,
                &dpop,
                &req,
                Some(&tok),
                &SoftwareVerifier,
                &MemoryStore::new(),
                &KeyBudget::new(),
                now,
            )
            .map(|_| ())
            .map_err(|d| d.reason)
        };
        assert_eq!(run(compact, "/fhir/Patient/123"), Ok(()), "{alg}");
        assert_eq!(
            run(&tampered, "/fhir/Patient/123"),
            Err(Reason::DpopBadSignature),
            "{alg} tampered"
        );
        assert_eq!(
            run(compact, "/fhir/Patient/124"),
            Err(Reason::DpopHtuMismatch),
            "{alg} other path"
        );
    }
}

/// A verifier that counts calls and accepts everything: a check that runs after it could
/// not refuse anything it lets through, and the count shows whether it was reached.
#[derive(Default)]
struct CountingVerifier(std::cell::Cell<usize>);

impl fapi_guard_core::jose::SignatureVerifier for CountingVerifier {
    fn verify(
        &self,
        _alg: fapi_guard_core::jose::Alg,
        _key: &fapi_guard_core::jose::PublicKey,
        _input: &[u8],
        _signature: &[u8],
    ) -> Result<(), fapi_guard_core::jose::VerifyError> {
        self.0.set(self.0.get() + 1);
        Ok(())
    }
}

/// An RSA public JWK with a `bits`-bit odd modulus (pseudo-random bytes) and exponent `e`.
fn rsa_jwk(bits: usize, e: &[u8]) -> Value {
    let mut n = Vec::with_capacity(bits / 8);
    let mut block = [7u8; 32];
    while n.len() < bits / 8 {
        block = <sha2::Sha256 as sha2::Digest>::digest(block).into();
        n.extend_from_slice(&block);
    }
    n.truncate(bits / 8);
    n[0] |= 0x80;
    let last = n.len() - 1;
    n[last] |= 1;
    json!({"kty": "RSA", "n": b64(&n), "e": b64(e)})
}

fn rsa_proof(jwk: &Value, claims: &Value) -> String {
    let header = json!({"typ": "dpop+jwt", "alg": "PS256", "jwk": jwk});
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(&[0x5a; 512])
    )
}

fn jkt_of(jwk: &Value) -> String {
    fapi_guard_core::jose::Jwk::from_json(jwk)
        .unwrap()
        .key
        .thumbprint_s256()
}

#[test]
fn cheap_checks_and_proof_key_caps_run_before_the_signature() {
    // Cheap checks first (RFC 9449 §4.3): binding, htm, htu, iat, ath and the proof key caps
    // (RSA <= 4096 bits,
    // e < 2^32) are decided before any signature verification (docs/checks.md).
    let (policy, dpop) = policy(json!({}));
    let huge_e = [0x01, 0xff, 0xff, 0xff, 0xff]; // 2^33 - 1: odd, the JOSE layer's own bound
    let rsa8192 = rsa_jwk(8192, &huge_e);
    let rsa4096 = rsa_jwk(4096, &[1, 0, 1]);
    let rsa4096_big_e = rsa_jwk(4096, &[0x01, 0, 0, 0, 0x01]); // 2^32 + 1
    let rsa4097 = rsa_jwk(4104, &[1, 0, 1]);
    let es = Key::es(41);
    let es_proof = |c: Value| es.sign(&es.header(), &c);
    let with = |k: &str, v: Value| {
        let mut c = claims("cheap");
        c[k] = v;
        c
    };
    // (name, proof, the token's cnf.jkt, decision, signature verifications)
    type Case<'a> = (&'a str, String, String, Result<(), Reason>, usize);
    let cases: Vec<Case> = vec![
        (
            "RSA-8192, huge e, token bound to another key: the binding is reported first",
            rsa_proof(&rsa8192, &claims("a")),
            es.jkt(),
            Err(Reason::DpopJktMismatch),
            0,
        ),
        (
            "RSA-8192, huge e, token bound to it: refused by the size cap",
            rsa_proof(&rsa8192, &claims("b")),
            jkt_of(&rsa8192),
            Err(Reason::DpopBadJwk),
            0,
        ),
        (
            "RSA-4096, e = 2^32 + 1: refused by the exponent cap",
            rsa_proof(&rsa4096_big_e, &claims("c")),
            jkt_of(&rsa4096_big_e),
            Err(Reason::DpopBadJwk),
            0,
        ),
        (
            "RSA-4104: over 4096 bits",
            rsa_proof(&rsa4097, &claims("d")),
            jkt_of(&rsa4097),
            Err(Reason::DpopBadJwk),
            0,
        ),
        (
            "RSA-4096, e = 65537: within the caps, the signature is checked",
            rsa_proof(&rsa4096, &claims("e")),
            jkt_of(&rsa4096),
            Ok(()),
            1,
        ),
        (
            "htm mismatch",
            es_proof(with("htm", json!("POST"))),
            es.jkt(),
            Err(Reason::DpopHtmMismatch),
            0,
        ),
        (
            "htu mismatch",
            es_proof(with("htu", json!("https://rs.example.org/fhir/Patient/9"))),
            es.jkt(),
            Err(Reason::DpopHtuMismatch),
            0,
        ),
        (
            "iat outside the window",
            es_proof(with("iat", json!(NOW - 3600))),
            es.jkt(),
            Err(Reason::DpopIatOutOfWindow),
            0,
        ),
        (
            "ath mismatch",
            es_proof(with("ath", json!(sha256_b64("other-token")))),
            es.jkt(),
            Err(Reason::DpopAthMismatch),
            0,
        ),
        (
            "all cheap checks pass: the signature is checked",
            es_proof(claims("f")),
            es.jkt(),
            Ok(()),
            1,
        ),
    ];
    for (name, proof, bound, want, verifications) in cases {
        let verifier = CountingVerifier::default();
        let hdrs = [proof.as_str()];
        let tok = token(Some(&bound));
        let got = evaluate(
            &policy,
            &dpop,
            &request(&hdrs),
            Some(&tok),
            &verifier,
            &MemoryStore::new(),
            &KeyBudget::new(),
            NOW,
        )
        .map(|_| ())
        .map_err(|d| d.reason);
        assert_eq!(got, want, "{name}");
        assert_eq!(verifier.0.get(), verifications, "{name}: verifications");
    }
}

#[test]
fn a_key_over_its_replay_budget_gets_429_and_other_keys_do_not() {
    // Fairness: 7 live proofs per key over the 7 buckets of the window = 1 per bucket.
    let (policy, dpop) = policy(json!({"replay_cache": {"max_live_proofs_per_key": 7}}));
    let store = MemoryStore::new();
    let budget = KeyBudget::new();
    let (flooder, other) = (Key::es(51), Key::ed(52));
    let run = |key: &Key, jti: &str| {
        let proof = key.sign(&key.header(), &claims(jti));
        let hdrs = [proof.as_str()];
        let tok = token(Some(&key.jkt()));
        evaluate(
            &policy,
            &dpop,
            &request(&hdrs),
            Some(&tok),
            &SoftwareVerifier,
            &store,
            &budget,
            NOW,
        )
    };
    assert!(run(&flooder, "f1").is_ok());
    let denial = run(&flooder, "f2").unwrap_err();
    assert_eq!(denial.reason, Reason::DpopKeyOverBudget);
    let reply = denial.reply(&policy, &dpop);
    assert_eq!(reply.status, 429);
    let retry: Vec<_> = reply
        .headers
        .iter()
        .filter(|(k, _)| k == "retry-after")
        .collect();
    assert_eq!(retry.len(), 1);
    let secs: u32 = retry[0].1.parse().unwrap();
    assert!((1..=10).contains(&secs), "{secs}");
    assert!(!reply.headers.iter().any(|(k, _)| k == "www-authenticate"));
    // Another client is unaffected; the refused proof was not recorded, the accepted one was.
    assert!(run(&other, "o1").is_ok());
    assert!(run(&other, "o2").is_err(), "the other key has a budget too");
    assert_eq!(
        run(&flooder, "f1").unwrap_err().reason,
        Reason::DpopKeyOverBudget
    );
}
