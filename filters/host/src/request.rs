//! Request and connection views read from the host.

use proxy_wasm::types::MapType;

/// Every request header as (name, value), in order: one host call for all of them.
pub fn all_headers() -> Vec<(String, String)> {
    proxy_wasm::hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default()
}

/// A host attribute as UTF-8 text (e.g. `["connection", "sha256_peer_certificate_digest"]`).
pub fn property_string(path: Vec<&str>) -> Option<String> {
    let bytes = proxy_wasm::hostcalls::get_property(path).ok()??;
    String::from_utf8(bytes).ok()
}
