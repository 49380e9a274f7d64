//! proxy-wasm glue shared by the filters. Everything here is a host call or its adapter;
//! decisions live in `fapi-guard-core`.

pub mod clock;
pub mod config;
pub mod gauges;
pub mod jwks;
pub mod reply;
pub mod request;
pub mod shared;
pub mod stages;
pub mod stats;
pub mod verify;
