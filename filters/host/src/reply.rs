//! Sends a local reply rendered by `fapi_guard_core::denial` (the pipeline counted and logged
//! the refusal).

use fapi_guard_core::denial::Reply;

/// Sends `reply` as the local response; the stream ends here.
pub fn send(reply: &Reply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let _ = proxy_wasm::hostcalls::send_http_response(reply.status, headers, Some(&reply.body));
}
