//! The verified token, as the token step hands it to the steps after it: in memory, within
//! one stream's pipeline (`crate::engine`); nothing a client sends (no header of any name)
//! is ever read as one.

use crate::scheme::Scheme;

#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// `DPoP` or `Bearer`, as the request's `Authorization` used.
    pub scheme: Scheme,
    /// base64url(SHA-256(token)) = the `ath` a DPoP proof must carry (RFC 9449 §4.2).
    pub token_sha256: String,
    pub iss: String,
    /// `sub`; empty when the token has none and the policy allows that
    /// (`token.require_sub: false`: client-credentials tokens, RFC 9068 §2.2 relaxed).
    pub sub: String,
    pub client_id: String,
    pub exp: i64,
    /// Granted scopes, from `scope` or `scp`, each a space-delimited string or an array of
    /// strings (docs/checks.md §1.9; [`scope_values`]).
    pub scopes: Vec<String>,
    /// `cnf.jkt` (RFC 9449 §6.1).
    pub cnf_jkt: Option<String>,
    /// `cnf.x5t#S256` (RFC 8705 §3.1).
    pub cnf_x5t_s256: Option<String>,
    /// Every other claim, for policies that read launch context (`patient`, `fhirUser`, ...).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// The scopes of a claims set: `scope` (RFC 9068 §2.2.3: space-delimited string; Duende
/// IdentityServer, HelseID's server, may emit a JSON array of strings), else `scp`, in either
/// form. Entries holding spaces are split. `None` when the claim present is of another type
/// (a number, an array with a non-string): the caller fails closed.
pub fn scope_values(claims: &serde_json::Map<String, serde_json::Value>) -> Option<Vec<String>> {
    use serde_json::Value;
    let split =
        |s: &str, out: &mut Vec<String>| out.extend(s.split_whitespace().map(str::to_string));
    let mut out = Vec::new();
    // A JSON null is no claim (RFC 7519 §4: claims with null values may be omitted).
    let present = |name: &str| claims.get(name).filter(|v| !v.is_null());
    let claim = present("scope").or_else(|| present("scp"));
    match claim {
        None => {}
        Some(Value::String(s)) => split(s, &mut out),
        Some(Value::Array(items)) => {
            for v in items {
                split(v.as_str()?, &mut out);
            }
        }
        Some(_) => return None,
    }
    Some(out)
}

impl VerifiedToken {
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// A string claim by name (e.g. the configurable patient claim).
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(|v| v.as_str())
    }
}
