//! A public key as the verifiers take it (EC, RSA, Ed25519), its size and the algorithms it
//! fits, and its RFC 7638 thumbprint (the `cnf.jkt` of a DPoP-bound token, RFC 9449 §6).

use sha2::{Digest, Sha256};

use super::alg::Alg;
use crate::b64;

/// A public key, validated on parse (point on curve / sane RSA sizes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// P-256 affine coordinates, 32 bytes each.
    EcP256 { x: [u8; 32], y: [u8; 32] },
    /// P-384 affine coordinates, 48 bytes each (RFC 7518 §6.2.1.2).
    EcP384 { x: [u8; 48], y: [u8; 48] },
    /// P-521 affine coordinates, 66 bytes each (RFC 7518 §6.2.1.2).
    EcP521 { x: [u8; 66], y: [u8; 66] },
    /// RSA modulus and exponent, big-endian, no leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Ed25519 public key.
    Ed25519 { x: [u8; 32] },
}

impl PublicKey {
    /// RSA modulus size in bits (0 for non-RSA keys).
    pub fn rsa_bits(&self) -> usize {
        match self {
            PublicKey::Rsa { n, .. } => {
                // Leading zero octets are refused on parse; skip them anyway for keys built by hand.
                let n = strip_leading_zeros(n);
                match n.first() {
                    Some(&top) => n.len() * 8 - top.leading_zeros() as usize,
                    None => 0,
                }
            }
            _ => 0,
        }
    }
    /// Whether this key can verify `alg` (kty/crv match: the algorithm-confusion guard).
    pub fn fits(&self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (PublicKey::EcP256 { .. }, Alg::ES256)
                | (PublicKey::EcP384 { .. }, Alg::ES384)
                | (PublicKey::EcP521 { .. }, Alg::ES512)
                | (
                    PublicKey::Rsa { .. },
                    Alg::PS256 | Alg::PS384 | Alg::PS512 | Alg::RS256 | Alg::RS384 | Alg::RS512
                )
                | (PublicKey::Ed25519 { .. }, Alg::EdDSA)
        )
    }
    /// RFC 7638 SHA-256 thumbprint, base64url.
    pub fn thumbprint_s256(&self) -> String {
        b64::encode(&Sha256::digest(self.thumbprint_input().as_bytes()))
    }
    /// RFC 7638 §3.2–3.3 input: the required members only, in lexicographic order, no
    /// whitespace. The values are base64url or fixed names, so no JSON escaping is needed.
    pub fn thumbprint_input(&self) -> String {
        match self {
            PublicKey::EcP256 { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64::encode(x),
                b64::encode(y)
            ),
            PublicKey::EcP384 { x, y } => format!(
                r#"{{"crv":"P-384","kty":"EC","x":"{}","y":"{}"}}"#,
                b64::encode(x),
                b64::encode(y)
            ),
            PublicKey::EcP521 { x, y } => format!(
                r#"{{"crv":"P-521","kty":"EC","x":"{}","y":"{}"}}"#,
                b64::encode(x),
                b64::encode(y)
            ),
            PublicKey::Rsa { n, e } => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                b64::encode(e),
                b64::encode(n)
            ),
            PublicKey::Ed25519 { x } => {
                format!(
                    r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                    b64::encode(x)
                )
            }
        }
    }
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or_default()
}
