//! What the explainer (`fapi-guard explain`, the web page) shows of a decoded token: claims
//! that identify a person are replaced before printing, unless asked (`--show-personal`, the
//! page's "Show personal identifiers" box). Decisions are made on the token as presented; only
//! the display is redacted (docs/helseid.md, "The explainer and personal data").
//!
//! Personal (GDPR Art. 4(1)): the national identity number (`helseid://claims/identity/pid`,
//! fødselsnummer / D-number), its pseudonym `pid_pseudonym` (pseudonymised data is still
//! personal data, GDPR Recital 26: it links one person across tickets), names (OpenID Connect
//! Core §5.1 `name`, `given_name`, `family_name`, `middle_name`, and HelseID's identity
//! claims naming the person), and the HPR number (`helseid://claims/hpr/hpr_number`, a health
//! professional's register number). Not redacted: `sub` (pairwise and opaque in HelseID),
//! `client_id`, scopes, levels, organisation numbers.

use serde_json::Value;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "(redacted: personal identifier; --show-personal shows it)";

/// Whether the claim `name` holds a personal identifier.
pub fn is_personal(name: &str) -> bool {
    const OIDC_NAMES: [&str; 4] = ["name", "given_name", "family_name", "middle_name"];
    if let Some(claim) = name.strip_prefix("helseid://claims/identity/") {
        return claim == "pid" || claim == "pid_pseudonym" || claim.contains("name");
    }
    OIDC_NAMES.contains(&name)
        || matches!(name, "pid" | "pid_pseudonym" | "hpr_number")
        || name == "helseid://claims/hpr/hpr_number"
}

/// Replaces the personal claims of a decoded payload (top-level members, as HelseID sends
/// them); returns their names, in order.
pub fn payload(p: &mut Value) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(m) = p.as_object_mut() {
        for (k, v) in m.iter_mut() {
            if is_personal(k) {
                *v = Value::String(REDACTED.into());
                names.push(k.clone());
            }
        }
    }
    names
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn personal_claims_are_replaced_and_others_kept() {
        let mut p = serde_json::json!({
            "sub": "y7kmWl2W", "client_id": "c1",
            "helseid://claims/identity/pid": "12345678901",
            "helseid://claims/identity/pid_pseudonym": "abc=",
            "helseid://claims/identity/name": "Kari Nordmann",
            "helseid://claims/identity/given_name": "Kari",
            "helseid://claims/identity/security_level": "4",
            "helseid://claims/hpr/hpr_number": "565501872",
            "given_name": "Kari", "family_name": "Nordmann",
            "helseid://claims/client/client_name": "Sample EPJ",
        });
        let names = payload(&mut p);
        assert_eq!(names.len(), 7, "{names:?}");
        let text = p.to_string();
        for secret in ["12345678901", "abc=", "Kari", "Nordmann", "565501872"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        for kept in ["y7kmWl2W", "c1", "\"4\"", "Sample EPJ"] {
            assert!(text.contains(kept), "{kept} not in {text}");
        }
    }
}
