//! JOSE building blocks: algorithms, JWS compact parsing, JWKs and thumbprints, and
//! signature verification behind one interface (pure Rust here; the host's
//! `verify_signature` foreign function is adapted in the `fapi-guard-host` crate).

pub mod alg;
pub mod host_args;
pub mod jwk;
pub mod jws;
pub mod public_key;
pub mod rsa;
pub mod verifier_choice;
pub mod verify;

pub use alg::Alg;
pub use jwk::{Jwk, Jwks};
pub use jws::{CompactJws, JwsError, RawJws};
pub use public_key::PublicKey;
pub use verify::{SignatureVerifier, SoftwareVerifier, VerifyError};
