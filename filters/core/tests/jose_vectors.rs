//! The JOSE layer against every published vector in `tests/data/vectors/` (RFC examples and
//! Wycheproof, copied into the repo with their licence). A missing file fails the tests; it
//! never skips them.
#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::{json, Value};

use fapi_guard_core::b64;
use fapi_guard_core::jose::host_args::{es256_sig_to_der, host_verify_args};
use fapi_guard_core::jose::jws::RawJws;
use fapi_guard_core::jose::{
    Alg, CompactJws, Jwk, Jwks, JwsError, PublicKey, SignatureVerifier, SoftwareVerifier,
    VerifyError,
};

fn vectors_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vectors");
    assert!(
        dir.join("README.md").is_file(),
        "test vectors not found at {}",
        dir.display()
    );
    dir
}

fn load(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() & 1, 0, "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Wycheproof stores keys either as JSON objects or as JSON text.
fn json_or_text(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        other => other.clone(),
    }
}

/// Where a JWS ended up in the guard's pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Verified,
    Parse(JwsError),
    /// No key of the JWKS may verify this JWS (kid/kty/alg/use selection, RFC 8725 §3.10).
    NoKey,
    Verify(VerifyError),
}

/// The token-filter pipeline for one compact JWS: strict parse, key selection, verification.
fn run(jws: &str, jwks: &Jwks) -> Outcome {
    let raw = match RawJws::parse(jws) {
        Ok(r) => r,
        Err(e) => return Outcome::Parse(e),
    };
    let kid = raw.header.get("kid").and_then(Value::as_str);
    let Some(jwk) = jwks.select(kid, raw.alg) else {
        return Outcome::NoKey;
    };
    // The host path must agree on what it would be asked (or decline PS256/EdDSA).
    let host = host_verify_args(
        raw.alg,
        &jwk.key,
        raw.signing_input.as_bytes(),
        &raw.signature,
    );
    match SoftwareVerifier.verify(
        raw.alg,
        &jwk.key,
        raw.signing_input.as_bytes(),
        &raw.signature,
    ) {
        Ok(()) => {
            let host = host.expect("host args for a verified JWS");
            assert_eq!(
                host.is_some(),
                matches!(
                    raw.alg,
                    Alg::ES256 | Alg::ES384 | Alg::ES512 | Alg::RS256 | Alg::RS384 | Alg::RS512
                ),
                "host args presence for {:?}",
                raw.alg
            );
            Outcome::Verified
        }
        Err(e) => Outcome::Verify(e),
    }
}

