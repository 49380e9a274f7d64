//! Policy documents: any bytes load to a policy or to an error naming a field, never a panic.
#![no_main]
use fapi_guard_core::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Policy::from_json(data) {
        if let Ok(c) = fapi_guard_core::path::canonical("/fhir/Patient/anna") {
            let _ = p.routes.requirement("GET", &c);
            let _ = p.mode_for("GET", &c);
        }
    }
    let _ = fapi_guard_core::fhir::policy::FhirPolicy::from_section_json(data);
});
