//! The partition step (`fapi_guard:partition`; docs/dpop.md, "Replay across replicas"),
//! driven through the pipeline as the Wasm driver does: its routing key is the replica's
//! `(jkt, jti)` (the same for a proof's ECDSA `n − s` twin and a re-encoded `jwk`, another for
//! another `jti` or key), an incoming key is always removed, and nothing is ever refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/dpop.rs"]
mod support;

use fapi_guard_core::dpop::proof::{check_proof, Binding, ProofRequest};
use fapi_guard_core::engine::{
    partition_key, Action, ChainSteps, Count, Env, Exchange, Level, Output, Pipeline, StepName,
    Worker, PARTITION_HEADER,
};
use fapi_guard_core::jose::{SignatureVerifier, SoftwareVerifier};
use fapi_guard_core::policy::Policy;
use fapi_guard_core::shared_store::MemoryStore;
use serde_json::{json, Value};
use support::{b64, claims, policy, policy_json, sha256_b64, target, Key, NOW, TOKEN};

/// P-256 group order n (SEC 2 §2.4.2), big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The same ES256 proof with `s` replaced by `n − s`: another valid signature, other bytes.
fn twin(proof: &str) -> String {
    let (input, sig) = proof.rsplit_once('.').unwrap();
    let mut raw = base64_decode(sig);
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(P256_N[i]) - i16::from(raw[32 + i]) - borrow;
        raw[32 + i] = d.rem_euclid(256) as u8;
        borrow = i16::from(d < 0);
    }
    let out = format!("{input}.{}", b64(&raw));
    assert_ne!(out, proof);
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

struct TestEnv {
    store: MemoryStore,
}

impl Env for TestEnv {
    type Store = MemoryStore;
    fn now(&self) -> i64 {
        NOW
    }
    fn verifier(&self) -> &dyn SignatureVerifier {
        &SoftwareVerifier
    }
    fn store(&self) -> &MemoryStore {
        &self.store
    }
    fn count(&self, step: StepName, count: Count) {
        panic!("the partition step counts nothing: {step:?} {count:?}")
    }
    fn log(&self, _: Level, _: &str) {}
}

struct Headers(Vec<(String, String)>);

impl Exchange for Headers {
    fn request_header(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        self.0.clone()
    }
    fn request_body(&self, _: usize) -> Vec<u8> {
        Vec::new()
    }
    fn response_header(&self, _: &str) -> Option<String> {
        None
    }
    fn response_body(&self, _: usize) -> Vec<u8> {
        Vec::new()
    }
    fn peer_certificate_sha256(&self) -> Option<String> {
        None
    }
}

fn worker() -> Worker {
    // A policy like every plugin's; a non-canonical path or a protected route changes nothing.
    let p = Policy::from_json(policy_json(json!({}), None).to_string().as_bytes()).unwrap();
    Worker::new(p, ChainSteps::PARTITION).unwrap()
}

/// The request headers through the partition step (it counts nothing: `TestEnv::count`).
fn run(path: &str, extra: &[(&str, &str)]) -> Output {
    let w = worker();
    let env = TestEnv {
        store: MemoryStore::default(),
    };
    let mut headers = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), path.to_string()),
        ("authorization".to_string(), format!("DPoP {TOKEN}")),
    ];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut p = Pipeline::new();
    let out = p.on_request_headers(&w, &env, &Headers(headers), true);
    assert_eq!(
        out.action,
        Action::Continue,
        "the partition step never refuses"
    );
    assert!(out.response_headers.is_empty());
    assert!(
        p.end_audit(&w, NOW).is_none(),
        "no audit record at the layer"
    );
    out
}

/// The routing key the step sets, after checking the incoming one was removed first.
fn key_of(extra: &[(&str, &str)]) -> Option<String> {
    let out = run("/fhir/Patient/123", extra);
    assert_eq!(
        out.request_headers.first(),
        Some(&(PARTITION_HEADER, None)),
        "an incoming key is always removed first"
    );
    let set: Vec<&String> = out
        .request_headers
        .iter()
        .skip(1)
        .map(|(name, v)| {
            assert_eq!(*name, PARTITION_HEADER);
            v.as_ref().expect("a key set, not removed")
        })
        .collect();
    assert!(set.len() <= 1, "{set:?}");
    let key = set.first().map(|s| s.to_string());
    key
}

