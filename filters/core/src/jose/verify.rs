//! Signature verification behind one interface. STUB: contract fixed, implementation pending.

use super::alg::Alg;
use super::jwk::PublicKey;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The key's type/curve does not match `alg`, or RSA < 2048 bits (FAPI 2.0 §5.4).
    KeyMismatch,
    /// The signature does not verify (or is malformed for the alg).
    BadSignature,
    /// The verifier cannot serve this alg (the caller may fall back).
    Unsupported,
}

/// Verifies `signature` over `signing_input` with `key` under `alg`. Implementations must
/// call [`check_key_for_alg`] first (algorithm confusion; RSA key size).
pub trait SignatureVerifier {
    fn verify(
        &self,
        alg: Alg,
        key: &PublicKey,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError>;
}

/// Refuses keys that do not fit `alg` and RSA keys shorter than 2048 bits.
pub fn check_key_for_alg(_alg: Alg, _key: &PublicKey) -> Result<(), VerifyError> {
    todo!()
}

/// Pure-Rust verifier for every [`Alg`]: `p256`, `rsa`, `ed25519-dalek` (`verify_strict`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SoftwareVerifier;

impl SignatureVerifier for SoftwareVerifier {
    fn verify(
        &self,
        _alg: Alg,
        _key: &PublicKey,
        _signing_input: &[u8],
        _signature: &[u8],
    ) -> Result<(), VerifyError> {
        todo!()
    }
}
