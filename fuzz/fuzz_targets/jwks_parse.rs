//! JWKS documents (RFC 7517 §5) as fetched from an issuer: parse, key selection, thumbprints.
#![no_main]
use fapi_guard_core::jose::{Alg, Jwks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(jwks) = Jwks::parse(data) {
        for alg in [Alg::ES256, Alg::PS256, Alg::EdDSA] {
            if let Some(k) = jwks.select(None, alg) {
                let _ = k.key.thumbprint_s256();
            }
            let _ = jwks.select(Some("k1"), alg);
        }
    }
    // The same bytes as a JWKS cached in shared data, as the filters read it back.
    if let Some((_, body)) = fapi_guard_core::jwks_store::decode_shared(data) {
        let _ = Jwks::parse(body);
    }
});
