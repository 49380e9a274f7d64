//! JWS compact serialisation (RFC 7515 §7.1). STUB: contract fixed, implementation pending.

use super::alg::Alg;

/// Why a compact JWS was refused before any key was looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwsError {
    /// Not three base64url parts, bad base64url, or header/payload not a JSON object.
    Malformed,
    /// `alg` missing, `none`, HMAC, or unknown.
    BadAlg,
    /// `crit` present with a member the guard does not implement (RFC 7515 §4.1.11).
    UnsupportedCrit,
}

/// A parsed, not yet verified, compact JWS.
#[derive(Debug, Clone)]
pub struct CompactJws<'a> {
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    pub alg: Alg,
    /// The protected header as parsed JSON (object).
    pub header: serde_json::Map<String, serde_json::Value>,
    /// The payload as parsed JSON (object).
    pub payload: serde_json::Map<String, serde_json::Value>,
    pub signature: Vec<u8>,
}

impl<'a> CompactJws<'a> {
    /// Parses `h.p.s`. Refuses `none`/HMAC/unknown `alg` and unknown `crit`.
    pub fn parse(_compact: &'a str) -> Result<CompactJws<'a>, JwsError> {
        todo!()
    }
    /// Header member as a string, if it is one.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(|v| v.as_str())
    }
}