fn proof(key: &Key, header: &Value, jti: &str) -> String {
    key.sign(header, &claims(jti))
}

/// What the replica keys its replay cache on for `proof` (it must accept it).
fn replica_key(key: &Key, proof: &str) -> String {
    let (_, dpop) = policy(json!({"public_origins": ["https://rs.example.org"]}));
    let headers = [proof];
    let req = ProofRequest {
        method: "GET",
        target: target(),
        dpop_headers: &headers,
    };
    let ath = sha256_b64(TOKEN);
    let jkt = key.jkt();
    let binding = Binding {
        ath: &ath,
        jkt: &jkt,
    };
    let checked = check_proof(&dpop, &req, binding, &SoftwareVerifier, NOW).unwrap();
    partition_key(&checked.jkt, &checked.jti)
}

#[test]
fn the_key_is_the_replicas_pair_for_a_twin_and_a_reencoded_jwk() {
    let k = Key::es(7);
    let p = proof(&k, &k.header(), "jti-1");
    let key = key_of(&[("dpop", &p)]).expect("a key for a proof");
    assert_eq!(key.len(), 64);
    assert!(key
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(key, replica_key(&k, &p));

    // The ECDSA twin (r, n − s): other bytes, a valid proof, the same key.
    let t = twin(&p);
    assert_eq!(replica_key(&k, &t), key);
    assert_eq!(key_of(&[("dpop", &t)]).as_deref(), Some(key.as_str()));

    // The same key re-encoded: members in another order and extra members.
    let jwk = k.jwk();
    let reencoded = json!({"y": jwk["y"], "use": "sig", "x": jwk["x"], "kid": "k1",
        "crv": "P-256", "alg": "ES256", "kty": "EC"});
    let h = json!({"jwk": reencoded, "alg": "ES256", "typ": "dpop+jwt"});
    let r = proof(&k, &h, "jti-1");
    assert_ne!(r, p);
    assert_eq!(replica_key(&k, &r), key);
    assert_eq!(key_of(&[("DPoP", &r)]).as_deref(), Some(key.as_str()));
    // Whitespace around the value, as the replica trims it.
    let padded = format!("  {p} ");
    assert_eq!(key_of(&[("dpop", &padded)]).as_deref(), Some(key.as_str()));

    // Another jti, another key (ES256 or EdDSA): another routing key.
    let other_jti = proof(&k, &k.header(), "jti-2");
    let ed = Key::ed(3);
    let other_key = proof(&ed, &ed.header(), "jti-1");
    let es = Key::es(8);
    let other_es = proof(&es, &es.header(), "jti-1");
    let keys = [
        key_of(&[("dpop", &other_jti)]),
        key_of(&[("dpop", &other_key)]),
        key_of(&[("dpop", &other_es)]),
    ];
    for (got, (k2, p2)) in keys
        .iter()
        .zip([(&k, &other_jti), (&ed, &other_key), (&es, &other_es)])
    {
        let got = got.as_ref().unwrap();
        assert_ne!(got, &key);
        assert_eq!(got, &replica_key(k2, p2));
    }
    assert_ne!(keys[0], keys[1]);
}

#[test]
fn the_pair_is_length_prefixed() {
    // A separator-free concatenation would give these one input.
    assert_ne!(partition_key("ab", "c"), partition_key("a", "bc"));
    assert_ne!(partition_key("", "abc"), partition_key("abc", ""));
}

#[test]
fn an_incoming_key_is_removed_and_never_kept() {
    let k = Key::es(7);
    let p = proof(&k, &k.header(), "jti-1");
    let honest = key_of(&[("dpop", &p)]).unwrap();
    let forged = "0".repeat(64);
    // With a proof: replaced by the proof's own key.
    assert_eq!(
        key_of(&[(PARTITION_HEADER, &forged), ("dpop", &p)]).as_deref(),
        Some(honest.as_str())
    );
    assert_eq!(
        key_of(&[
            ("X-Fapi-Guard-Partition", &forged),
            ("x-fapi-guard-partition", "1"),
            ("dpop", &p)
        ])
        .as_deref(),
        Some(honest.as_str())
    );
    // Without one: removed, nothing set.
    assert_eq!(key_of(&[(PARTITION_HEADER, &forged)]), None);
}

#[test]
fn no_key_for_zero_two_or_unparseable_proofs_and_never_a_refusal() {
    let k = Key::es(7);
    let p = proof(&k, &k.header(), "jti-1");
    let p2 = proof(&k, &k.header(), "jti-2");
    let no_jti = k.sign(
        &k.header(),
        &json!({"htm": "GET", "htu": "https://rs.example.org/fhir/Patient/123", "iat": NOW}),
    );
    let empty_jti = proof(&k, &k.header(), "");
    let no_jwk = k.sign(
        &json!({"typ": "dpop+jwt", "alg": "ES256"}),
        &claims("jti-1"),
    );
    let bad_jwk = k.sign(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}}), &claims("jti-1"));
    let hmac = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"HS256","typ":"dpop+jwt"}"#),
        b64(claims("jti-1").to_string().as_bytes()),
        b64(b"sig")
    );
    let two_parts = p.rsplit_once('.').unwrap().0.to_string();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no DPoP header", vec![]),
        ("two DPoP headers", vec![("dpop", &p), ("dpop", &p2)]),
        ("the same proof twice", vec![("dpop", &p), ("DPoP", &p)]),
        ("empty", vec![("dpop", "")]),
        ("not a JWS", vec![("dpop", "not-a-proof")]),
        ("two parts", vec![("dpop", &two_parts)]),
        ("no jti", vec![("dpop", &no_jti)]),
        ("empty jti", vec![("dpop", &empty_jti)]),
        ("no jwk", vec![("dpop", &no_jwk)]),
        ("a jwk off the curve", vec![("dpop", &bad_jwk)]),
        ("HMAC", vec![("dpop", &hmac)]),
    ];
    for (name, headers) in cases {
        assert_eq!(key_of(&headers), None, "{name}");
    }
    // A path the chain would refuse (non-canonical) is not refused here either.
    let out = run("/fhir/../Patient/1", &[("dpop", &p)]);
    assert_eq!(out.request_headers.len(), 2);
}

