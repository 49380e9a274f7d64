//! `x-forwarded-client-cert` parsing (RFC 8705 §3 binding via the Envoy XFCC header).
#![no_main]
use fapi_guard_core::dpop::mtls;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mtls::xfcc_first_hash(&String::from_utf8_lossy(data));
});
