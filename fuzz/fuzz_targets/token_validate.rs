//! The token filter's decision: `Authorization` header -> extract -> validate (docs/checks.md §1),
//! once with the real verifier and once past the signature (claim checks).
//! Input: `<authorization>\n<path>`.
#![no_main]
use fapi_guard_core::jose::SoftwareVerifier;
use fapi_guard_core::jwks_store::KeyRing;
use fapi_guard_core::token;
use fuzz_support::{policy, split, text, AcceptAll, NOW};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 2);
    let auth = vec![text(parts[0])];
    let path = text(parts[1]);
    let p = policy();
    let Ok(presented) = token::extract(p, &auth, &path) else {
        return;
    };
    let ring = KeyRing::new(p);
    let _ = token::validate(p, &ring, &SoftwareVerifier, presented, NOW);
    let _ = token::validate(p, &ring, &AcceptAll, presented, NOW);
});
