//! Round trips through the real binary; signatures are checked by a small verifier written here
//! directly on the RustCrypto verify APIs from the *public* JWKS members (not via the crate's key
//! loading), and that verifier is itself checked against published RFC JWS vectors first.
#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fapi_guard_issuer::{ath, thumbprint};
use serde_json::{json, Value};
use sha2::Sha256;
use signature::Verifier;
use std::path::{Path, PathBuf};
use std::process::Command;

use rsa::signature;

const BIN: &str = env!("CARGO_BIN_EXE_guard-issuer");

fn vectors(name: &str) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../filters/core/tests/data/vectors");
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("test vectors missing at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("guard-issuer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    let s = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    (o.status.code().unwrap_or(-1), s(&o.stdout), s(&o.stderr))
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "{args:?} failed: {err}");
    out
}

fn b64d(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

fn member(jwk: &Value, name: &str) -> Vec<u8> {
    b64d(jwk[name].as_str().unwrap())
}

/// Independent JWS verifier: returns (header, claims) or an error string.
fn verify(compact: &str, jwk: &Value) -> Result<(Value, Value), String> {
    let parts: Vec<&str> = compact.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return Err("not 3 parts".into());
    };
    let header: Value = serde_json::from_slice(&b64d(h)).map_err(|e| e.to_string())?;
    let input = format!("{h}.{p}");
    let sig = b64d(s);
    let e = |e: signature::Error| e.to_string();
    let rsa_pub = || {
        let n = rsa::BoxedUint::from_be_slice_vartime(&member(jwk, "n"));
        let e = rsa::BoxedUint::from_be_slice_vartime(&member(jwk, "e"));
        rsa::PublicKey::new(n, e).unwrap()
    };
    match header["alg"].as_str().unwrap_or("") {
        "ES256" => {
            let mut sec1 = vec![4u8];
            sec1.extend(member(jwk, "x"));
            sec1.extend(member(jwk, "y"));
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(e)?;
            let sig = p256::ecdsa::Signature::from_slice(&sig).map_err(e)?;
            vk.verify(input.as_bytes(), &sig).map_err(e)?;
        }
        "PS256" => {
            let vk = rsa::pss::VerifyingKey::<Sha256>::new_with_salt_len(rsa_pub(), 32);
            let sig = rsa::pss::Signature::try_from(sig.as_slice()).map_err(e)?;
            vk.verify(input.as_bytes(), &sig).map_err(e)?;
        }
        "RS256" => {
            let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(rsa_pub());
            let sig = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).map_err(e)?;
            vk.verify(input.as_bytes(), &sig).map_err(e)?;
        }
        "EdDSA" => {
            let x: [u8; 32] = member(jwk, "x").try_into().map_err(|_| "x len")?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(e)?;
            let sig = ed25519_dalek::Signature::try_from(sig.as_slice()).map_err(e)?;
            vk.verify(input.as_bytes(), &sig).map_err(e)?;
        }
        other => return Err(format!("unsupported alg {other}")),
    }
    let claims = serde_json::from_slice(&b64d(p)).unwrap_or(Value::Null);
    Ok((header, claims))
}

fn tamper(compact: &str) -> String {
    let (rest, sig) = compact.rsplit_once('.').unwrap();
    let mut raw = b64d(sig);
    raw[0] ^= 1;
    format!("{rest}.{}", URL_SAFE_NO_PAD.encode(raw))
}

#[test]
fn test_verifier_accepts_rfc_vectors_and_rejects_tampered_twins() {
    let v = vectors("jws-rfc-vectors.json");
    let mut checked = 0;
    for case in v["vectors"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        if !["RS256", "ES256", "EdDSA"].contains(&case["alg"].as_str().unwrap()) {
            continue;
        }
        let jwk = &case["public_jwk"];
        assert!(
            verify(case["compact"].as_str().unwrap(), jwk).is_ok(),
            "{id}"
        );
        assert!(
            verify(case["tampered_signature_compact"].as_str().unwrap(), jwk).is_err(),
            "{id}"
        );
        assert_eq!(
            thumbprint(jwk).unwrap(),
            case["jwk_thumbprint_sha256"],
            "{id}"
        );
        checked += 1;
    }
    let d = vectors("rfc9449-dpop-examples.json");
    for (id, proof) in d["proofs"].as_object().unwrap() {
        let (_, claims) =
            verify(proof["compact"].as_str().unwrap(), &d["dpop_public_jwk"]).unwrap();
        assert_eq!(claims, proof["claims"], "{id}");
        checked += 1;
    }
    assert_eq!(
        checked, 7,
        "expected 4 JWS vectors (RS256 x2, ES256, EdDSA) + 3 RFC 9449 proofs"
    );
}

