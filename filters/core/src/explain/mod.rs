//! The pipeline explained, for `fapi-guard explain` and the web page: runs a request through
//! the same pipeline the Wasm filter runs (`crate::engine`), driven in memory (software
//! verifier, in-memory shared data, an empty token cache: a first request), and records every
//! check through the pipeline's trace hook (`recorder.rs`, with the check tables of
//! `checks.rs`): its spec reference, pass or fail, the reason code, and the HTTP answer the
//! proxy would give. Nothing here talks to a network: keys come from the policy or from the
//! JWKS the caller passes (standing in for every `jwks_uri` fetch, the refetch on an unknown
//! `kid` included), and the upstream's answer is the one the caller passes.

mod checks;
mod recorder;
mod run;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::challenge::{self, Challenge};
use crate::denial::{Reason, Reply, Scheme};
use crate::diagnostics;
use crate::policy::Policy;

/// Largest input the explainer reads (policy, token, body, response): bigger is refused
/// with a message, never parsed (the web page stays responsive on a huge paste).
pub const MAX_INPUT_BYTES: usize = 4 * 1024 * 1024;

/// One request to explain.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    /// `:scheme` and `:authority` as the proxy sees them (default `http`, `localhost`).
    pub scheme: &'a str,
    pub authority: &'a str,
    /// Request headers, names case-insensitive.
    pub headers: &'a [(String, String)],
    pub body: Option<&'a [u8]>,
}

/// What else the explainer needs.
#[derive(Debug, Clone, Default)]
pub struct Options<'a> {
    /// Filters in the chain (`token`, `dpop`, `fhir_scope`); empty = every filter the policy
    /// configures (`fhir_scope` only with a `fhir` section).
    pub filters: Vec<String>,
    /// The JWKS answered at every `jwks_uri` (remote issuers); `None`: never fetched.
    pub jwks: Option<&'a [u8]>,
    /// The proxy clock, seconds since the epoch.
    pub now: i64,
    /// The upstream's answer (status, body), for reads decided on the response.
    pub response: Option<(u32, &'a [u8])>,
    /// Show personal identifiers in decoded tokens (`crate::redact`; default: redacted).
    pub show_personal: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    /// Not run (an earlier check refused, or it does not apply).
    Skip,
    /// Decided later (on the response body or a stored read).
    Pending,
}

/// One check of the chain.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub filter: &'static str,
    pub check: &'static str,
    pub spec: &'static str,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A token or proof, decoded for display only.
#[derive(Debug, Clone, Serialize)]
pub struct Decoded {
    pub what: &'static str,
    /// Whether the claims were verified (signature and every check) by the chain.
    pub verified: bool,
    pub note: &'static str,
    pub header: Value,
    pub payload: Value,
}

/// The HTTP answer the proxy would give.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// Whether the request reaches the API (and, with a response, the client gets it).
    pub forwarded: bool,
    /// The status the client sees (the upstream's when forwarded with a response given).
    pub status: Option<u32>,
    pub reason: Option<&'static str>,
    /// Which filter answered.
    pub filter: Option<&'static str>,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub api: String,
    pub filters: Vec<String>,
    pub route: &'static str,
    pub steps: Vec<Step>,
    pub decoded: Vec<Decoded>,
    pub answer: Answer,
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------- the chain

fn header_values<'h>(headers: &'h [(String, String)], name: &str) -> Vec<&'h str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn decoded(what: &'static str, compact: &str, verified: bool) -> Option<Decoded> {
    let (h, p) = diagnostics::decode_unverified(compact)?;
    Some(Decoded {
        what,
        verified,
        note: if verified {
            "decoded for display; the chain verified these claims"
        } else {
            "decoded for display only: NOT verified, do not trust these claims"
        },
        header: Value::Object(h),
        payload: Value::Object(p),
    })
}

fn reply_answer(filter: &'static str, reason: Reason, reply: Reply, why: String) -> Answer {
    Answer {
        forwarded: false,
        status: Some(reply.status),
        reason: Some(reason.code()),
        filter: Some(filter),
        headers: reply.headers,
        body: Some(String::from_utf8_lossy(&reply.body).into_owned()),
        why,
    }
}

/// The filters in the chain: the given ones in the filters' order, else the defaults.
pub fn chain(policy: &Policy, filters: &[String]) -> Vec<String> {
    let order = ["token", "dpop", "fhir_scope"];
    if filters.is_empty() {
        return order
            .iter()
            .filter(|f| **f != "fhir_scope" || policy.fhir.is_some())
            .map(|f| f.to_string())
            .collect();
    }
    order
        .iter()
        .filter(|f| filters.iter().any(|g| g == *f))
        .map(|f| f.to_string())
        .collect()
}

/// Loads a policy exactly as the filters do (`Policy::from_json`, same messages), then
/// explains `req`. `Err` is the policy loader's message.
pub fn explain_json(
    policy_json: &[u8],
    req: &Request<'_>,
    opts: &Options<'_>,
) -> Result<Trace, String> {
    if policy_json.len() > MAX_INPUT_BYTES {
        return Err(format!(
            "policy: larger than {MAX_INPUT_BYTES} bytes, refused unread"
        ));
    }
    let policy = Policy::from_json(policy_json).map_err(|e| e.to_string())?;
    Ok(explain(&policy, req, opts))
}

/// Runs `req` through the chain. In dry-run (`mode: shadow`, policy or route) a refusal is
/// counted and logged by the proxy and the request goes on: the trace shows the decision and
/// says so (a non-canonical path is refused in every mode).
pub fn explain(policy: &Policy, req: &Request<'_>, opts: &Options<'_>) -> Trace {
    let mut trace = run::explain_run(policy, req, opts);
    if !opts.show_personal {
        // Redacted in what is shown only: every decision above read the token as presented.
        let mut names: Vec<String> = Vec::new();
        for d in &mut trace.decoded {
            for n in crate::redact::payload(&mut d.payload) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        if !names.is_empty() {
            trace.notes.push(format!(
                "personal identifiers redacted in the decoded token: {} (show them with --show-personal, or the page's box)",
                names.join(", ")
            ));
        }
    }
    trace
}

fn why(r: Reason, detail: Option<&str>) -> String {
    let meaning = r.meaning().trim().to_string();
    match detail.filter(|d| !d.is_empty()) {
        Some(d) => format!("{}: {meaning} ({d})", r.code()),
        None => format!("{}: {meaning}", r.code()),
    }
}

fn forwarded_answer(opts: &Options<'_>, why: String) -> Answer {
    Answer {
        forwarded: true,
        status: opts.response.map(|r| r.0),
        reason: None,
        filter: None,
        headers: vec![],
        body: None,
        why,
    }
}

/// The token filter's reply: challenge with the scheme used when accepted, else all; the
/// policy's token algs; safe facts in `diagnostics`.
pub fn token_reply(
    policy: &Policy,
    reason: Reason,
    used: Option<Scheme>,
    detail: Option<&str>,
    _now: i64,
) -> Reply {
    challenge::reply(
        policy,
        reason,
        &Challenge {
            detail: detail.map(str::to_string),
            ..Challenge::used(used)
        },
    )
}

/// The decoded claims of a JWS as a JSON object (empty when not decodable).
pub fn claims_of(compact: &str) -> Map<String, Value> {
    diagnostics::decode_unverified(compact)
        .map(|d| d.1)
        .unwrap_or_default()
}
