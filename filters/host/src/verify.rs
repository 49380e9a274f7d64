//! `SignatureVerifier` over Envoy's `verify_signature` foreign function, with a pure-Rust
//! fallback. STUB: being written.
