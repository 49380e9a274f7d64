//! The policy error: a leaf module every policy section (`policy`, `policy::dpop`,
//! `fhir::policy`, `routes`, `authz`) uses, so none of them imports another back.

/// A policy problem, naming the field (`issuers[0].jwks_uri`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub field: String,
    pub message: String,
}

impl PolicyError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "policy: {}", self.message)
        } else {
            write!(f, "policy field `{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for PolicyError {}
