//! JWS algorithms the guard can verify (RFC 7518 §3, RFC 8037 §3.1, RFC 9864 §2).

/// An asymmetric JWS algorithm the guard knows how to verify.
/// `none` and HMAC algorithms have no variant: they can never be allowed (RFC 8725 §3.1–3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ECDSA P-256 SHA-256, signature raw r‖s (RFC 7518 §3.4).
    ES256,
    /// RSASSA-PSS SHA-256, MGF1 SHA-256, salt 32 (RFC 7518 §3.5).
    PS256,
    /// Ed25519 (RFC 8037). RFC 9864 §2 names it `Ed25519` (fully specified); the
    /// polymorphic `EdDSA` name is deprecated there but still what most clients send.
    EdDSA,
    /// RSASSA-PKCS1-v1_5 SHA-256. Not FAPI 2.0; only when a policy adds it (HelseID signs
    /// its access tokens with it).
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384 (RFC 7518 §3.3). Policy opt-in.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512 (RFC 7518 §3.3). Policy opt-in.
    RS512,
    /// RSASSA-PSS SHA-384, MGF1 SHA-384, salt 48 (RFC 7518 §3.5). Policy opt-in.
    PS384,
    /// RSASSA-PSS SHA-512, MGF1 SHA-512, salt 64 (RFC 7518 §3.5). Policy opt-in.
    PS512,
    /// ECDSA P-384 SHA-384, raw r‖s of 2×48 octets (RFC 7518 §3.4). Policy opt-in.
    ES384,
    /// ECDSA P-521 SHA-512, raw r‖s of 2×66 octets (RFC 7518 §3.4). Policy opt-in.
    ES512,
}

impl Alg {
    /// Parses the `alg` header value. `Ed25519` (RFC 9864 §2.2) is the same algorithm as
    /// `EdDSA` with an Ed25519 key (RFC 8037 §3.1); `Ed448` is not supported.
    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "ES256" => Some(Alg::ES256),
            "PS256" => Some(Alg::PS256),
            "EdDSA" | "Ed25519" => Some(Alg::EdDSA),
            "RS256" => Some(Alg::RS256),
            "RS384" => Some(Alg::RS384),
            "RS512" => Some(Alg::RS512),
            "PS384" => Some(Alg::PS384),
            "PS512" => Some(Alg::PS512),
            "ES384" => Some(Alg::ES384),
            "ES512" => Some(Alg::ES512),
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
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
        }
    }

    /// RSASSA-PKCS1-v1_5 (RS*).
    pub fn is_rsa_pkcs1(self) -> bool {
        matches!(self, Alg::RS256 | Alg::RS384 | Alg::RS512)
    }

    /// RSASSA-PSS (PS*).
    pub fn is_rsa_pss(self) -> bool {
        matches!(self, Alg::PS256 | Alg::PS384 | Alg::PS512)
    }

    /// The FAPI 2.0 §5.4 default allow-list.
    pub const FAPI_DEFAULT: [Alg; 3] = [Alg::PS256, Alg::ES256, Alg::EdDSA];

    /// Every algorithm the guard implements (HelseID's `dpop_signing_alg_values_supported`
    /// plus EdDSA).
    pub const ALL: [Alg; 10] = [
        Alg::PS256,
        Alg::ES256,
        Alg::EdDSA,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS384,
        Alg::PS512,
        Alg::ES384,
        Alg::ES512,
    ];
}
