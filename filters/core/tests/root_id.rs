//! The chain plugin's root id and step names are exactly those of `filters/registry.json` (the
//! one registry the renderer, the packaging tools and the tests read).
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]

use fapi_guard_core::root_id::{
    filter_for_root_id, ChainSteps, FilterKind, CHAIN_ROOT_ID, PARTITION_ROOT_ID, STEP_NAMES,
};

#[test]
fn chain_root_id_and_steps_match_the_registry() {
    let registry: serde_json::Value =
        serde_json::from_str(include_str!("../../registry.json")).unwrap();
    assert_eq!(registry["module"]["wasm"].as_str(), Some("fapi_guard.wasm"));
    assert_eq!(
        registry["module"]["chain_root_id"].as_str(),
        Some(CHAIN_ROOT_ID)
    );
    assert_eq!(
        filter_for_root_id(Some(CHAIN_ROOT_ID.as_bytes())),
        Ok(FilterKind::Chain(ChainSteps::ALL))
    );
    assert_eq!(
        registry["module"]["partition_root_id"].as_str(),
        Some(PARTITION_ROOT_ID)
    );
    assert_eq!(
        filter_for_root_id(Some(PARTITION_ROOT_ID.as_bytes())),
        Ok(FilterKind::Chain(ChainSteps::PARTITION))
    );
    // The chain's step names are the registry's `envoy` names, in chain order, and each alone
    // is a chain plugin of that one step (`fapi_guard:<step>`).
    let steps = registry["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|f| f["envoy"].as_str().unwrap()).collect();
    assert_eq!(names, STEP_NAMES.map(|(n, _)| n));
    for (name, kind) in STEP_NAMES {
        let Ok(FilterKind::Chain(one)) =
            filter_for_root_id(Some(format!("{CHAIN_ROOT_ID}:{name}").as_bytes()))
        else {
            panic!("{CHAIN_ROOT_ID}:{name} is not a chain plugin");
        };
        assert_eq!(one.kinds(), vec![kind]);
    }
}
