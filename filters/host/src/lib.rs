//! proxy-wasm glue shared by the filters. Everything here is a host call or its adapter;
//! decisions live in `fapi-guard-core`.

pub mod verify;
