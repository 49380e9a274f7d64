//! `SignatureVerifier` over Envoy's `verify_signature` foreign function, with a pure-Rust
//! fallback.
//!
//! ES256 and RS256 go to the host (BoringSSL at native speed, `SIGNATURE-SPEED.md`); PS256 and
//! EdDSA always use [`SoftwareVerifier`] (BoringSSL cannot do them through this function).
//! A host without the function (`NotFound`) is remembered and never asked again; every other
//! host failure falls back to software for that call. The key/alg check runs before any host
//! call: BoringSSL verifies with whatever key it is handed.

use std::cell::Cell;

use fapi_guard_core::jose::host_args::{
    decode_verify_signature_result, host_verify_args, VERIFY_SIGNATURE_FUNCTION,
};
use fapi_guard_core::jose::verify::check_key_for_alg;
use fapi_guard_core::jose::{Alg, PublicKey, SignatureVerifier, SoftwareVerifier, VerifyError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// Verifier for the filters: host first for ES256/RS256, software otherwise.
/// One per root/HTTP context (the Wasm VM is single-threaded; `Cell` is enough).
#[derive(Debug)]
pub struct HostVerifier {
    prefer_host: bool,
    host_missing: Cell<bool>,
}

impl Default for HostVerifier {
    fn default() -> Self {
        HostVerifier::new(true)
    }
}

impl HostVerifier {
    /// `prefer_host = false` forces software verification (benchmarks, tests, odd hosts).
    pub const fn new(prefer_host: bool) -> Self {
        HostVerifier {
            prefer_host,
            host_missing: Cell::new(false),
        }
    }

    /// Whether the next ES256/RS256 verification will be sent to the host.
    pub fn uses_host(&self) -> bool {
        self.prefer_host && !self.host_missing.get()
    }
}

impl SignatureVerifier for HostVerifier {
    fn verify(
        &self,
        alg: Alg,
        key: &PublicKey,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        // RFC 8725 §3.1 / FAPI 2.0 §5.4: algorithm confusion and RSA size, before the host.
        check_key_for_alg(alg, key)?;
        if self.uses_host() {
            // `None`: PS256/EdDSA, which the host cannot verify.
            if let Some(args) = host_verify_args(alg, key, signing_input, signature)? {
                match hostcalls::call_foreign_function(VERIFY_SIGNATURE_FUNCTION, Some(&args)) {
                    Ok(out) => {
                        // No bytes = the all-default result message: `result = false`.
                        let out = out.unwrap_or_default();
                        match decode_verify_signature_result(&out) {
                            Some(r) if r.result => return Ok(()),
                            Some(_) => return Err(VerifyError::BadSignature),
                            None => {
                                log::warn!(
                                    "verify_signature returned an undecodable result; \
                                     using software verification from now on"
                                );
                                self.host_missing.set(true);
                            }
                        }
                    }
                    Err(Status::NotFound) => {
                        log::info!(
                            "host has no verify_signature foreign function; \
                             using software verification"
                        );
                        self.host_missing.set(true);
                    }
                    Err(status) => {
                        // BadArgument / InternalFailure: this call could not be served. The key
                        // passed our own checks, so software gives the right answer.
                        log::debug!("verify_signature failed ({status:?}); software fallback");
                    }
                }
            }
        }
        SoftwareVerifier.verify(alg, key, signing_input, signature)
    }
}
