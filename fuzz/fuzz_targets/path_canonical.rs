//! The one canonical request path (docs/checks.md, "Path canonicalisation"): any `:path`
//! is refused or decoded once, never a panic. What passes decodes to a path that a second
//! pass leaves unchanged, or that holds a character allowed only percent-encoded (`%7D` is
//! `}`): decoding never makes a dot-segment, `//`, `;`, `\`, `%`, a control or non-ASCII.
#![no_main]
use fapi_guard_core::path::{canonical, PathFault};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = canonical(target) {
        let decoded = c.path().to_string();
        match canonical(&decoded) {
            Ok(again) => assert_eq!(again.path(), decoded, "{target:?}"),
            Err(f) => assert_eq!(f, PathFault::IllegalCharacter, "{target:?} -> {decoded:?}"),
        }
    }
});