/// The `alg` a JWS claims, read leniently (only to decide whether a case is in the guard's
/// scope; the guard itself never reads a header this way).
fn claimed_alg(jws: &str) -> Option<String> {
    let lenient = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let first: String = jws
        .split('.')
        .next()?
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let header: Value = serde_json::from_slice(&lenient.decode(first).ok()?).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

fn supported(alg: &str) -> bool {
    Alg::parse(alg).is_some()
}

// ---------------------------------------------------------------------------------------------
// jws-rfc-vectors.json

#[test]
fn jws_rfc_vectors() {
    let doc = load("jws-rfc-vectors.json");
    let vectors = doc["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 6);
    let (mut verified, mut refused_alg) = (0, 0);
    for v in vectors {
        let id = v["id"].as_str().unwrap();
        let alg_name = v["alg"].as_str().unwrap();
        let compact = v["compact"].as_str().unwrap();
        let tampered = v["tampered_signature_compact"].as_str().unwrap();
        assert_eq!(v["expected"], "valid", "{id}");
        assert_eq!(v["tampered_expected"], "invalid", "{id}");

        let Some(alg) = Alg::parse(alg_name) else {
            // An alg the guard does not implement: refused at parse, before any key.
            assert_eq!(
                RawJws::parse(compact).map(|j| j.alg).unwrap_err(),
                JwsError::BadAlg,
                "{id}"
            );
            assert_eq!(
                CompactJws::parse(compact).map(|j| j.alg).unwrap_err(),
                JwsError::BadAlg,
                "{id}"
            );
            assert_eq!(
                RawJws::parse(tampered).unwrap_err(),
                JwsError::BadAlg,
                "{id}"
            );
            refused_alg += 1;
            continue;
        };
        let jwk = Jwk::from_json(&v["public_jwk"]).unwrap();
        assert_eq!(
            jwk.key.thumbprint_s256(),
            v["jwk_thumbprint_sha256"].as_str().unwrap(),
            "{id} thumbprint"
        );
        let jwks = Jwks {
            keys: vec![jwk.clone()],
        };
        assert_eq!(run(compact, &jwks), Outcome::Verified, "{id}");

        let raw = RawJws::parse(compact).unwrap();
        assert_eq!(raw.alg, alg, "{id}");
        if let Some(text) = v.get("payload_utf8").and_then(Value::as_str) {
            assert_eq!(raw.payload, text.as_bytes(), "{id} payload");
            // Not a JWT: the JWT parser refuses a non-object payload.
            assert_eq!(
                CompactJws::parse(compact).unwrap_err(),
                JwsError::Malformed,
                "{id}"
            );
        } else {
            let jwt = CompactJws::parse(compact).unwrap();
            assert_eq!(jwt.payload["iss"], "joe", "{id}");
        }

        // The tampered twin never verifies: refused at parse (non-canonical base64url) or by
        // the signature check.
        match run(tampered, &jwks) {
            Outcome::Parse(JwsError::Malformed) | Outcome::Verify(VerifyError::BadSignature) => {}
            other => panic!("{id} tampered: {other:?}"),
        }
        verified += 1;
    }
    assert_eq!((verified, refused_alg), (6, 0));
}

// ---------------------------------------------------------------------------------------------
// wycheproof/json_web_signature_test.json

#[test]
fn wycheproof_json_web_signature() {
    let doc = load("wycheproof/json_web_signature_test.json");
    // Cases whose outcome is pinned exactly (beyond "refused").
    let pinned: BTreeMap<u64, Outcome> = [
        (16, Outcome::Parse(JwsError::BadAlg)),    // alg none
        (17, Outcome::Parse(JwsError::Malformed)), // JSON serialisation
        // HS256 with the EC key's bytes as HMAC key (RFC 8725 §2.1 alg confusion).
        (31, Outcome::Parse(JwsError::BadAlg)),
        // Header `jwk` is never used to find the key (RFC 8725 §3.10).
        (32, Outcome::Verify(VerifyError::BadSignature)),
        (341, Outcome::Parse(JwsError::BadAlg)),
        (342, Outcome::Parse(JwsError::BadAlg)), // "NONE"
        (343, Outcome::Parse(JwsError::BadAlg)),
        (344, Outcome::Parse(JwsError::BadAlg)),
        // use=enc / key_ops without verify: the key is not eligible (RFC 7517 §4.2, §4.3).
        (353, Outcome::NoKey),
        (354, Outcome::NoKey),
        (355, Outcome::NoKey),
        (356, Outcome::NoKey),
        // PS512 key (alg pinned) with a JWS claiming RS256 / PS256: no eligible key.
        (332, Outcome::NoKey),
        (338, Outcome::NoKey),
        // ES256 signature not 64 octets (DER, extra bytes, 514 bytes): RFC 7518 §3.4.
        (379, Outcome::Verify(VerifyError::BadSignature)),
        (380, Outcome::Verify(VerifyError::BadSignature)),
        (385, Outcome::Verify(VerifyError::BadSignature)),
        // RFC 7520 Figure 20: a PS384 JWS under a JWK that says `"alg":"PS256"`. Wycheproof
        // calls it valid; the key's own `alg` rules it out (RFC 7517 §4.4).
        (346, Outcome::NoKey),
        (350, Outcome::NoKey),
        // RFC 7520 Figure 27: an ES512 JWS under a JWK whose `alg` is `ES521` (a typo in the
        // RFC's key): no algorithm of that name, so the key is not eligible.
        (347, Outcome::NoKey),
        (351, Outcome::NoKey),
    ]
    .into_iter()
    .collect();

    let mut counts: BTreeMap<(&str, bool), usize> = BTreeMap::new();
    let mut seen = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        // Verification uses the group's public key; HMAC groups only have a (secret) private
        // key, which the guard refuses anyway.
        let key = json_or_text(group.get("public").unwrap_or(&group["private"]));
        let jwks = Jwks::parse(json!({ "keys": [key] }).to_string().as_bytes()).unwrap();
        for t in group["tests"].as_array().unwrap() {
            seen += 1;
            let id = t["tcId"].as_u64().unwrap();
            let name = format!("tc {id} {}", t["comment"].as_str().unwrap_or(""));
            let jws = t["jws"].as_str().unwrap();
            let result = t["result"].as_str().unwrap();
            let in_scope = claimed_alg(jws).is_some_and(|a| supported(&a));
            let got = run(jws, &jwks);
            if let Some(want) = pinned.get(&id) {
                assert_eq!(&got, want, "{name}");
            }
            match (result, in_scope) {
                ("valid", true) if pinned.contains_key(&id) => {}
                ("valid", true) => assert_eq!(got, Outcome::Verified, "{name}"),
                // Out of scope: HS* (RFC 8725 §3.1–3.2) and algs the guard does not implement.
                // Wycheproof calls them valid; the guard must refuse them at parse, before any
                // key is looked up.
                ("valid", false) => assert!(
                    matches!(got, Outcome::Parse(JwsError::BadAlg | JwsError::Malformed)),
                    "{name}: {got:?}"
                ),
                ("invalid", _) => assert_ne!(got, Outcome::Verified, "{name}"),
                other => panic!("{name}: unexpected result {other:?}"),
            }
            *counts
                .entry((
                    if result == "valid" {
                        "valid"
                    } else {
                        "invalid"
                    },
                    in_scope,
                ))
                .or_default() += 1;
        }
    }
    assert_eq!(seen, doc["numberOfTests"].as_u64().unwrap() as usize);
    // Guard against a silent misclassification: these are the file's numbers.
    let want: BTreeMap<(&str, bool), usize> = [
        (("valid", true), 36),
        (("valid", false), 10),
        (("invalid", true), 310),
        (("invalid", false), 45),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, want);
}

// ---------------------------------------------------------------------------------------------
// wycheproof/json_web_key_test.json

#[test]
fn wycheproof_json_web_key() {
    let doc = load("wycheproof/json_web_key_test.json");
    let pinned: BTreeMap<u64, Outcome> = [
        (1, Outcome::Parse(JwsError::BadAlg)), // mixed HS256/ES256 keyset, HS256 JWS
        (5, Outcome::Verified),
        (6, Outcome::NoKey), // use=enc
        // ROCA modulus (CVE-2017-15361): the key is refused on parse, so no key is eligible.
        (7, Outcome::NoKey),
        (8, Outcome::Verify(VerifyError::KeyMismatch)), // 1024-bit RSA (FAPI 2.0 §5.4)
        (9, Outcome::NoKey),                            // e = 1
        (19, Outcome::NoKey),                           // key alg ES521 on a P-256 key
        (20, Outcome::NoKey),                           // key alg ES224
        (21, Outcome::NoKey),                           // use=enc
        (22, Outcome::NoKey),                           // point not on the curve
        (23, Outcome::NoKey),                           // crv P-384 (unsupported)
        (24, Outcome::NoKey),                           // kty RSA with EC members
        (25, Outcome::Parse(JwsError::BadAlg)),
        (26, Outcome::Parse(JwsError::BadAlg)),
    ]
    .into_iter()
    .collect();
    let mut seen = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let keyset = json_or_text(group.get("public").unwrap_or(&group["private"]));
        let jwks = Jwks::parse(keyset.to_string().as_bytes()).unwrap();
        for t in group["tests"].as_array().unwrap() {
            seen += 1;
            let id = t["tcId"].as_u64().unwrap();
            let name = format!("tc {id} {}", t["comment"].as_str().unwrap_or(""));
            let jws = t["jws"].as_str().unwrap();
            let got = run(jws, &jwks);
            if let Some(want) = pinned.get(&id) {
                assert_eq!(&got, want, "{name}");
            }
            let in_scope = claimed_alg(jws).is_some_and(|a| supported(&a));
            match (t["result"].as_str().unwrap(), in_scope) {
                ("valid", true) if pinned.contains_key(&id) => {}
                ("valid", true) => assert_eq!(got, Outcome::Verified, "{name}"),
                // HS256/384/512 keysets: out of scope (no HMAC, RFC 8725 §3.2); refused at parse.
                ("valid", false) => assert_eq!(got, Outcome::Parse(JwsError::BadAlg), "{name}"),
                ("invalid", _) => assert_ne!(got, Outcome::Verified, "{name}"),
                other => panic!("{name}: unexpected result {other:?}"),
            }
        }
    }
    assert_eq!(seen, doc["numberOfTests"].as_u64().unwrap() as usize);
}

