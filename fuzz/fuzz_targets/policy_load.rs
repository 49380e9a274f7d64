//! Policy documents: any bytes load to a policy or to an error naming a field, never a panic.
#![no_main]
use fapi_guard_core::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Policy::from_json(data) {
        let _ = p.routes.requirement("GET", "/fhir/Patient/anna");
    }
    let _ = fapi_guard_core::fhir::policy::FhirPolicy::from_section_json(data);
});
