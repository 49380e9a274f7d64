//! The `Authorization` scheme of a request and of a challenge (RFC 6750 §2.1, RFC 9449 §7.1).

/// An `Authorization` scheme: the one a token came with, or one a challenge offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Scheme {
    Dpop,
    Bearer,
}

impl Scheme {
    /// The scheme an `Authorization` value names (case-insensitive, RFC 9110 §11.1), if ours.
    pub fn parse(name: &str) -> Option<Scheme> {
        if name.eq_ignore_ascii_case("DPoP") {
            Some(Scheme::Dpop)
        } else if name.eq_ignore_ascii_case("Bearer") {
            Some(Scheme::Bearer)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scheme::Dpop => "DPoP",
            Scheme::Bearer => "Bearer",
        }
    }
}
