//! Hands the verified token from the token filter to the filters after it, through Envoy
//! filter state (proxy-wasm `set_property`), which a client cannot set. Envoy keeps it
//! for the stream only.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use fapi_guard_core::claims::{VerifiedToken, VERIFIED_TOKEN_PROPERTY};

/// Stores the verified token for this stream, already serialised (see
/// `fapi_guard_core::cache::CachedToken`). Returns false if the host refused. In the chain
/// plugin (`crate::chain`) the token stays in memory for the steps after this one: no
/// filter-state write (nothing else reads it; docs/checks.md "One module").
pub fn store_verified_token_bytes(bytes: &[u8]) -> bool {
    if crate::chain::in_chain() {
        let t = crate::stages::now();
        let parsed = parse_cached(bytes.to_vec());
        crate::stages::add("handoff_store", t);
        return crate::chain::store_token(parsed).unwrap_or(false);
    }
    proxy_wasm::hostcalls::set_property(vec![VERIFIED_TOKEN_PROPERTY], Some(bytes)).is_ok()
}

/// Hand-offs this worker parsed, by their exact bytes: a client's requests carry the same
/// token, so its hand-off is parsed once per worker, not on every request. The bytes are the
/// token filter's (filter state, never client input); a hit is an exact byte match. Bounded:
/// at `PARSED_HANDOFFS` it starts over (a miss costs one JSON parse, as without it).
const PARSED_HANDOFFS: usize = 256;
/// Bytes of the hand-off that pick its bucket: they hold the token's SHA-256
/// (`{"dpop_scheme":..,"token_sha256":"..."`), so tokens differ there.
const PREFIX: usize = 96;

type Parsed = HashMap<Vec<u8>, Vec<(Vec<u8>, Rc<VerifiedToken>)>>;

thread_local! {
    // The Wasm VM of a worker is single-threaded: this is per worker and per filter.
    static PARSED: RefCell<(usize, Parsed)> = RefCell::new((0, HashMap::new()));
}

/// The verified token of this stream, if the token filter stored one (in the chain plugin:
/// the one its token step handed on in memory).
pub fn load_verified_token() -> Option<VerifiedToken> {
    load_verified_token_shared().map(|t| (*t).clone())
}

/// [`load_verified_token`] without a copy: the worker's parsed hand-off itself.
pub fn load_verified_token_shared() -> Option<Rc<VerifiedToken>> {
    let t = crate::stages::now();
    let out = load_uncounted();
    crate::stages::add("handoff_load", t);
    out
}

fn load_uncounted() -> Option<Rc<VerifiedToken>> {
    if let Some(in_memory) = crate::chain::load_token() {
        return in_memory;
    }
    let bytes = proxy_wasm::hostcalls::get_property(vec![VERIFIED_TOKEN_PROPERTY]).ok()??;
    parse_cached(bytes)
}

/// The parsed token of these hand-off bytes, from the worker's cache when seen before.
fn parse_cached(bytes: Vec<u8>) -> Option<Rc<VerifiedToken>> {
    let prefix = bytes.get(..PREFIX).unwrap_or(&bytes).to_vec();
    PARSED.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (count, parsed) = &mut *cell;
        if let Some(hit) = parsed
            .get(&prefix)
            .and_then(|v| v.iter().find(|(b, _)| *b == bytes))
        {
            return Some(hit.1.clone());
        }
        let token = Rc::new(VerifiedToken::from_bytes(&bytes)?);
        if *count >= PARSED_HANDOFFS {
            parsed.clear();
            *count = 0;
        }
        *count += 1;
        parsed
            .entry(prefix)
            .or_default()
            .push((bytes, token.clone()));
        Some(token)
    })
}
