//! Sends a replay-store call (`dpop::replay_store::StoreCall`: a claim from a stream, a lease
//! grant from the root) with `dispatch_http_call` on the store's cluster.

use std::time::Duration;

use fapi_guard_core::engine::StoreCall;
use proxy_wasm::traits::Context;
use proxy_wasm::types::LogLevel;

/// The call token, or `None` when the host refused to send it (unknown cluster...).
pub fn send(ctx: &dyn Context, call: &StoreCall) -> Option<u32> {
    let headers: Vec<(&str, &str)> = call
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let timeout = Duration::from_millis(call.timeout_ms);
    match ctx.dispatch_http_call(&call.cluster, headers, Some(&call.body), vec![], timeout) {
        Ok(token) => Some(token),
        Err(e) => {
            let _ = proxy_wasm::hostcalls::log(
                LogLevel::Warn,
                &format!(
                    "fapi_guard.dpop: replay store call could not be sent (cluster `{}`): {e:?}",
                    call.cluster
                ),
            );
            None
        }
    }
}