#[test]
fn thumbprints_match_rfc7638_vectors() {
    let v = vectors("rfc7638-thumbprints.json");
    let dir = tmpdir("tp");
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let id = case["id"].as_str().unwrap();
        assert_eq!(
            thumbprint(&case["jwk"]).unwrap(),
            case["sha256_b64url"],
            "{id} (lib)"
        );
        let f = dir.join("k.json");
        std::fs::write(&f, case["jwk"].to_string()).unwrap();
        assert_eq!(
            ok(&["thumbprint", f.to_str().unwrap()]),
            case["sha256_b64url"],
            "{id} (cli)"
        );
    }
    let d = vectors("rfc9449-dpop-examples.json");
    assert_eq!(thumbprint(&d["dpop_public_jwk"]).unwrap(), d["dpop_jkt"]);
}

#[test]
fn ath_matches_rfc9449_example() {
    let d = vectors("rfc9449-dpop-examples.json");
    assert_eq!(
        ath(d["access_token"].as_str().unwrap()),
        d["access_token_ath"]
    );
    assert_ne!(ath("other"), d["access_token_ath"]);
}

#[test]
fn tokens_and_proofs_verify_for_every_alg() {
    let dir = tmpdir("algs");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    // (alg, bits): the 1024-bit RS256 key is the "too small" negative-test key.
    let cases = [
        ("ES256", None),
        ("PS256", None),
        ("EdDSA", None),
        ("RS256", None),
        ("RS256", Some("1024")),
    ];
    for (i, (alg, bits)) in cases.iter().enumerate() {
        let key = p(&format!("k{i}.json"));
        let mut args = vec!["keygen", "--alg", alg, "--kid", "kid-x", "--out", &key];
        if let Some(b) = bits {
            args.extend(["--bits", b]);
        }
        ok(&args);
        let private: Value = serde_json::from_str(&std::fs::read_to_string(&key).unwrap()).unwrap();
        assert_eq!(
            (private["alg"].as_str(), private["use"].as_str()),
            (Some(*alg), Some("sig"))
        );
        assert!(private.get("d").is_some(), "{alg}: private JWK has d");
        let jwks: Value = serde_json::from_str(&ok(&["jwks", &key])).unwrap();
        let public = &jwks["keys"][0];
        for m in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(public.get(m).is_none(), "{alg}: JWKS leaks {m}");
        }
        if let Some(b) = bits {
            assert_eq!(member(public, "n").len() * 8, b.parse::<usize>().unwrap());
        }
        let dpop_key = p("dpop.json");
        ok(&["keygen", "--alg", "ES256", "--out", &dpop_key]);
        let tok = ok(&[
            "token",
            "--key",
            &key,
            "--iss",
            "https://as.example",
            "--aud",
            "https://api.example",
            "--sub",
            "alice",
            "--client-id",
            "c1",
            "--scope",
            "patient/*.rs",
            "--dpop-key",
            &dpop_key,
        ]);
        let (h, c) = verify(&tok, public).unwrap_or_else(|e| panic!("{alg} token: {e}"));
        assert_eq!(h, json!({"typ": "at+jwt", "alg": alg, "kid": "kid-x"}));
        for claim in [
            "iss",
            "exp",
            "aud",
            "sub",
            "client_id",
            "iat",
            "jti",
            "scope",
        ] {
            assert!(c.get(claim).is_some(), "{alg}: missing {claim}");
        }
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
        assert_eq!(c["aud"], "https://api.example");
        assert_eq!(
            c["cnf"]["jkt"].as_str().unwrap(),
            ok(&["thumbprint", &dpop_key])
        );
        assert!(
            verify(&tamper(&tok), public).is_err(),
            "{alg}: tampered token verified"
        );
        // A proof signed by this key (any alg can be a DPoP key).
        let proof = ok(&[
            "dpop",
            "--key",
            &key,
            "--htm",
            "GET",
            "--htu",
            "https://api.example/x",
            "--token",
            &tok,
        ]);
        let hdr: Value = serde_json::from_slice(&b64d(proof.split('.').next().unwrap())).unwrap();
        let (h, c) = verify(&proof, &hdr["jwk"]).unwrap_or_else(|e| panic!("{alg} proof: {e}"));
        assert!(
            verify(&tamper(&proof), &hdr["jwk"]).is_err(),
            "{alg}: tampered proof verified"
        );
        assert_eq!(
            (h["typ"].as_str(), h["alg"].as_str()),
            (Some("dpop+jwt"), Some(*alg))
        );
        assert_eq!(thumbprint(&h["jwk"]).unwrap(), thumbprint(public).unwrap());
        for m in ["d", "p", "q", "kid", "alg", "use"] {
            assert!(h["jwk"].get(m).is_none(), "{alg}: proof jwk has {m}");
        }
        assert_eq!(
            (c["htm"].as_str(), c["htu"].as_str()),
            (Some("GET"), Some("https://api.example/x"))
        );
        assert_eq!(c["ath"].as_str().unwrap(), ath(&tok));
    }
}

