//! The verified token, as the token filter hands it to the filters after it in the chain.
//!
//! The token filter stores it as Envoy filter state (proxy-wasm `set_property`), which a
//! client cannot set; filters after it read it back with `get_property`. A request header
//! of any name is never trusted for this.

use serde::{Deserialize, Serialize};

use crate::denial::Scheme;

/// Filter-state key (Envoy stores it as `wasm.fapi_guard.verified_token`).
pub const VERIFIED_TOKEN_PROPERTY: &str = "fapi_guard.verified_token";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifiedToken {
    /// `DPoP` or `Bearer`, as the request's `Authorization` used.
    pub dpop_scheme: bool,
    /// base64url(SHA-256(token)) = the `ath` a DPoP proof must carry (RFC 9449 §4.2).
    pub token_sha256: String,
    pub iss: String,
    pub sub: String,
    pub client_id: String,
    pub exp: i64,
    /// Granted scopes, from `scope` (space-delimited) or `scp` (array) (checklist §1.9).
    pub scopes: Vec<String>,
    /// `cnf.jkt` (RFC 9449 §6.1).
    pub cnf_jkt: Option<String>,
    /// `cnf.x5t#S256` (RFC 8705 §3.1).
    pub cnf_x5t_s256: Option<String>,
    /// Every other claim, for policies that read launch context (`patient`, `fhirUser`, ...).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl VerifiedToken {
    pub fn scheme(&self) -> Scheme {
        if self.dpop_scheme {
            Scheme::Dpop
        } else {
            Scheme::Bearer
        }
    }

    /// A string claim by name (e.g. the configurable patient claim).
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(|v| v.as_str())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<VerifiedToken> {
        serde_json::from_slice(bytes).ok()
    }
}
