//! JWS compact serialisation parsing (RFC 7515 §7.1) of a token or proof.
#![no_main]
use fapi_guard_core::jose::{CompactJws, RawJws};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(jws) = CompactJws::parse(&s) {
        let _ = jws.header_str("kid");
        let _ = jws.header_str("typ");
    }
    let _ = RawJws::parse(&s);
});
