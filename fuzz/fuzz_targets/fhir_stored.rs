//! Read-before-write checks (docs/checks.md §3, BOLA): an update/patch/delete by id is decided on
//! the stored resource. Input: `<selector byte><method>\n<path>\n<status>\n<stored body>\n<request body>`.
#![no_main]
use fapi_guard_core::fhir::{check_stored, Decision};
use fuzz_support::{decide_request, fhir_policy, split, text, token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let parts = split(rest, 5);
    let (method, path) = (text(parts[0]), text(parts[1]));
    let status = text(parts[2]).trim().parse::<u32>().unwrap_or(200);
    let tok = token(sel);
    let body = (!parts[4].is_empty()).then_some(parts[4]);
    if let Decision::AllowIfStoredMatches(check) = decide_request(&tok, &method, &path, body) {
        let _ = check_stored(fhir_policy(), &check, status, parts[3]);
    }
});
