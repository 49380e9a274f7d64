//! JWK / JWKS parsing (RFC 7517), public-key-only, and RFC 7638 thumbprints.
//! STUB: the contract below is fixed; the implementation is being written.

use super::alg::Alg;

/// A public key, validated on parse (point on curve / sane RSA sizes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// P-256 affine coordinates, 32 bytes each.
    EcP256 { x: [u8; 32], y: [u8; 32] },
    /// RSA modulus and exponent, big-endian, no leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Ed25519 public key.
    Ed25519 { x: [u8; 32] },
}

impl PublicKey {
    /// RSA modulus size in bits (0 for non-RSA keys).
    pub fn rsa_bits(&self) -> usize {
        todo!()
    }
    /// Whether this key can verify `alg` (kty/crv match: the algorithm-confusion guard).
    pub fn fits(&self, _alg: Alg) -> bool {
        todo!()
    }
    /// RFC 7638 SHA-256 thumbprint, base64url.
    pub fn thumbprint_s256(&self) -> String {
        todo!()
    }
}

/// Why a JWK was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwkError {
    /// Not a JSON object / missing or malformed member (member named).
    Malformed(&'static str),
    /// `kty`/`crv` the guard does not support.
    Unsupported,
    /// Carries private members (`d`, `p`, `q`, `dp`, `dq`, `qi`, `k`) (RFC 9449 §4.3 step 7).
    PrivateKey,
    /// EC point not on the curve, or otherwise invalid key material.
    InvalidKey,
}

/// One JWK of a JWKS with the selection members of RFC 7517 §4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    pub alg: Option<String>,
    pub use_: Option<String>,
    pub key: PublicKey,
}

impl Jwk {
    /// Parses one public JWK from a JSON value.
    pub fn from_json(_v: &serde_json::Value) -> Result<Jwk, JwkError> {
        todo!()
    }
}

/// A JWKS. Keys the guard cannot use (unsupported kty, `use` = `enc`, private keys) are
/// skipped on parse, not fatal, so one odd key does not take out an issuer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWKS document (`{"keys":[...]}`); an error only when it is not one at all.
    pub fn parse(_bytes: &[u8]) -> Result<Jwks, JwkError> {
        todo!()
    }
    /// RFC 8725 §3.10 / checklist §1.4: the key for a JWS header: by `kid` (when the JWS has one),
    /// then only keys that `fits(alg)` and whose `alg`/`use` (when present) agree.
    pub fn select(&self, _kid: Option<&str>, _alg: Alg) -> Option<&Jwk> {
        todo!()
    }
}
