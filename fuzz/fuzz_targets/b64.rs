//! base64url (RFC 7515 §2): strict decoding never panics and is canonical (decode-encode is
//! the identity on what it accepts).
#![no_main]
use fapi_guard_core::b64;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Some(bytes) = b64::decode(&s) {
        assert_eq!(b64::encode(&bytes), s, "non-canonical base64url accepted");
    }
    let enc = b64::encode(data);
    assert_eq!(b64::decode(&enc).as_deref(), Some(data));
});
