//! Encoding for Envoy's `verify_signature` foreign function (Envoy PR #32127):
//! the `VerifySignatureArguments` protobuf (hash function name, DER SubjectPublicKeyInfo,
//! signature, text), with the JWS → DER conversions it needs. Pure bytes, no host calls.
//! STUB: contract fixed, implementation pending.