// ---------------------------------------------------------------------------------------------
// Primitive vectors through SoftwareVerifier

/// Runs one Wycheproof primitive file: `valid` must verify, `invalid` must not. None of these
/// files has `acceptable` cases (asserted), so there is no "either way" outcome to document.
fn primitive_cases(file: &str, alg: Alg, key_of: impl Fn(&Value) -> PublicKey) -> (usize, usize) {
    let doc = load(file);
    let (mut valid, mut invalid) = (0, 0);
    for group in doc["testGroups"].as_array().unwrap() {
        let key = key_of(group);
        for t in group["tests"].as_array().unwrap() {
            let name = format!(
                "{file} tc {} {}",
                t["tcId"],
                t["comment"].as_str().unwrap_or("")
            );
            let msg = hex(t["msg"].as_str().unwrap());
            let sig = hex(t["sig"].as_str().unwrap());
            let got = SoftwareVerifier.verify(alg, &key, &msg, &sig);
            match t["result"].as_str().unwrap() {
                "valid" => {
                    assert_eq!(got, Ok(()), "{name}");
                    valid += 1;
                }
                "invalid" => {
                    assert!(got.is_err(), "{name}: verified");
                    invalid += 1;
                }
                other => panic!("{name}: result {other} not handled"),
            }
        }
    }
    assert_eq!(
        valid + invalid,
        doc["numberOfTests"].as_u64().unwrap() as usize
    );
    (valid, invalid)
}

