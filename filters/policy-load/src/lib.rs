//! Policy loading for the Wasm modules, built for size.
//!
//! [`Policy::from_json`] is `#[inline]`, so its body and every generic it instantiates (the
//! derived `Deserialize` code of the whole policy over `serde_json`'s deserializer (under
//! `fapi_guard_core::objects_only`, every struct from a JSON object only), its
//! visitors, the checks that compile the document) are code-generated in the crate that calls
//! it: this one, which the workspace `Cargo.toml` builds at `opt-level = "z"`. The policy is
//! parsed once per plugin load, never per request, so its speed does not matter; the bytes do
//! (bench/README.md, "Size"). The load-only checks `Policy::from_json` calls (`Policy::compile`,
//! the route, `authz`, `fhir` and `cors` compilers) are `#[inline]` for the same reason, so they
//! are generated here too. Same function, same results and error messages as
//! `fapi_guard_core::policy::Policy::from_json`, which the native tools call directly.

use fapi_guard_core::policy::{Policy, PolicyError};

/// Parses and validates a policy document (`Policy::from_json`). Errors name the field.
/// `#[inline(never)]`: inlined into the host's `load_policy` (level 3), its body would lose
/// the size build (the one module grew by 21 KB that way).
#[inline(never)]
pub fn from_json(bytes: &[u8]) -> Result<Policy, PolicyError> {
    Policy::from_json(bytes)
}