/// The routing key of one request through `w` (the worker's header cache kept across calls).
fn key_with(w: &Worker, dpop: &str) -> Option<String> {
    let env = TestEnv {
        store: MemoryStore::default(),
    };
    let headers = Headers(vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), "/fhir/Patient/123".to_string()),
        ("dpop".to_string(), dpop.to_string()),
    ]);
    let out = Pipeline::new().on_request_headers(w, &env, &headers, true);
    out.request_headers.get(1).and_then(|(_, v)| v.clone())
}

#[test]
fn a_cached_header_gives_the_key_a_full_parse_gives() {
    // The first proof of a client parses its header; the next ones (same header text) take
    // its thumbprint from the worker's cache, and must get exactly what a fresh worker gives.
    let w = worker();
    let k = Key::es(11);
    let first = proof(&k, &k.header(), "jti-a");
    assert_eq!(key_with(&w, &first), Some(replica_key(&k, &first)));
    for jti in ["jti-b", "jti-c"] {
        let next = proof(&k, &k.header(), jti);
        assert_eq!(key_with(&w, &next), Some(replica_key(&k, &next)), "{jti}");
        assert_eq!(key_with(&w, &twin(&next)), key_with(&worker(), &next));
    }
    // The same header with a payload or signature a full parse refuses: no key, cached or not.
    let (head, _) = first.split_once('.').unwrap();
    let dup = b64(br#"{"jti":"a","jti":"b","htm":"GET"}"#);
    let sig = first.rsplit_once('.').unwrap().1;
    for bad in [
        format!("{head}.{dup}.{sig}"),
        format!("{head}.{}.", b64(claims("jti-d").to_string().as_bytes())),
        format!(
            "{head}.{}.{sig}.x",
            b64(claims("jti-e").to_string().as_bytes())
        ),
    ] {
        assert_eq!(key_with(&w, &bad), None, "{bad}");
        assert_eq!(key_with(&worker(), &bad), None, "{bad}");
    }
}
