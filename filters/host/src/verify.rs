//! `SignatureVerifier` over Envoy's `verify_signature` foreign function, with a pure-Rust
//! fallback. (Interim: software only, until the host path lands.)

use fapi_guard_core::jose::verify::{SignatureVerifier, SoftwareVerifier, VerifyError};
use fapi_guard_core::jose::{Alg, PublicKey};

#[derive(Debug, Default)]
pub struct HostVerifier;

impl HostVerifier {
    pub fn new(_prefer_host: bool) -> Self {
        HostVerifier
    }
}

impl SignatureVerifier for HostVerifier {
    fn verify(&self, alg: Alg, key: &PublicKey, signing_input: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        SoftwareVerifier.verify(alg, key, signing_input, signature)
    }
}
