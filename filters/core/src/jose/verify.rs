//! Signature verification behind one interface.

use sha2::{Sha256, Sha384, Sha512};

use super::alg::Alg;
use super::public_key::PublicKey;

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

/// Smallest RSA modulus accepted for any RSA alg (FAPI 2.0 §5.4; RFC 7518 §3.3, §3.5).
pub const RSA_MIN_BITS: usize = 2048;

/// Refuses keys that do not fit `alg` and RSA keys shorter than 2048 bits.
pub fn check_key_for_alg(alg: Alg, key: &PublicKey) -> Result<(), VerifyError> {
    // RFC 8725 §3.1: the key's type decides the algorithm family, never the token alone.
    if !key.fits(alg) {
        return Err(VerifyError::KeyMismatch);
    }
    if matches!(key, PublicKey::Rsa { .. }) && key.rsa_bits() < RSA_MIN_BITS {
        return Err(VerifyError::KeyMismatch);
    }
    Ok(())
}

/// Pure-Rust verifier for every [`Alg`]: `p256`/`p384`/`p521`, our RFC 8017 `jose::rsa`, `ed25519-dalek`
/// (`verify_strict`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SoftwareVerifier;

impl SignatureVerifier for SoftwareVerifier {
    fn verify(
        &self,
        alg: Alg,
        key: &PublicKey,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        check_key_for_alg(alg, key)?;
        match (alg, key) {
            (Alg::ES256, PublicKey::EcP256 { x, y }) => {
                verify_es256(x, y, signing_input, signature)
            }
            (Alg::ES384, PublicKey::EcP384 { x, y }) => {
                verify_es384(x, y, signing_input, signature)
            }
            (Alg::ES512, PublicKey::EcP521 { x, y }) => {
                verify_es512(x, y, signing_input, signature)
            }
            (_, PublicKey::Rsa { n, e }) if alg.is_rsa_pkcs1() || alg.is_rsa_pss() => {
                verify_rsa(alg, n, e, signing_input, signature)
            }
            (Alg::EdDSA, PublicKey::Ed25519 { x }) => verify_ed25519(x, signing_input, signature),
            _ => Err(VerifyError::KeyMismatch),
        }
    }
}

/// RFC 7518 §3.4: the JWS signature is the 64-octet R‖S (big-endian, 32 each); a DER
/// `ECDSA-Sig-Value` or any other length is invalid. r, s must be in [1, n-1]; a high S is
/// accepted (RFC 7518 does not require low-S; Wycheproof marks such signatures valid).
fn verify_es256(x: &[u8; 32], y: &[u8; 32], msg: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::{Signature, VerifyingKey};

    if sig.len() != 64 {
        return Err(VerifyError::BadSignature);
    }
    let mut sec1 = [0u8; 65];
    sec1[0] = 0x04;
    sec1[1..33].copy_from_slice(x);
    sec1[33..].copy_from_slice(y);
    // Keys from `Jwk::from_json` are on the curve; a hand-built off-curve key lands here.
    let vk = VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| VerifyError::KeyMismatch)?;
    let sig = Signature::from_slice(sig).map_err(|_| VerifyError::BadSignature)?;
    vk.verify(msg, &sig).map_err(|_| VerifyError::BadSignature)
}

/// RFC 7518 §3.4 ES384 (R‖S, 48 octets each, SHA-384) and ES512 (P-521, SHA-512, 66 octets
/// each): in `fapi-guard-ec-p384-p521`, built for size (off the request path on Envoy 1.40).
fn verify_es384(x: &[u8; 48], y: &[u8; 48], msg: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
    fapi_guard_ec_p384_p521::verify_es384(x, y, msg, sig).map_err(ec_error)
}

fn verify_es512(x: &[u8; 66], y: &[u8; 66], msg: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
    fapi_guard_ec_p384_p521::verify_es512(x, y, msg, sig).map_err(ec_error)
}

fn ec_error(e: fapi_guard_ec_p384_p521::EcError) -> VerifyError {
    match e {
        fapi_guard_ec_p384_p521::EcError::Key => VerifyError::KeyMismatch,
        fapi_guard_ec_p384_p521::EcError::Signature => VerifyError::BadSignature,
    }
}

