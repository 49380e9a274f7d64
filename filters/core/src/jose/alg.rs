//! JWS algorithms the guard can verify (RFC 7518 §3, RFC 8037 §3.1).

/// An asymmetric JWS algorithm the guard knows how to verify.
/// `none` and HMAC algorithms have no variant: they can never be allowed (RFC 8725 §3.1–3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ECDSA P-256 SHA-256, signature raw r‖s (RFC 7518 §3.4).
    ES256,
    /// RSASSA-PSS SHA-256, MGF1 SHA-256, salt 32 (RFC 7518 §3.5).
    PS256,
    /// Ed25519 (RFC 8037). The npm `dpop` client spells it `Ed25519`.
    EdDSA,
    /// RSASSA-PKCS1-v1_5 SHA-256. Not FAPI 2.0; only when a policy adds it.
    RS256,
}

impl Alg {
    /// Parses the `alg` header value. `Ed25519` is accepted as a spelling of EdDSA
    /// (RFC 9449 clients; `RESOURCE-SERVER-CHECKS.md` §2.4).
    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "ES256" => Some(Alg::ES256),
            "PS256" => Some(Alg::PS256),
            "EdDSA" | "Ed25519" => Some(Alg::EdDSA),
            "RS256" => Some(Alg::RS256),
            _ => None,
        }
    }

    /// The canonical name, as used in `algs="..."` challenges.
    pub fn name(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::PS256 => "PS256",
            Alg::EdDSA => "EdDSA",
            Alg::RS256 => "RS256",
        }
    }

    /// The FAPI 2.0 §5.4 default allow-list.
    pub const FAPI_DEFAULT: [Alg; 3] = [Alg::PS256, Alg::ES256, Alg::EdDSA];
}
