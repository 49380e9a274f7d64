//! The one canonical request path (docs/checks.md, "Path canonicalisation"): any `:path`
//! is refused or decoded once, never a panic; what passes decodes to a path that is itself
//! canonical and unchanged by a second pass (no decision depends on how often it is decoded).
#![no_main]
use fapi_guard_core::path::canonical;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = canonical(target) {
        let decoded = c.path().to_string();
        let again = canonical(&decoded).map(|d| d.path().to_string());
        assert_eq!(again.as_deref(), Ok(decoded.as_str()), "{target:?}");
    }
});
