//! Hands the verified token from the token filter to the filters after it, through Envoy
//! filter state (proxy-wasm `set_property`), which a client cannot set. Envoy keeps it
//! for the stream only.

use fapi_guard_core::claims::{VerifiedToken, VERIFIED_TOKEN_PROPERTY};

/// Stores the verified token for this stream. Returns false if the host refused.
pub fn store_verified_token(token: &VerifiedToken) -> bool {
    proxy_wasm::hostcalls::set_property(vec![VERIFIED_TOKEN_PROPERTY], Some(&token.to_bytes()))
        .is_ok()
}

/// The verified token of this stream, if the token filter stored one.
pub fn load_verified_token() -> Option<VerifiedToken> {
    let bytes = proxy_wasm::hostcalls::get_property(vec![VERIFIED_TOKEN_PROPERTY]).ok()??;
    VerifiedToken::from_bytes(&bytes)
}
