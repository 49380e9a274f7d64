//! Hands the verified token from the token filter to the filters after it, through Envoy
//! filter state (proxy-wasm `set_property`), which a client cannot set. Envoy keeps it
//! for the stream only.

use std::cell::RefCell;
use std::collections::VecDeque;

use fapi_guard_core::claims::{VerifiedToken, VERIFIED_TOKEN_PROPERTY};

/// Stores the verified token for this stream, already serialised (see
/// `fapi_guard_core::cache::CachedToken`). Returns false if the host refused.
pub fn store_verified_token_bytes(bytes: &[u8]) -> bool {
    proxy_wasm::hostcalls::set_property(vec![VERIFIED_TOKEN_PROPERTY], Some(bytes)).is_ok()
}

/// Hand-offs this worker parsed last, by their exact bytes: a client's requests carry the
/// same token, so its hand-off is parsed once, not on every request. The bytes are the
/// token filter's (filter state, never client input); a hit is an exact byte match.
const PARSED_HANDOFFS: usize = 32;

thread_local! {
    // The Wasm VM of a worker is single-threaded: this is per worker and per filter.
    static PARSED: RefCell<VecDeque<(Vec<u8>, VerifiedToken)>> = const { RefCell::new(VecDeque::new()) };
}

/// The verified token of this stream, if the token filter stored one.
pub fn load_verified_token() -> Option<VerifiedToken> {
    let bytes = proxy_wasm::hostcalls::get_property(vec![VERIFIED_TOKEN_PROPERTY]).ok()??;
    PARSED.with(|cell| {
        let mut parsed = cell.borrow_mut();
        if let Some(pos) = parsed.iter().position(|(b, _)| *b == bytes) {
            let hit = parsed.get(pos).map(|(_, t)| t.clone());
            if pos != 0 {
                if let Some(entry) = parsed.remove(pos) {
                    parsed.push_front(entry);
                }
            }
            return hit;
        }
        let token = VerifiedToken::from_bytes(&bytes)?;
        if parsed.len() >= PARSED_HANDOFFS {
            parsed.pop_back();
        }
        parsed.push_front((bytes, token.clone()));
        Some(token)
    })
}
