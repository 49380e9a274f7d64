//! Request and connection views read from the host.

use proxy_wasm::types::MapType;

/// All values of a request header (name lower-case), in order. Envoy keeps repeated
/// headers as separate entries.
pub fn header_values(name: &str) -> Vec<String> {
    proxy_wasm::hostcalls::get_map(MapType::HttpRequestHeaders)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// Every request header as (name, value), in order: one host call for all of them.
pub fn all_headers() -> Vec<(String, String)> {
    proxy_wasm::hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default()
}

/// A single request header (first value).
pub fn header(name: &str) -> Option<String> {
    proxy_wasm::hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

/// A host attribute as UTF-8 text (e.g. `["connection", "sha256_peer_certificate_digest"]`).
pub fn property_string(path: Vec<&str>) -> Option<String> {
    let bytes = proxy_wasm::hostcalls::get_property(path).ok()??;
    String::from_utf8(bytes).ok()
}
