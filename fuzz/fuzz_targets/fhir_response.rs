//! Response checks (docs/checks.md §3: reads and searches decided on the upstream answer). The
//! request is decided first; when it asks for a response check, the fuzzed body is checked.
//! Input: `<selector byte><method>\n<path with query>\n<status>\n<response body>`.
#![no_main]
use fapi_guard_core::fhir::{check_response, Decision};
use fuzz_support::{decide_request, fhir_policy, split, text, token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let parts = split(rest, 4);
    let (method, path) = (text(parts[0]), text(parts[1]));
    let status = text(parts[2]).trim().parse::<u32>().unwrap_or(200);
    let tok = token(sel);
    if let Decision::AllowIfResponseMatches(check) = decide_request(&tok, &method, &path, None) {
        let _ = check_response(fhir_policy(), &check, status, parts[3]);
    }
});
