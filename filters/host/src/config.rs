//! Policy loading at `on_configure`. A policy that fails to compile is logged with the
//! field it names, and `on_configure` returns false so Envoy refuses the configuration
//! (fail closed: the listener does not serve with a broken policy).

use std::rc::Rc;

use fapi_guard_core::policy::Policy;
use proxy_wasm::types::LogLevel;

/// Parses the plugin configuration as a policy, logging why not.
pub fn load_policy(filter: &str, configuration: Option<Vec<u8>>) -> Option<Rc<Policy>> {
    let Some(bytes) = configuration else {
        log(
            filter,
            "no policy configured (plugin configuration is empty)",
        );
        return None;
    };
    match fapi_guard_policy_load::from_json(&bytes) {
        Ok(p) => {
            let _ = proxy_wasm::hostcalls::log(
                LogLevel::Info,
                &format!(
                    "fapi_guard.{filter}: policy for api `{}` loaded",
                    p.api_name
                ),
            );
            Some(Rc::new(p))
        }
        Err(e) => {
            log(filter, &format!("refusing configuration: {e}"));
            None
        }
    }
}

fn log(filter: &str, msg: &str) {
    let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("fapi_guard.{filter}: {msg}"));
}