#[test]
fn override_flags_shape_bad_tokens_and_proofs() {
    let dir = tmpdir("overrides");
    let key = dir.join("k.json").to_str().unwrap().to_string();
    ok(&["keygen", "--alg", "ES256", "--out", &key]);
    let public = serde_json::from_str::<Value>(&ok(&["jwks", &key])).unwrap()["keys"][0].clone();
    let base = [
        "token",
        "--key",
        &key,
        "--iss",
        "I",
        "--aud",
        "A",
        "--sub",
        "S",
        "--client-id",
        "C",
        "--scope",
        "s",
    ];
    type Check = fn(&Value, &Value) -> bool;
    let cases: &[(&str, &[&str], Check)] = &[
        ("two audiences", &["--aud", "A2"], |_, c| {
            c["aud"] == json!(["A", "A2"])
        }),
        ("omit exp", &["--omit", "exp"], |_, c| {
            c.get("exp").is_none()
        }),
        ("wrong typ", &["--typ", "JWT"], |h, _| h["typ"] == "JWT"),
        ("future iat", &["--iat-offset", "3600"], |_, c| {
            c["iat"].as_i64() > c["exp"].as_i64()
        }),
        ("expired", &["--ttl", "-10"], |_, c| {
            c["exp"].as_i64() < c["iat"].as_i64()
        }),
        ("nbf", &["--nbf-offset", "60"], |_, c| {
            c["nbf"].as_i64() == c["iat"].as_i64().map(|i| i + 60)
        }),
        ("crit header", &["--header", "crit=[\"exp\"]"], |h, _| {
            h["crit"] == json!(["exp"])
        }),
        ("drop kid", &["--header", "kid=null"], |h, _| {
            h.get("kid").is_none()
        }),
        (
            "json claim",
            &["--claim", "patient=\"123\"", "--claim", "n=5"],
            |_, c| c["patient"] == "123" && c["n"] == 5,
        ),
        ("string claim", &["--claim", "iss=https://evil"], |_, c| {
            c["iss"] == "https://evil"
        }),
        ("jkt + x5t", &["--jkt", "T1", "--x5t-s256", "T2"], |_, c| {
            c["cnf"] == json!({"jkt": "T1", "x5t#S256": "T2"})
        }),
    ];
    for (name, extra, check) in cases {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let (h, c) = verify(&ok(&args), &public).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(check(&h, &c), "{name}: header {h} claims {c}");
    }
    let proof = ok(&[
        "dpop",
        "--key",
        &key,
        "--htm",
        "POST",
        "--htu",
        "u",
        "--nonce",
        "n1",
        "--jti",
        "j1",
        "--typ",
        "jwt",
        "--iat-offset",
        "-600",
        "--omit",
        "htu",
        "--header",
        "jwk=null",
    ]);
    let (h, c) = verify(&proof, &public).unwrap();
    assert_eq!((h["typ"].as_str(), h.get("jwk")), (Some("jwt"), None));
    assert_eq!(
        (c["nonce"].as_str(), c["jti"].as_str(), c.get("htu")),
        (Some("n1"), Some("j1"), None)
    );
}

#[test]
fn bad_arguments_exit_2_naming_the_argument() {
    let cases: &[(&[&str], &str)] = &[
        (&["keygen", "--alg", "HS256"], "--alg"),
        (&["keygen"], "--alg"),
        (&["keygen", "--alg", "ES256", "--bits", "1024"], "--bits"),
        (&["keygen", "--alg", "RS256", "--bits", "x"], "--bits"),
        (&["token", "--key", "k.json", "--frob", "1"], "--frob"),
        (&["dpop", "--key"], "--key"),
        (
            &["token", "--key", "missing.json", "--iat-offset", "soon"],
            "--iat-offset",
        ),
        (
            &["token", "--key", "missing.json", "--claim", "novalue"],
            "--claim",
        ),
        (&["token", "--key", "missing.json", "--iss", "I"], "--sub"),
        (&["dpop", "--key", "missing.json", "--htm", "GET"], "--htu"),
        (&["nonsense"], "nonsense"),
    ];
    for (args, named) in cases {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(named), "{args:?}: {err}");
    }
    let (code, out, _) = run(&["--help"]);
    assert!(code == 0 && out.contains("demo-setup"));
}

#[test]
fn demo_setup_is_idempotent() {
    let dir = tmpdir("demo");
    let d = dir.to_str().unwrap();
    ok(&["demo-setup", "--dir", d]);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let first = (
        read("signing-key.json"),
        read("dpop-key.json"),
        read("jwks.json"),
    );
    ok(&["demo-setup", "--dir", d]);
    assert_eq!(
        first,
        (
            read("signing-key.json"),
            read("dpop-key.json"),
            read("jwks.json")
        )
    );
    let jwks: Value = serde_json::from_str(&first.2).unwrap();
    let signing: Value = serde_json::from_str(&first.0).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(
        thumbprint(&jwks["keys"][0]).unwrap(),
        thumbprint(&signing).unwrap()
    );
    assert_eq!(signing["alg"], "ES256");
}
