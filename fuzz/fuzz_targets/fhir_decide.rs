//! The FHIR scope filter's request decision (docs/checks.md §3) for a token chosen by the first
//! byte (bit 0x10: a JSON body, else a form).
//! Input: `<selector byte><method>\n<path with query>\n<If-None-Exist>\n<body>`.
#![no_main]
use fapi_guard_core::fhir::decide::{decide, RequestView};
use fuzz_support::{fhir_policy, split, text, token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let parts = split(rest, 4);
    let (method, path, ine) = (text(parts[0]), text(parts[1]), text(parts[2]));
    let req = RequestView {
        method: &method,
        path_with_query: &path,
        if_none_exist: (!ine.is_empty()).then_some(ine.as_str()),
        content_type: Some(if sel & 0x10 == 0 {
            "application/x-www-form-urlencoded"
        } else {
            "application/fhir+json"
        }),
        body: (sel & 0x08 == 0).then_some(parts[3]),
    };
    let tok = token(sel);
    let _ = decide(fhir_policy(), Some(&tok), &req);
    if sel & 0x04 != 0 {
        let _ = decide(fhir_policy(), None, &req);
    }
});
