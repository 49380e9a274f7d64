//! The root ids the one module attaches are exactly those of `filters/registry.json` (the one
//! registry the renderer, the packaging tools and the tests read).
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]

use fapi_guard_core::root_id::{
    filter_for_root_id, ChainSteps, FilterKind, CHAIN_ROOT_ID, ROOT_IDS, STEP_NAMES,
};

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
    // The chain plugin: one root id, not a filter of its own, never one of the three.
    assert_eq!(
        registry["module"]["chain_root_id"].as_str(),
        Some(CHAIN_ROOT_ID)
    );
    assert_eq!(
        filter_for_root_id(Some(CHAIN_ROOT_ID.as_bytes())),
        Ok(FilterKind::Chain(ChainSteps::ALL))
    );
    // The chain's step names are the registry's `envoy` names, in chain order.
    let names: Vec<&str> = filters
        .iter()
        .map(|f| f["envoy"].as_str().unwrap())
        .collect();
    assert_eq!(names, STEP_NAMES.map(|(n, _)| n));
    assert!(ROOT_IDS.iter().all(|(id, _)| *id != CHAIN_ROOT_ID));
}
