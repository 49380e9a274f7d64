//! Size caps on a fetched JWKS answer, as the policy sets them per issuer
//! (`issuers[i].jwks_max_bytes`, `jwks_max_keys`; docs/checks.md §1.4): checked by
//! [`crate::jwks_store`] before any key is parsed.

/// The most bytes the host copies out of a JWKS answer (`fapi_guard_host::jwks::read_answer`):
/// the upper bound of `issuers[i].jwks_max_bytes`, plus one byte so an answer over any cap is
/// seen as over it without copying all of it.
pub const JWKS_BYTES_CEILING: usize = 1024 * 1024;

/// Size caps on a fetched JWKS answer (docs/checks.md §1.4): a larger answer, or one
/// with more `keys` entries, is refused before any key is parsed and the last good keys stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksLimits {
    pub max_bytes: usize,
    pub max_keys: usize,
}

impl JwksLimits {
    /// The policy defaults (`issuers[i].jwks_max_bytes` 64 KiB, `jwks_max_keys` 100).
    pub const DEFAULT: JwksLimits = JwksLimits {
        max_bytes: 64 * 1024,
        max_keys: 100,
    };
    /// No cap (documents already checked: shared by the fetching worker, or inline).
    pub const NONE: JwksLimits = JwksLimits {
        max_bytes: usize::MAX,
        max_keys: usize::MAX,
    };

    /// `Err(reason)` when `body` is over a cap. Keys are counted without parsing them
    /// (`serde::de::IgnoredAny`); a body that is no JWKS at all is left to the parser.
    pub fn check(&self, body: &[u8]) -> Result<(), &'static str> {
        if body.len() > self.max_bytes {
            return Err("too_large");
        }
        #[derive(serde::Deserialize)]
        struct Count {
            keys: Vec<serde::de::IgnoredAny>,
        }
        if self.max_keys != usize::MAX {
            if let Ok(c) = serde_json::from_slice::<Count>(body) {
                if c.keys.len() > self.max_keys {
                    return Err("too_many_keys");
                }
            }
        }
        Ok(())
    }
}
