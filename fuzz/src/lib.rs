//! Fixtures shared by the fuzz targets: one policy (ES256 issuer key, DPoP on, the FHIR
//! policy of the core's table tests), a fixed clock, and input splitting. Each target stays a
//! thin call into a public entry point of `fapi-guard-core`, so it is easy to adapt when
//! those gain parameters.

use std::sync::OnceLock;

use fapi_guard_core::claims::VerifiedToken;
use fapi_guard_core::dpop::DpopPolicy;
use fapi_guard_core::fhir::policy::FhirPolicy;
use fapi_guard_core::jose::{Alg, PublicKey, SignatureVerifier, VerifyError};
use fapi_guard_core::policy::Policy;

/// The fixed clock of every target (seeds are minted for it by `fuzz/make_seeds.py`).
pub const NOW: i64 = 1_800_000_000;
pub const ISS: &str = "https://issuer.test";
pub const AUD: &str = "api-1";
/// Public key of the P-256 private scalar 0x0707..07 (the key of `token_checks.rs`).
pub const ISSUER_X: &str = "HhhTL9R1TALzBB2cdc6zO4P_2BrHzk_ogsyxyYvFiW4";
pub const ISSUER_Y: &str = "pGwxHE4v9A3ZajZT5uRURdMt_khuztdcepDGoYiBwKM";
/// RFC 7638 thumbprint of the P-256 key 0x0909..09, the DPoP key the seeds sign with.
pub const DPOP_JKT: &str = "wn8-axFKnOFEnnaYJBgkGYUyDjm328I-jp-j7aegW-k";

pub fn policy_json() -> String {
    let fhir = include_str!("../../filters/core/tests/data/fhir_policy.json");
    format!(
        r#"{{"api": {{"name": "fuzz", "audience": "{AUD}"}},
            "issuers": [{{"issuer": "{ISS}", "jwks": {{"keys": [{{"kty": "EC", "crv": "P-256",
              "kid": "k1", "alg": "ES256", "x": "{ISSUER_X}", "y": "{ISSUER_Y}"}}]}}}}],
            "token": {{"schemes": ["DPoP", "Bearer"]}},
            "dpop": {{"required": false, "public_origins": ["https://api.test"],
              "replay_cache": {{}}, "mtls": {{"client_cert_source": "xfcc"}}}},
            "fhir": {fhir}}}"#
    )
}

/// The compiled fixture policy.
pub fn policy() -> &'static Policy {
    static P: OnceLock<Option<Policy>> = OnceLock::new();
    match P.get_or_init(|| Policy::from_json(policy_json().as_bytes()).ok()) {
        Some(p) => p,
        None => std::process::abort(),
    }
}

pub fn dpop_policy() -> &'static DpopPolicy {
    match policy().dpop.as_ref() {
        Some(d) => d,
        None => std::process::abort(),
    }
}

pub fn fhir_policy() -> &'static FhirPolicy {
    match policy().fhir.as_ref() {
        Some(f) => f,
        None => std::process::abort(),
    }
}

/// Accepts every signature after the key/alg check, so the fuzzer reaches the claim and
/// proof checks behind the signature.
pub struct AcceptAll;

impl SignatureVerifier for AcceptAll {
    fn verify(&self, alg: Alg, key: &PublicKey, _: &[u8], _: &[u8]) -> Result<(), VerifyError> {
        fapi_guard_core::jose::verify::check_key_for_alg(alg, key)
    }
}

/// A verified token as the token filter hands it over; `selector` picks scheme, binding,
/// scopes and patient context.
pub fn token(selector: u8) -> VerifiedToken {
    let scopes: &[&str] = match selector % 4 {
        0 => &["patient/*.rs"],
        1 => &["user/*.cruds"],
        2 => &["system/Observation.rs", "patient/Patient.r?_id=anna"],
        _ => &[
            "patient/Observation.rs?category=laboratory",
            "patient/Patient.cruds",
        ],
    };
    let mut claims = serde_json::Map::new();
    if selector & 0x10 == 0 {
        claims.insert("patient".into(), "anna".into());
    }
    VerifiedToken {
        scheme: if selector & 0x20 == 0 {
            fapi_guard_core::scheme::Scheme::Dpop
        } else {
            fapi_guard_core::scheme::Scheme::Bearer
        },
        token_sha256: fapi_guard_core::token::token_sha256("fuzz-token"),
        iss: ISS.into(),
        sub: "user-1".into(),
        client_id: "c1".into(),
        exp: NOW + 300,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        cnf_jkt: (selector & 0x40 == 0).then(|| DPOP_JKT.to_string()),
        cnf_x5t_s256: (selector & 0x80 != 0).then(|| "x5t-fuzz".to_string()),
        claims,
    }
}

/// Splits `data` at the first `n - 1` newlines into `n` parts (missing parts are empty).
/// The request decision for the fuzz FHIR policy and `tok` (no `If-None-Exist`; a body is a
/// form, so `_search` bodies are read).
pub fn decide_request(
    tok: &VerifiedToken,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> fapi_guard_core::fhir::Decision {
    fapi_guard_core::fhir::decide(
        fhir_policy(),
        Some(tok),
        &fapi_guard_core::fhir::RequestView {
            method,
            path_with_query: path,
            if_none_exist: None,
            content_type: Some("application/x-www-form-urlencoded"),
            body,
        },
    )
}

pub fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == b'\n').collect();
    while out.len() < n {
        out.push(&[]);
    }
    out
}

/// Lossy text of a part (header values and paths reach the core as `&str`).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    //! The committed seeds reach past the signature: the first token seed validates and the
    //! first proof seed is accepted (else the fuzzer would start from refusals only).
    use super::*;
    use fapi_guard_core::dpop::{self, DpopRequest, ProofRequest, RequestTarget};
    use fapi_guard_core::jose::SoftwareVerifier;
    use fapi_guard_core::jwks_store::KeyRing;
    use fapi_guard_core::shared_store::MemoryStore;
    use fapi_guard_core::token;

    fn seed(target: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/seeds/{target}/seed-000",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn token_seed_validates() {
        let s = seed("token_validate");
        let parts = split(&s, 2);
        let auth = vec![text(parts[0])];
        let presented = token::extract(policy(), &auth, &text(parts[1])).unwrap();
        let ring = KeyRing::new(policy());
        token::validate(policy(), &ring, &SoftwareVerifier, presented, NOW).unwrap();
    }

    #[test]
    fn proof_seed_is_accepted() {
        let s = seed("dpop_evaluate");
        let parts = split(&s[1..], 5);
        let proof = text(parts[3]);
        let req = DpopRequest {
            proof: ProofRequest {
                method: "GET",
                target: RequestTarget {
                    scheme: "https",
                    authority: "api.test",
                    path: "/fhir/Patient/anna",
                    ..Default::default()
                },
                dpop_headers: &[proof.as_str()],
            },
            client_cert: Default::default(),
        };
        let got = dpop::evaluate(
            policy(),
            dpop_policy(),
            &req,
            Some(&token(s[0])),
            &SoftwareVerifier,
            &MemoryStore::new(),
            &fapi_guard_core::dpop::KeyBudget::new(),
            NOW,
        );
        assert!(got.is_ok(), "{got:?}");
    }
}
