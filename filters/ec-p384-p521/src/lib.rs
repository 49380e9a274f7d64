//! Software ECDSA on P-384 and P-521 (RFC 7518 §3.4 ES384, ES512) and the on-curve check of
//! their JWK points (RFC 7518 §6.2.1), in a crate of their own so that the generic `ecdsa` /
//! `primeorder` code for these two curves is code-generated here, at `opt-level = "z"` (the
//! workspace `Cargo.toml`), not in `fapi-guard-core` at level 3. Off the request path on Envoy
//! 1.40: ES384/ES512 go to the host's `verify_signature` (`jose::verifier_choice`); keys are
//! checked when a JWKS is loaded. P-256, Ed25519 and RSA stay in `fapi-guard-core` at level 3
//! (bench/README.md, "Size").

/// Why a verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcError {
    /// The public key is no point of the curve.
    Key,
    /// The signature does not verify (or is malformed).
    Signature,
}

/// SEC1 uncompressed point `04 ‖ x ‖ y`.
fn sec1(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + x.len() + y.len());
    out.push(0x04);
    out.extend_from_slice(x);
    out.extend_from_slice(y);
    out
}

/// True when (`x`, `y`) is a point of P-384 (invalid-curve attacks, RFC 8725 §3.4).
pub fn p384_point_valid(x: &[u8], y: &[u8]) -> bool {
    p384::PublicKey::from_sec1_bytes(&sec1(x, y)).is_ok()
}

/// True when (`x`, `y`) is a point of P-521.
pub fn p521_point_valid(x: &[u8], y: &[u8]) -> bool {
    p521::PublicKey::from_sec1_bytes(&sec1(x, y)).is_ok()
}

/// RFC 7518 §3.4 ES384: `sig` is R‖S (48 octets each) over SHA-384 of `msg`.
pub fn verify_es384(x: &[u8; 48], y: &[u8; 48], msg: &[u8], sig: &[u8]) -> Result<(), EcError> {
    use p384::ecdsa::signature::Verifier;
    use p384::ecdsa::{Signature, VerifyingKey};

    if sig.len() != 96 {
        return Err(EcError::Signature);
    }
    let vk = VerifyingKey::from_sec1_bytes(&sec1(x, y)).map_err(|_| EcError::Key)?;
    let sig = Signature::from_slice(sig).map_err(|_| EcError::Signature)?;
    vk.verify(msg, &sig).map_err(|_| EcError::Signature)
}

/// RFC 7518 §3.4 ES512: P-521 with SHA-512, R‖S, 66 octets each.
pub fn verify_es512(x: &[u8; 66], y: &[u8; 66], msg: &[u8], sig: &[u8]) -> Result<(), EcError> {
    use p521::ecdsa::signature::Verifier;
    use p521::ecdsa::{Signature, VerifyingKey};

    if sig.len() != 132 {
        return Err(EcError::Signature);
    }
    let vk = VerifyingKey::from_sec1_bytes(&sec1(x, y)).map_err(|_| EcError::Key)?;
    let sig = Signature::from_slice(sig).map_err(|_| EcError::Signature)?;
    vk.verify(msg, &sig).map_err(|_| EcError::Signature)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use p384::elliptic_curve::sec1::ToSec1Point;

    /// Each curve's generator (SEC1 uncompressed) is a point; the same x with y + 1 is none
    /// (RFC 8725 §3.4: an off-curve JWK must be refused at load).
    #[test]
    fn generator_is_on_curve_and_a_changed_y_is_not() {
        let g = p384::AffinePoint::GENERATOR.to_uncompressed_point();
        let (x, mut y) = (g[1..49].to_vec(), g[49..].to_vec());
        assert!(p384_point_valid(&x, &y));
        y[47] ^= 1;
        assert!(!p384_point_valid(&x, &y));

        let g = p521::AffinePoint::GENERATOR.to_uncompressed_point();
        let (x, mut y) = (g[1..67].to_vec(), g[67..].to_vec());
        assert!(p521_point_valid(&x, &y));
        y[65] ^= 1;
        assert!(!p521_point_valid(&x, &y));
        // Wrong coordinate lengths are no point either.
        assert!(!p521_point_valid(&x[1..], &y));
    }

    /// A signature of the wrong length is refused before any curve arithmetic (RFC 7518 §3.4),
    /// an off-curve key as `Key` (the Wycheproof vectors in fapi-guard-core test the rest).
    #[test]
    fn lengths_and_off_curve_keys() {
        let g = p384::AffinePoint::GENERATOR.to_uncompressed_point();
        let x: [u8; 48] = g[1..49].try_into().unwrap();
        let y: [u8; 48] = g[49..].try_into().unwrap();
        assert_eq!(
            verify_es384(&x, &y, b"m", &[1; 95]),
            Err(EcError::Signature)
        );
        assert_eq!(
            verify_es384(&x, &y, b"m", &[1; 96]),
            Err(EcError::Signature)
        );
        let mut bad_y = y;
        bad_y[47] ^= 1;
        assert_eq!(verify_es384(&x, &bad_y, b"m", &[1; 96]), Err(EcError::Key));
        assert_eq!(
            verify_es512(&[0; 66], &[0; 66], b"m", &[1; 132]),
            Err(EcError::Key)
        );
        assert_eq!(
            verify_es512(&[0; 66], &[0; 66], b"m", &[1; 131]),
            Err(EcError::Signature)
        );
    }
}
