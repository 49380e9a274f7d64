//! Decision logic of the FAPI 2.0 resource-server filters.
//!
//! Every check is a pure function of (compiled policy, request view, now) and returns a
//! decision; the proxy-wasm crates only translate host calls. Spec references point at
//! `docs/checks.md` (§1 token, §2 DPoP, §3 SMART scopes, §4 per-route authz) and the RFCs.

pub mod audit_policy;
pub mod authz;
pub mod b64;
pub mod cache;
pub mod challenge;
pub mod claims;
pub mod cors;
pub mod denial;
pub mod describe;
pub mod diagnostics;
pub mod dpop;
pub mod engine;
pub mod error;
pub mod explain;
pub mod fhir;
pub mod jose;
pub mod json_locate;
pub mod jwks_limits;
pub mod jwks_store;
pub mod objects_only;
pub mod path;
pub mod policy;
pub mod reason_doc;
pub mod redact;
pub mod root_id;
pub mod routes;
pub mod scheme;
pub mod shadow;
pub mod shared_store;
pub mod token;
pub mod token_flow;
pub mod uri;
