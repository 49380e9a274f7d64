//! proxy-wasm shared data as a `fapi_guard_core::shared_store::SharedStore`: one key-value
//! store for every worker thread of this VM id, with compare-and-swap versions.

use fapi_guard_core::shared_store::{SharedStore, StoreError};
use proxy_wasm::types::Status;

pub struct HostSharedData;

impl SharedStore for HostSharedData {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        let t = crate::stages::now();
        let out = proxy_wasm::hostcalls::get_shared_data(key).unwrap_or((None, None));
        crate::stages::add("shared_get", t);
        out
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let t = crate::stages::now();
        let out = proxy_wasm::hostcalls::set_shared_data(key, Some(value), cas);
        crate::stages::add("shared_set", t);
        match out {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Failed),
        }
    }
}