fn fixed32(hex_str: &str) -> [u8; 32] {
    // Wycheproof writes coordinates as ASN.1-style integers: maybe a 00 in front, maybe short.
    let b = hex(hex_str);
    let b: Vec<u8> = b.iter().copied().skip_while(|x| *x == 0).collect();
    assert!(b.len() <= 32, "coordinate too long: {hex_str}");
    let mut out = [0u8; 32];
    out[32 - b.len()..].copy_from_slice(&b);
    out
}

#[test]
fn wycheproof_ecdsa_p256_p1363() {
    let (valid, invalid) = primitive_cases(
        "wycheproof/ecdsa_secp256r1_sha256_p1363_test.json",
        Alg::ES256,
        |group| {
            let pk = &group["publicKey"];
            let key = PublicKey::EcP256 {
                x: fixed32(pk["wx"].as_str().unwrap()),
                y: fixed32(pk["wy"].as_str().unwrap()),
            };
            // Where the group also gives the JWK, our JWK parser must yield the same key.
            if let Some(jwk) = group.get("publicKeyJwk") {
                assert_eq!(Jwk::from_json(jwk).unwrap().key, key);
            }
            key
        },
    );
    // Includes high-S ("signature malleability") cases, which Wycheproof marks valid and
    // the guard accepts (RFC 7518 §3.4 does not require low-S).
    assert_eq!((valid, invalid), (173, 89));
}

#[test]
fn wycheproof_ecdsa_p1363_to_der_roundtrip() {
    // Every 64-octet signature converts to a DER ECDSA-Sig-Value that decodes back to r, s
    // (checked with a minimal DER reader here, independent of the encoder).
    let doc = load("wycheproof/ecdsa_secp256r1_sha256_p1363_test.json");
    let mut n = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        for t in group["tests"].as_array().unwrap() {
            let sig = hex(t["sig"].as_str().unwrap());
            let Some(der) = es256_sig_to_der(&sig) else {
                assert_ne!(sig.len(), 64);
                continue;
            };
            let (r, s) = read_der_sig(&der);
            assert_eq!(fixed(&r), sig[..32], "tc {}", t["tcId"]);
            assert_eq!(fixed(&s), sig[32..], "tc {}", t["tcId"]);
            n += 1;
        }
    }
    assert!(n > 200, "{n}");
}

fn fixed(int: &[u8]) -> Vec<u8> {
    let stripped: Vec<u8> = int.iter().copied().skip_while(|b| *b == 0).collect();
    let mut out = vec![0u8; 32 - stripped.len()];
    out.extend(stripped);
    out
}

