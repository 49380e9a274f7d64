//! Test support for the DPoP tests: keys that sign proofs in-test (ES256 with `p256`, EdDSA
//! with `ed25519-dalek`), an RFC 7638 thumbprint computed here independently of the crate,
//! and builders for policies, tokens and requests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fapi_guard_core::claims::VerifiedToken;
use fapi_guard_core::dpop::{ClientCert, DpopPolicy, DpopRequest, ProofRequest, RequestTarget};
use fapi_guard_core::policy::Policy;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

pub fn sha256_b64(s: &str) -> String {
    b64(&Sha256::digest(s.as_bytes()))
}

pub enum Key {
    Es(p256::ecdsa::SigningKey),
    Ed(ed25519_dalek::SigningKey),
}

impl Key {
    pub fn es(seed: u8) -> Key {
        let mut b = [seed; 32];
        b[0] = 1;
        Key::Es(p256::ecdsa::SigningKey::from_slice(&b).unwrap())
    }
    pub fn ed(seed: u8) -> Key {
        Key::Ed(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }
    pub fn alg(&self) -> &'static str {
        match self {
            Key::Es(_) => "ES256",
            Key::Ed(_) => "EdDSA",
        }
    }
    /// The public JWK, members in the usual order.
    pub fn jwk(&self) -> Value {
        match self {
            Key::Es(k) => {
                let p = k.verifying_key().to_sec1_bytes();
                json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])})
            }
            Key::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.verifying_key().as_bytes())})
            }
        }
    }
    /// The private JWK (for the "private key in header" case).
    pub fn private_jwk(&self) -> Value {
        let mut j = self.jwk();
        let d = match self {
            Key::Es(k) => b64(&k.to_bytes()),
            Key::Ed(k) => b64(k.as_bytes()),
        };
        j["d"] = json!(d);
        j
    }
    /// RFC 7638 §3: SHA-256 over the required members in lexicographic order, no spaces.
    pub fn jkt(&self) -> String {
        let j = self.jwk();
        let canon = match self {
            Key::Es(_) => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                j["x"].as_str().unwrap(),
                j["y"].as_str().unwrap()
            ),
            Key::Ed(_) => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                j["x"].as_str().unwrap()
            ),
        };
        sha256_b64(&canon)
    }
    pub fn sign_raw(&self, input: &[u8]) -> Vec<u8> {
        match self {
            Key::Es(k) => {
                use p256::ecdsa::signature::Signer;
                let s: p256::ecdsa::Signature = k.sign(input);
                s.to_bytes().to_vec()
            }
            Key::Ed(k) => {
                use ed25519_dalek::Signer;
                k.sign(input).to_bytes().to_vec()
            }
        }
    }
    /// A compact JWS over `header` and `claims` (JSON as given).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.sign_raw(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }
    /// The standard proof header for this key.
    pub fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk()})
    }
}

pub const NOW: i64 = 1_700_000_000;
pub const TOKEN: &str = "test-access-token.abc";
pub const HTU: &str = "https://rs.example.org/fhir/Patient/123";

/// Claims of a proof that passes for [`request`] at [`NOW`].
pub fn claims(jti: &str) -> Value {
    json!({"jti": jti, "htm": "GET", "htu": HTU, "iat": NOW, "ath": sha256_b64(TOKEN)})
}

/// A policy document with the given `dpop` section (and optional `token` section).
pub fn policy_json(dpop: Value, token: Option<Value>) -> Value {
    let mut p = json!({
        "api": {"name": "dpop-test", "audience": "api"},
        "issuers": [{"issuer": "https://issuer.test", "jwks": {"keys": [
            {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}}],
        "routes": [{"path_prefix": "/fhir/metadata", "methods": ["GET"], "require": "none"}],
        "dpop": dpop,
    });
    if let Some(t) = token {
        p["token"] = t;
    }
    p
}

pub fn policy(dpop: Value) -> (Policy, DpopPolicy) {
    let p = Policy::from_json(policy_json(dpop, None).to_string().as_bytes()).unwrap();
    let d = p.dpop.clone().unwrap();
    (p, d)
}

/// A verified DPoP-scheme token bound to `jkt`.
pub fn token(jkt: Option<&str>) -> VerifiedToken {
    VerifiedToken {
        scheme: fapi_guard_core::scheme::Scheme::Dpop,
        token_sha256: sha256_b64(TOKEN),
        iss: "https://issuer.test".into(),
        sub: "user-1".into(),
        client_id: "client-1".into(),
        exp: NOW + 300,
        scopes: vec!["patient/*.rs".into()],
        cnf_jkt: jkt.map(str::to_string),
        cnf_x5t_s256: None,
        claims: serde_json::Map::new(),
    }
}

/// `GET https://rs.example.org/fhir/Patient/123?x=1` as the proxy sees it.
pub fn target() -> RequestTarget<'static> {
    RequestTarget {
        scheme: "https",
        authority: "rs.example.org",
        path: "/fhir/Patient/123?x=1",
        ..Default::default()
    }
}

pub fn request<'a>(headers: &'a [&'a str]) -> DpopRequest<'a> {
    DpopRequest {
        proof: ProofRequest {
            method: "GET",
            target: target(),
            dpop_headers: headers,
        },
        client_cert: ClientCert::default(),
    }
}
