//! The compiled `token` section: accepted schemes, algorithms, `typ`, `sub`, clock skew and
//! the verified-token cache size (docs/checks.md §1).

use super::document::{SchemeDoc, TokenDoc};
use crate::error::PolicyError;
use crate::jose::Alg;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRules {
    pub allow_dpop: bool,
    pub allow_bearer: bool,
    pub algs: Vec<Alg>,
    pub allow_typ_jwt: bool,
    pub require_sub: bool,
    pub skew_seconds: u64,
    pub cache_max_entries: usize,
}

#[inline]
pub(super) fn compile_token(d: &TokenDoc) -> Result<TokenRules, PolicyError> {
    if d.schemes.is_empty() {
        return Err(PolicyError::new(
            "token.schemes",
            "at least one scheme is required",
        ));
    }
    let mut algs = Vec::new();
    for (i, name) in d.allowed_algs.iter().enumerate() {
        // RFC 8725 §3.1–3.2: `none` and HMAC can never be allowed, whatever the policy says.
        // `Ed25519` (RFC 9864 §2.2) is accepted as the name of the EdDSA/Ed25519 algorithm.
        let alg = Alg::parse(name).ok_or_else(|| {
            PolicyError::new(format!("token.allowed_algs[{i}]"), format!("`{name}` is not an allowed asymmetric JWS algorithm (use PS256, ES256, EdDSA/Ed25519, RS256, RS384, RS512, PS384, PS512, ES384 or ES512)"))
        })?;
        if !algs.contains(&alg) {
            algs.push(alg);
        }
    }
    if algs.is_empty() {
        return Err(PolicyError::new("token.allowed_algs", "must not be empty"));
    }
    if d.clock_skew_seconds > 300 {
        return Err(PolicyError::new(
            "token.clock_skew_seconds",
            "must be at most 300",
        ));
    }
    if d.cache_max_entries > 1_000_000 {
        return Err(PolicyError::new(
            "token.cache_max_entries",
            "must be at most 1000000",
        ));
    }
    Ok(TokenRules {
        allow_dpop: d.schemes.contains(&SchemeDoc::DPoP),
        allow_bearer: d.schemes.contains(&SchemeDoc::Bearer),
        algs,
        allow_typ_jwt: d.allow_typ_jwt,
        require_sub: d.require_sub,
        skew_seconds: d.clock_skew_seconds,
        cache_max_entries: d.cache_max_entries,
    })
}
