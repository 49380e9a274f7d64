//! `replay_scope: api` (docs/dpop.md, "Replay across replicas"): one proof, one use across
//! every replica of an API (RFC 9449 §11.1). After the local replay cache accepted a proof,
//! the pipeline claims its digest in a store all replicas share, here etcd v3's HTTP/JSON
//! gateway: one atomic insert-if-absent (`/v3/kv/txn`, compare `create_revision == 0`, then
//! put), whose `succeeded` says first use. The key expires with a lease covering the `iat`
//! window; the root grants one lease per period and every claim of that period uses it.
//! Anything else (no lease yet, no answer in time, an error) fails closed.
//!
//! The key is the digest of `(jkt, jti)` ([`super::replay::JtiDigest`]), never the `DPoP`
//! bytes: an ECDSA signature re-encoded as `(r, n − s)` is another valid proof with the
//! same key and `jti`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::policy::dpop::{DpopPolicy, ReplayStore};

/// An HTTP call to the store (POST, JSON body), sent by the driver on `cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCall {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// What the store said about a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This proof's first use anywhere: recorded.
    First,
    /// Another use (on any replica) recorded it first: a replay.
    Claimed,
    /// No answer, an error or an answer this code does not know: fail closed.
    Unavailable,
}

/// A lease the root holds: its id and when it expires (proxy clock, seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub expires_at: i64,
}

/// Seconds a key must live: every `iat` the proof check accepts, from now on.
pub fn window(dpop: &DpopPolicy) -> i64 {
    dpop.iat_past.saturating_add(dpop.iat_future)
}

/// Seconds between lease grants; a lease lives `window + 2 × LEASE_PERIOD`.
pub const LEASE_PERIOD: i64 = 30;

/// The TTL of each granted lease.
pub fn lease_ttl(dpop: &DpopPolicy) -> i64 {
    window(dpop).saturating_add(2 * LEASE_PERIOD)
}

impl Lease {
    /// Usable for a claim at `now`: it outlives every `iat` accepted now (1 s margin).
    pub fn usable(&self, dpop: &DpopPolicy, now: i64) -> bool {
        now.saturating_add(window(dpop)).saturating_add(1) < self.expires_at
    }

    /// Time to grant the next one (one period before it stops being usable).
    pub fn renew_due(&self, dpop: &DpopPolicy, now: i64) -> bool {
        !self.usable(dpop, now.saturating_add(LEASE_PERIOD))
    }
}

fn post(store: &ReplayStore, path: &str, body: String) -> StoreCall {
    StoreCall {
        cluster: store.cluster.clone(),
        headers: vec![
            (":method".into(), "POST".into()),
            (":path".into(), path.into()),
            (":authority".into(), store.cluster.clone()),
            ("content-type".into(), "application/json".into()),
        ],
        body: body.into_bytes(),
        timeout_ms: store.timeout_ms,
    }
}

/// The atomic insert-if-absent of `digest` under `lease` (etcd `KV.Txn`: compare the key's
/// `create_revision` with 0, i.e. absent; then put). Bytes are standard base64 in etcd's JSON.
pub fn claim_call(store: &ReplayStore, digest: &[u8], lease: i64) -> StoreCall {
    let mut key = store.key_prefix.clone().into_bytes();
    for b in digest {
        key.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    let key = STANDARD.encode(&key);
    post(
        store,
        "/v3/kv/txn",
        format!(
            r#"{{"compare":[{{"key":"{key}","target":"CREATE","result":"EQUAL","create_revision":"0"}}],"success":[{{"requestPut":{{"key":"{key}","value":"MQ==","lease":"{lease}"}}}}]}}"#
        ),
    )
}

/// The answer to [`claim_call`]: 200 with the txn response (`header` present); `succeeded`
/// is `true` on first use and left out when false (proto3 JSON omits defaults).
pub fn claim_answer(status: Option<u32>, body: &[u8]) -> Claim {
    if status != Some(200) {
        return Claim::Unavailable;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Claim::Unavailable;
    };
    if !v.get("header").is_some_and(|h| h.is_object()) || v.get("error").is_some() {
        return Claim::Unavailable;
    }
    match v.get("succeeded") {
        Some(serde_json::Value::Bool(true)) => Claim::First,
        None | Some(serde_json::Value::Bool(false)) => Claim::Claimed,
        Some(_) => Claim::Unavailable,
    }
}

/// Whether a claim's answer says the store no longer knows the lease it named (etcd's
/// `ErrGRPCLeaseNotFound`, gRPC code 5, e.g. after the store lost its data): the driver
/// drops its lease so the next tick grants a new one, instead of failing closed until the
/// lease would have been renewed.
pub fn lease_lost(status: Option<u32>, body: &[u8]) -> bool {
    status.is_some_and(|s| s != 200)
        && serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("code").and_then(serde_json::Value::as_i64))
            == Some(5)
}