/// Minimal strict DER reader for SEQUENCE { INTEGER, INTEGER } with short lengths.
fn read_der_sig(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(der[0], 0x30);
    assert_eq!(der[1] as usize, der.len() - 2);
    let mut rest = &der[2..];
    let mut ints = Vec::new();
    for _ in 0..2 {
        assert_eq!(rest[0], 0x02);
        let len = rest[1] as usize;
        let v = &rest[2..2 + len];
        assert!(len >= 1);
        // Minimal: no redundant leading 00, and non-negative.
        assert!(v[0] & 0x80 == 0);
        assert!(!(len > 1 && v[0] == 0 && v[1] & 0x80 == 0));
        ints.push(v.to_vec());
        rest = &rest[2 + len..];
    }
    assert!(rest.is_empty());
    (ints[0].clone(), ints[1].clone())
}

#[test]
fn wycheproof_rsa_pss_2048_sha256_mgf1_32() {
    let (valid, invalid) = primitive_cases(
        "wycheproof/rsa_pss_2048_sha256_mgf1_32_test.json",
        Alg::PS256,
        |group| {
            assert_eq!(group["sLen"].as_u64(), Some(32));
            assert_eq!(group["mgfSha"], "SHA-256");
            let jwk = &group["publicKeyJwk"];
            let key = Jwk::from_json(jwk).unwrap().key;
            let modulus = hex(group["publicKey"]["modulus"].as_str().unwrap());
            let modulus: Vec<u8> = modulus.into_iter().skip_while(|b| *b == 0).collect();
            assert!(matches!(&key, PublicKey::Rsa { n, .. } if *n == modulus));
            key
        },
    );
    assert_eq!((valid, invalid), (63, 45));
}

#[test]
fn wycheproof_ed25519() {
    let (valid, invalid) = primitive_cases("wycheproof/ed25519_test.json", Alg::EdDSA, |group| {
        let x: [u8; 32] = hex(group["publicKey"]["pk"].as_str().unwrap())
            .try_into()
            .unwrap();
        let key = PublicKey::Ed25519 { x };
        if let Some(jwk) = group.get("publicKeyJwk") {
            assert_eq!(Jwk::from_json(jwk).unwrap().key, key);
        }
        key
    });
    assert_eq!((valid, invalid), (88, 63));
}

// ---------------------------------------------------------------------------------------------
// rfc7638-thumbprints.json and the RFC 9449 proofs (JOSE level only)

#[test]
fn rfc7638_thumbprints() {
    let doc = load("rfc7638-thumbprints.json");
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for c in cases {
        let id = c["id"].as_str().unwrap();
        let key = Jwk::from_json(&c["jwk"]).unwrap().key;
        if let Some(canonical) = c.get("canonical_json").and_then(Value::as_str) {
            assert_eq!(key.thumbprint_input(), canonical, "{id}");
        }
        assert_eq!(
            key.thumbprint_s256(),
            c["sha256_b64url"].as_str().unwrap(),
            "{id}"
        );
    }
}

#[test]
fn rfc9449_proofs_verify_with_embedded_jwk() {
    let doc = load("rfc9449-dpop-examples.json");
    let jkt = doc["dpop_jkt"].as_str().unwrap();
    let proofs = doc["proofs"].as_object().unwrap();
    assert_eq!(proofs.len(), 3);
    for (name, p) in proofs {
        let jws = CompactJws::parse(p["compact"].as_str().unwrap()).unwrap();
        assert_eq!(jws.header_str("typ"), Some("dpop+jwt"), "{name}");
        let key = Jwk::from_json(&jws.header["jwk"]).unwrap().key;
        assert_eq!(key.thumbprint_s256(), jkt, "{name}");
        assert_eq!(
            SoftwareVerifier.verify(jws.alg, &key, jws.signing_input.as_bytes(), &jws.signature),
            Ok(()),
            "{name}"
        );
        let mut flipped = jws.signature.clone();
        flipped[10] ^= 1;
        assert_eq!(
            SoftwareVerifier.verify(jws.alg, &key, jws.signing_input.as_bytes(), &flipped),
            Err(VerifyError::BadSignature),
            "{name}"
        );
    }
    // Unused import guard: b64 is part of the public surface the DPoP filter uses for `ath`.
    assert_eq!(b64::decode(jkt).map(|d| d.len()), Some(32));
}
