//! The partition step (root id `fapi_guard:partition`; docs/dpop.md, "Replay across replicas",
//! `replay_scope: partitioned`), run alone at the layer in front of an API's replicas (an
//! ingress gateway, or the callers' sidecars). RFC 9449 §11.1 wants a proof used once; each
//! replica's replay cache is its own, so the layer sends every use of one proof to the same
//! replica: its load balancer (`ring_hash` or `maglev`) hashes [`PARTITION_HEADER`], set here
//! from the proof's `(jkt, jti)`, the pair the replica's cache keys on.
//!
//! Never the raw `DPoP` bytes: ECDSA signatures are malleable (`(r, s)` and `(r, n − s)` both
//! verify), so a replay can carry other bytes with the same `(jkt, jti)`. The thumbprint is RFC
//! 7638's, over the key's required members only, so a re-encoded `jwk` (other member order,
//! extra members) keeps it too.
//!
//! It never refuses and verifies no signature: the replica does every check. A proof whose
//! `(jkt, jti)` a client changes to reach another replica is another proof there, and `jkt`
//! and `jti` are covered by the proof's signature and `jkt` by the token's `cnf.jkt` binding,
//! so it fails there. What it parses, it parses as the replica does (the same trim, JWS parser,
//! JWK parser and thumbprint), so every proof a replica can accept gets its key here.

use std::cell::RefCell;
use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::{Action, Exchange, Output};
use crate::b64;
use crate::jose::jws::parse_strict_object;
use crate::jose::{CompactJws, Jwk};

/// Distinct proof headers one worker remembers the thumbprint of.
const HEADER_ENTRIES: usize = 256;

/// Per worker: the RFC 7638 thumbprint of each proof header (its base64url text) that parsed,
/// so the next proof of the same client skips the header's JSON and JWK parse (the point check)
/// and the thumbprint, as the replica's `ProofKeyCache` does. The header text alone decides
/// them, so a cached header gives the key a full parse would. Bounded: at `HEADER_ENTRIES` it
/// starts over.
#[derive(Default)]
pub struct HeaderThumbprints(RefCell<HashMap<String, String>>);

impl HeaderThumbprints {
    fn get_or_parse(&self, header_b64: &str, compact: &str) -> Option<String> {
        if let Some(jkt) = self.0.borrow().get(header_b64) {
            return Some(jkt.clone());
        }
        let jws = CompactJws::parse(compact).ok()?;
        let jkt = Jwk::from_json(jws.header.get("jwk")?)
            .ok()?
            .key
            .thumbprint_s256();
        let mut m = self.0.borrow_mut();
        if m.len() >= HEADER_ENTRIES {
            m.clear();
        }
        m.insert(header_b64.to_string(), jkt.clone());
        Some(jkt)
    }
}

/// The request header the layer's load balancer hashes (its `hash_policy`).
pub const PARTITION_HEADER: &str = "x-fapi-guard-partition";

/// Lower-case hex SHA-256 of `(jkt, jti)`, each length-prefixed (no pair shares a digest
/// input with another), under a label of its own.
pub fn partition_key(jkt: &str, jti: &str) -> String {
    let mut input = b"fapi-guard/partition/v1\0".to_vec();
    for part in [jkt, jti] {
        input.extend_from_slice(&(part.len() as u64).to_be_bytes());
        input.extend_from_slice(part.as_bytes());
    }
    let hex = |n: u8| char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 });
    Sha256::digest(input.as_slice())
        .iter()
        .flat_map(|b| [hex(b >> 4), hex(b & 15)])
        .collect()
}

/// The routing key of the `DPoP` header values, if there is exactly one and it parses as a
/// proof (RFC 9449 §4.2: the header `jwk`, the payload `jti`); nothing else is checked.
fn proof_key(values: &[&str], seen: &HeaderThumbprints) -> Option<String> {
    // RFC 9449 §4.3 step 1: exactly one; the replica refuses none or two.
    let [one] = values else { return None };
    let one = one.trim();
    // RFC 7515 §7.1: three parts, each read as `CompactJws::parse` reads it (the header on a
    // miss; the payload as a strict JSON object and a non-empty signature every time), so
    // whether the header was cached never changes which proofs get a key.
    let mut parts = one.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let jkt = seen.get_or_parse(h, one)?;
    let payload = parse_strict_object(&b64::decode(p)?)?;
    if b64::decode(sig)?.is_empty() {
        return None;
    }
    let jti = payload.get("jti")?.as_str().filter(|j| !j.is_empty())?;
    Some(partition_key(&jkt, jti))
}

/// The request headers: any incoming [`PARTITION_HEADER`] removed (a client never picks the
/// replica), then set from the proof when there is one. Always lets the request go.
pub(super) fn request_headers(x: &dyn Exchange, seen: &HeaderThumbprints) -> Output {
    let all = x.request_headers();
    let values: Vec<&str> = all
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("dpop"))
        .map(|(_, v)| v.as_str())
        .collect();
    let mut out = Output::new(Action::Continue);
    out.request_headers.push((PARTITION_HEADER, None));
    if let Some(key) = proof_key(&values, seen) {
        out.request_headers.push((PARTITION_HEADER, Some(key)));
    }
    out
}
