//! Wycheproof primitive vectors for the algorithms beyond FAPI 2.0's PS256/ES256/EdDSA that
//! HelseID uses (RS256 with its 3072-bit key; DPoP proofs in RS384/RS512, PS384/PS512,
//! ES384/ES512): every `valid` case verifies, every `invalid` one does not, through
//! `SoftwareVerifier`; and the host path (`verify_signature`) is asked exactly for ES*/RS*.
//! The files are copies in `tests/data/vectors/wycheproof/` (Apache-2.0, licence beside them).
#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::PathBuf;

use serde_json::Value;

use fapi_guard_core::jose::host_args::host_verify_args;
use fapi_guard_core::jose::{Alg, Jwk, PublicKey, SignatureVerifier, SoftwareVerifier};

fn load(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/vectors/wycheproof")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Wycheproof writes coordinates as ASN.1-style integers: maybe a 00 in front, maybe short.
fn fixed<const N: usize>(hex_str: &str) -> [u8; N] {
    let b: Vec<u8> = hex(hex_str).into_iter().skip_while(|x| *x == 0).collect();
    assert!(b.len() <= N, "coordinate too long: {hex_str}");
    let mut out = [0u8; N];
    out[N - b.len()..].copy_from_slice(&b);
    out
}

/// (valid, invalid, acceptable) counts. `acceptable` cases (PKCS#1 v1.5 with a missing
/// NULL in DigestInfo) must be refused: the guard accepts only the RFC 8017 §9.2 encoding.
fn run(file: &str, alg: Alg, key_of: impl Fn(&Value) -> PublicKey) -> (usize, usize, usize) {
    let doc = load(file);
    let (mut valid, mut invalid, mut acceptable) = (0, 0, 0);
    for group in doc["testGroups"].as_array().unwrap() {
        let key = key_of(group);
        for t in group["tests"].as_array().unwrap() {
            let name = format!("{file} tc {} {}", t["tcId"], t["comment"]);
            let msg = hex(t["msg"].as_str().unwrap());
            let sig = hex(t["sig"].as_str().unwrap());
            let got = SoftwareVerifier.verify(alg, &key, &msg, &sig);
            match t["result"].as_str().unwrap() {
                "valid" => {
                    assert_eq!(got, Ok(()), "{name}");
                    // The host gets the same question (ES*/RS*) or none (PS*).
                    let host = host_verify_args(alg, &key, &msg, &sig).unwrap();
                    assert_eq!(
                        host.is_some(),
                        !alg.is_rsa_pss(),
                        "{name}: host args presence"
                    );
                    valid += 1;
                }
                "invalid" => {
                    assert!(got.is_err(), "{name}: verified");
                    invalid += 1;
                }
                "acceptable" => {
                    assert!(got.is_err(), "{name}: acceptable case verified");
                    acceptable += 1;
                }
                other => panic!("{name}: result {other}"),
            }
        }
    }
    assert_eq!(
        valid + invalid + acceptable,
        doc["numberOfTests"].as_u64().unwrap() as usize
    );
    (valid, invalid, acceptable)
}

fn ec_key(group: &Value, alg: Alg) -> PublicKey {
    let pk = &group["publicKey"];
    let (wx, wy) = (pk["wx"].as_str().unwrap(), pk["wy"].as_str().unwrap());
    let key = match alg {
        Alg::ES384 => PublicKey::EcP384 {
            x: fixed(wx),
            y: fixed(wy),
        },
        Alg::ES512 => PublicKey::EcP521 {
            x: fixed(wx),
            y: fixed(wy),
        },
        _ => unreachable!(),
    };
    // The JWK form of the same key parses to the same key (RFC 7518 §6.2.1).
    if let Some(jwk) = group.get("publicKeyJwk") {
        assert_eq!(Jwk::from_json(jwk).unwrap().key, key);
    }
    key
}

fn rsa_key(group: &Value) -> PublicKey {
    let jwk = group
        .get("publicKeyJwk")
        .or_else(|| group.get("keyJwk"))
        .unwrap();
    let mut jwk = jwk.clone();
    // `keyJwk` of the PKCS#1 files is a private key: keep the public members only.
    let public: serde_json::Map<String, Value> = jwk
        .as_object_mut()
        .unwrap()
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "kty" | "n" | "e" | "kid"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let key = Jwk::from_json(&Value::Object(public)).unwrap().key;
    let modulus: Vec<u8> = hex(group["publicKey"]["modulus"].as_str().unwrap())
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    assert!(matches!(&key, PublicKey::Rsa { n, .. } if *n == modulus));
    key
}

#[test]
fn wycheproof_ecdsa_p384_sha384_es384() {
    let got = run("ecdsa_secp384r1_sha384_p1363_test.json", Alg::ES384, |g| {
        ec_key(g, Alg::ES384)
    });
    assert_eq!(got, (193, 87, 0));
}

#[test]
fn wycheproof_ecdsa_p521_sha512_es512() {
    let got = run("ecdsa_secp521r1_sha512_p1363_test.json", Alg::ES512, |g| {
        ec_key(g, Alg::ES512)
    });
    assert_eq!(got, (231, 87, 0));
}

#[test]
fn wycheproof_rsa_pss_sha384_ps384() {
    let got = run("rsa_pss_2048_sha384_mgf1_48_test.json", Alg::PS384, |g| {
        assert_eq!(g["sLen"].as_u64(), Some(48));
        assert_eq!(g["mgfSha"], "SHA-384");
        rsa_key(g)
    });
    assert_eq!(got, (95, 46, 0));
}

#[test]
fn wycheproof_rsa_pss_4096_sha512_ps512() {
    let got = run("rsa_pss_4096_sha512_mgf1_64_test.json", Alg::PS512, |g| {
        assert_eq!(g["sLen"].as_u64(), Some(64));
        assert_eq!(g["mgfSha"], "SHA-512");
        rsa_key(g)
    });
    assert_eq!(got, (132, 47, 0));
}

#[test]
fn wycheproof_rsa_pkcs1_3072_sha256_rs256() {
    let got = run("rsa_signature_3072_sha256_test.json", Alg::RS256, rsa_key);
    assert_eq!(got, (8, 250, 1));
}

#[test]
fn wycheproof_rsa_pkcs1_3072_sha384_rs384() {
    let got = run("rsa_signature_3072_sha384_test.json", Alg::RS384, rsa_key);
    assert_eq!(got, (7, 251, 1));
}

#[test]
fn wycheproof_rsa_pkcs1_4096_sha512_rs512() {
    let got = run("rsa_signature_4096_sha512_test.json", Alg::RS512, rsa_key);
    assert_eq!(got, (7, 251, 1));
}

/// The rest of the matrix (README table in `tests/data/vectors/`): RS256/384/512 at
/// 2048/3072/4096/8192 bits and PS256/PS384 at the larger sizes. (P-256, PS256-2048 and Ed25519
/// are in `jose_vectors.rs`.) Each `acceptable` case is `MissingNull` and is refused.
#[test]
fn wycheproof_rsa_pkcs1_every_size_and_hash() {
    for (file, alg, want) in [
        (
            "rsa_signature_2048_sha256_test.json",
            Alg::RS256,
            (9, 249, 1),
        ),
        (
            "rsa_signature_4096_sha256_test.json",
            Alg::RS256,
            (7, 250, 1),
        ),
        (
            "rsa_signature_2048_sha384_test.json",
            Alg::RS384,
            (7, 250, 1),
        ),
        (
            "rsa_signature_4096_sha384_test.json",
            Alg::RS384,
            (7, 251, 1),
        ),
        (
            "rsa_signature_2048_sha512_test.json",
            Alg::RS512,
            (8, 250, 1),
        ),
        (
            "rsa_signature_3072_sha512_test.json",
            Alg::RS512,
            (8, 251, 1),
        ),
    ] {
        assert_eq!(run(file, alg, rsa_key), want, "{file}");
    }
}

#[test]
fn wycheproof_rsa_pss_larger_keys() {
    for (file, alg, s_len, mgf, want) in [
        (
            "rsa_pss_3072_sha256_mgf1_32_test.json",
            Alg::PS256,
            32,
            "SHA-256",
            (63, 45, 0),
        ),
        (
            "rsa_pss_4096_sha256_mgf1_32_test.json",
            Alg::PS256,
            32,
            "SHA-256",
            (63, 45, 0),
        ),
        (
            "rsa_pss_4096_sha384_mgf1_48_test.json",
            Alg::PS384,
            48,
            "SHA-384",
            (95, 46, 0),
        ),
    ] {
        let got = run(file, alg, |g| {
            // RFC 7518 §3.5: salt length = hash length, MGF1 with the same hash.
            assert_eq!(g["sLen"].as_u64(), Some(s_len));
            assert_eq!(g["mgfSha"], mgf);
            rsa_key(g)
        });
        assert_eq!(got, want, "{file}");
    }
}

#[test]
fn wrong_curve_or_hash_never_verifies() {
    // A valid ES384 case presented as ES512 / ES256, or under a P-521 key: refused.
    let doc = load("ecdsa_secp384r1_sha384_p1363_test.json");
    let g = &doc["testGroups"][0];
    let key = ec_key(g, Alg::ES384);
    let t = g["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["result"] == "valid")
        .unwrap();
    let (msg, sig) = (
        hex(t["msg"].as_str().unwrap()),
        hex(t["sig"].as_str().unwrap()),
    );
    assert_eq!(
        SoftwareVerifier.verify(Alg::ES384, &key, &msg, &sig),
        Ok(())
    );
    for alg in [Alg::ES256, Alg::ES512, Alg::RS384, Alg::PS384, Alg::EdDSA] {
        assert!(
            SoftwareVerifier.verify(alg, &key, &msg, &sig).is_err(),
            "{alg:?}"
        );
        assert!(host_verify_args(alg, &key, &msg, &sig).is_err(), "{alg:?}");
    }
}
