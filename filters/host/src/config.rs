//! Policy loading at `on_configure`. A policy that fails to compile is logged with the
//! field it names, and `on_configure` returns false so Envoy refuses the configuration
//! (fail closed: the listener does not serve with a broken policy).

use fapi_guard_core::policy::Policy;
use proxy_wasm::types::LogLevel;

/// Parses the plugin configuration as a policy, logging why not.
pub fn load_policy(configuration: Option<Vec<u8>>) -> Option<Policy> {
    let Some(bytes) = configuration else {
        log("no policy configured (plugin configuration is empty)");
        return None;
    };
    match fapi_guard_policy_load::from_json(&bytes) {
        Ok(p) => {
            let _ = proxy_wasm::hostcalls::log(
                LogLevel::Info,
                &format!("fapi_guard: policy for api `{}` loaded", p.api_name),
            );
            Some(p)
        }
        Err(e) => {
            log(&format!("refusing configuration: {e}"));
            None
        }
    }
}

fn log(msg: &str) {
    let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("fapi_guard: {msg}"));
}