/// A lease grant (etcd `Lease.LeaseGrant`).
pub fn lease_call(store: &ReplayStore, dpop: &DpopPolicy) -> StoreCall {
    post(
        store,
        "/v3/lease/grant",
        format!(r#"{{"TTL":"{}"}}"#, lease_ttl(dpop)),
    )
}

/// The lease a grant answered (`ID` and `TTL` are int64, written as JSON strings), expiring
/// `TTL` seconds after `sent_at` (when the grant was sent: never later than the store's).
pub fn lease_answer(status: Option<u32>, body: &[u8], sent_at: i64) -> Option<Lease> {
    if status != Some(200) {
        return None;
    }
    let v = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let int = |name: &str| -> Option<i64> {
        match v.get(name)? {
            serde_json::Value::String(s) => s.parse().ok(),
            n => n.as_i64(),
        }
    };
    let id = int("ID").filter(|id| *id != 0)?;
    let ttl = int("TTL").filter(|t| *t > 0)?;
    Some(Lease {
        id,
        expires_at: sent_at.saturating_add(ttl),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> ReplayStore {
        ReplayStore {
            cluster: "etcd".into(),
            kind: crate::policy::dpop::StoreKind::Etcd,
            key_prefix: "p/".into(),
            timeout_ms: 100,
        }
    }

    #[test]
    fn claim_is_a_compare_create_then_put_under_the_lease() {
        let call = claim_call(&store(), &[0xab, 0x01], 42);
        let body = String::from_utf8(call.body).unwrap_or_default();
        let key = STANDARD.encode(b"p/ab01");
        assert!(body.contains(&format!(r#""key":"{key}","target":"CREATE""#)));
        assert!(body.contains(r#""create_revision":"0""#));
        assert!(body.contains(r#""lease":"42""#));
        assert_eq!(call.cluster, "etcd");
    }

    #[test]
    fn answers_first_claimed_or_unavailable() {
        let first = br#"{"header":{"revision":"5"},"succeeded":true,"responses":[]}"#;
        assert_eq!(claim_answer(Some(200), first), Claim::First);
        let again = br#"{"header":{"revision":"5"}}"#;
        assert_eq!(claim_answer(Some(200), again), Claim::Claimed);
        let no_lease = br#"{"error":"etcdserver: requested lease not found","code":5}"#;
        assert_eq!(claim_answer(Some(200), no_lease), Claim::Unavailable);
        assert_eq!(claim_answer(Some(404), no_lease), Claim::Unavailable);
        assert_eq!(claim_answer(None, b""), Claim::Unavailable);
        assert_eq!(claim_answer(Some(200), b"<html>"), Claim::Unavailable);
        assert_eq!(claim_answer(Some(200), b"{}"), Claim::Unavailable);
        assert!(lease_lost(Some(404), no_lease));
        assert!(!lease_lost(Some(200), again));
        assert!(!lease_lost(None, b""));
        assert!(!lease_lost(Some(503), b"upstream connect error"));
    }

    #[test]
    fn lease_lives_past_every_accepted_iat() {
        let dpop = DpopPolicy::default();
        let l = lease_answer(Some(200), br#"{"header":{},"ID":"7","TTL":"130"}"#, 1000);
        assert_eq!(
            l,
            Some(Lease {
                id: 7,
                expires_at: 1130
            })
        );
        let l = l.unwrap_or(Lease {
            id: 0,
            expires_at: 0,
        });
        assert_eq!(lease_ttl(&dpop), 130);
        // Usable while now + 70 s (the iat window) + 1 s margin < 1130.
        assert!(l.usable(&dpop, 1058));
        assert!(!l.usable(&dpop, 1059));
        assert!(!l.renew_due(&dpop, 1028));
        assert!(l.renew_due(&dpop, 1029));
        assert_eq!(lease_answer(Some(500), b"{}", 0), None);
        assert_eq!(lease_answer(Some(200), br#"{"ID":"0","TTL":"5"}"#, 0), None);
    }
}