/// RFC 7518 §3.3 (RS*: RSASSA-PKCS1-v1_5 SHA-256/384/512) and §3.5 (PS*: RSASSA-PSS with
/// the same hash for MGF1, salt length = hash length). The signature is exactly k = |n| octets
/// (RFC 8017 §8.1.2 / §8.2.2 step 1; `jose::rsa` checks that too).
fn verify_rsa(alg: Alg, n: &[u8], e: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
    use super::rsa::{pkcs1v15_verify, pss_verify, RsaError};

    let n = strip_zeros(n);
    if sig.len() != n.len() {
        return Err(VerifyError::BadSignature);
    }
    let checked = match alg {
        Alg::PS256 => pss_verify::<Sha256>(n, e, msg, sig),
        Alg::PS384 => pss_verify::<Sha384>(n, e, msg, sig),
        Alg::PS512 => pss_verify::<Sha512>(n, e, msg, sig),
        Alg::RS256 => pkcs1v15_verify::<Sha256>(n, e, msg, sig),
        Alg::RS384 => pkcs1v15_verify::<Sha384>(n, e, msg, sig),
        Alg::RS512 => pkcs1v15_verify::<Sha512>(n, e, msg, sig),
        Alg::ES256 | Alg::ES384 | Alg::ES512 | Alg::EdDSA => return Err(VerifyError::KeyMismatch),
    };
    checked.map_err(|e| match e {
        RsaError::Key => VerifyError::KeyMismatch,
        RsaError::Signature => VerifyError::BadSignature,
    })
}

/// RFC 8037 §3.1 Ed25519, with `verify_strict` (canonical S, no small-order R or key).
fn verify_ed25519(x: &[u8; 32], msg: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(x).map_err(|_| VerifyError::KeyMismatch)?;
    let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| VerifyError::BadSignature)?;
    vk.verify_strict(msg, &sig)
        .map_err(|_| VerifyError::BadSignature)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap
)]
mod tests {
    use super::*;
    use crate::b64;

    fn rsa_key(bits: usize) -> PublicKey {
        let mut n = vec![0xffu8; bits / 8];
        n[0] = 0x80;
        PublicKey::Rsa {
            n,
            e: vec![1, 0, 1],
        }
    }

    #[test]
    fn key_for_alg_cases() {
        let ec = PublicKey::EcP256 {
            x: [0; 32],
            y: [0; 32],
        };
        let ed = PublicKey::Ed25519 { x: [0; 32] };
        let cases: &[(&str, Alg, PublicKey, Result<(), VerifyError>)] = &[
            ("rsa 2048 PS256", Alg::PS256, rsa_key(2048), Ok(())),
            ("rsa 2048 RS256", Alg::RS256, rsa_key(2048), Ok(())),
            (
                "rsa 2040 PS256",
                Alg::PS256,
                rsa_key(2040),
                Err(VerifyError::KeyMismatch),
            ),
            (
                "rsa 1024 RS256",
                Alg::RS256,
                rsa_key(1024),
                Err(VerifyError::KeyMismatch),
            ),
            (
                "rsa ES256",
                Alg::ES256,
                rsa_key(2048),
                Err(VerifyError::KeyMismatch),
            ),
            ("ec ES256", Alg::ES256, ec.clone(), Ok(())),
            (
                "ec PS256",
                Alg::PS256,
                ec.clone(),
                Err(VerifyError::KeyMismatch),
            ),
            ("ec EdDSA", Alg::EdDSA, ec, Err(VerifyError::KeyMismatch)),
            ("ed EdDSA", Alg::EdDSA, ed.clone(), Ok(())),
            ("ed ES256", Alg::ES256, ed, Err(VerifyError::KeyMismatch)),
        ];
        for (name, alg, key, want) in cases {
            assert_eq!(&check_key_for_alg(*alg, key), want, "case {name}");
        }
    }

    #[test]
    fn software_refuses_mismatch_before_crypto() {
        // RFC 7515 A.3 ES256 example verified under the wrong algorithm/key pairing.
        let x: [u8; 32] = b64::decode("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU")
            .unwrap()
            .try_into()
            .unwrap();
        let y: [u8; 32] = b64::decode("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0")
            .unwrap()
            .try_into()
            .unwrap();
        let key = PublicKey::EcP256 { x, y };
        let input = b"eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let sig = b64::decode("DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q").unwrap();
        assert_eq!(
            SoftwareVerifier.verify(Alg::ES256, &key, input, &sig),
            Ok(())
        );
        assert_eq!(
            SoftwareVerifier.verify(Alg::EdDSA, &key, input, &sig),
            Err(VerifyError::KeyMismatch)
        );
        // DER-encoded form of the same signature is not a JWS ES256 signature.
        let der = crate::jose::host_args::es256_sig_to_der(&sig).unwrap();
        assert_eq!(
            SoftwareVerifier.verify(Alg::ES256, &key, input, &der),
            Err(VerifyError::BadSignature)
        );
        // Off-curve hand-built key.
        let mut bad = y;
        bad[0] ^= 1;
        assert_eq!(
            SoftwareVerifier.verify(Alg::ES256, &PublicKey::EcP256 { x, y: bad }, input, &sig),
            Err(VerifyError::KeyMismatch)
        );
    }
}
