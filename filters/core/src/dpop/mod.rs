//! RFC 9449 DPoP proof checks at a resource server (checklist §2), server nonces (§8/§9),
//! the replay cache rule (§11.1) and RFC 8705 certificate binding. STUB: being written.

pub mod policy;
