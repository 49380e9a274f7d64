//! FHIR R4 request classification (http.html §3.1.0) and search-parameter parsing.
//! Input: `<method>\n<path with query>`.
#![no_main]
use fapi_guard_core::fhir::{interaction, query};
use fuzz_support::{split, text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 2);
    let (method, path) = (text(parts[0]), text(parts[1]));
    if let Ok(r) = interaction::classify("/fhir", &method, &path) {
        let _ = r.label();
    }
    let q = path.split_once('?').map_or("", |(_, q)| q);
    let _ = query::parse(q);
    let _ = query::parse_strict(q);
    let _ = query::percent_decode(&path);
});
