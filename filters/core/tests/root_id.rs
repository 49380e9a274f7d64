//! The root ids the one module attaches are exactly those of `filters/registry.json` (the one
//! registry the renderer, the packaging tools and the tests read).
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]

use fapi_guard_core::root_id::{filter_for_root_id, FilterKind, ROOT_IDS};

#[test]
fn root_ids_match_the_registry() {
    let registry: serde_json::Value =
        serde_json::from_str(include_str!("../../registry.json")).unwrap();
    let filters = registry["filters"].as_array().unwrap();
    assert_eq!(filters.len(), ROOT_IDS.len());
    for (f, (id, kind)) in filters.iter().zip(ROOT_IDS) {
        assert_eq!(f["root_id"].as_str(), Some(id));
        let want = match f["envoy"].as_str().unwrap() {
            "token" => FilterKind::Token,
            "dpop" => FilterKind::Dpop,
            "fhir_scope" => FilterKind::FhirScope,
            other => panic!("registry names a filter the module does not hold: {other}"),
        };
        assert_eq!(kind, want);
        assert_eq!(filter_for_root_id(Some(id.as_bytes())), Ok(want));
    }
    assert_eq!(registry["module"]["wasm"].as_str(), Some("fapi_guard.wasm"));
}
