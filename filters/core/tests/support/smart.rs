//! A verified SMART token for the FHIR decision tests: DPoP-bound, the `patient` claim set,
//! the given scopes.

use fapi_guard_core::claims::VerifiedToken;

pub fn patient_token<'a>(
    scopes: impl IntoIterator<Item = &'a str>,
    patient: &str,
) -> VerifiedToken {
    let mut claims = serde_json::Map::new();
    claims.insert("patient".into(), patient.into());
    VerifiedToken {
        scheme: fapi_guard_core::scheme::Scheme::Dpop,
        token_sha256: "x".into(),
        iss: "https://issuer.example".into(),
        sub: "user-1".into(),
        client_id: "app".into(),
        exp: 0,
        scopes: scopes.into_iter().map(str::to_string).collect(),
        cnf_jkt: None,
        cnf_x5t_s256: None,
        claims,
    }
}
