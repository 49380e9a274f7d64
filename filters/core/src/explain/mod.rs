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

use serde::Serialize;
use serde_json::{Map, Value};

use crate::challenge::{self, Challenge};
use crate::denial::{Reason, Reply, Scheme};
use crate::diagnostics;
use crate::engine::trace::Tracer;
use crate::engine::{
    Action, ChainSteps, Count, Env, Exchange, Level, Pipeline, StepName, StoredAnswer, Worker,
};
use crate::jose::{SignatureVerifier, SoftwareVerifier};
use crate::policy::{KeySource, Policy};
use crate::routes::Requirement;
use crate::shared_store::MemoryStore;

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
    let mut trace = explain_run(policy, req, opts);
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

/// The explainer's view of the host: its clock, the software verifier, in-memory shared
/// data, no counters or log, and the recorder as the trace hook.
struct ExplainEnv<'a> {
    now: i64,
    store: MemoryStore,
    recorder: &'a recorder::Recorder,
}

impl Env for ExplainEnv<'_> {
    type Store = MemoryStore;
    fn now(&self) -> i64 {
        self.now
    }
    fn verifier(&self) -> &dyn SignatureVerifier {
        &SoftwareVerifier
    }
    fn store(&self) -> &MemoryStore {
        &self.store
    }
    fn count(&self, _: StepName, _: Count) {}
    fn log(&self, _: Level, _: &str) {}
    fn tracer(&self) -> Option<&dyn Tracer> {
        Some(self.recorder)
    }
}

/// The request and the upstream's answer as given.
struct ExplainExchange<'a> {
    headers: Vec<(String, String)>,
    body: &'a [u8],
    response: Option<(u32, &'a [u8])>,
}

impl Exchange for ExplainExchange<'_> {
    /// Repeated headers folded into one value joined by `,`, as Envoy's HTTP/1.1 codec does.
    fn request_header(&self, name: &str) -> Option<String> {
        let v = header_values(&self.headers, name);
        (!v.is_empty()).then(|| v.join(","))
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        self.headers.clone()
    }
    fn request_body(&self, max: usize) -> Vec<u8> {
        self.body
            .get(..max.min(self.body.len()))
            .unwrap_or_default()
            .to_vec()
    }
    fn response_header(&self, name: &str) -> Option<String> {
        match (name, self.response) {
            (":status", Some((status, _))) => Some(status.to_string()),
            _ => None,
        }
    }
    fn response_body(&self, max: usize) -> Vec<u8> {
        let body = self.response.map_or(&[][..], |r| r.1);
        body.get(..max.min(body.len())).unwrap_or_default().to_vec()
    }
    fn peer_certificate_sha256(&self) -> Option<String> {
        None
    }
}

/// Which steps run: the chain's names as [`ChainSteps`].
fn chain_steps(filters: &[String]) -> ChainSteps {
    let has = |f: &str| filters.iter().any(|g| g == f);
    ChainSteps {
        token: has("token"),
        dpop: has("dpop"),
        fhir_scope: has("fhir_scope"),
    }
}

fn explain_run(policy: &Policy, req: &Request<'_>, opts: &Options<'_>) -> Trace {
    let filters = chain(policy, &opts.filters);
    let route_label = match crate::path::canonical(req.path) {
        Ok(c) if policy.routes.requirement(req.method, &c) == Requirement::None => "public",
        Ok(_) => "protected",
        Err(_) => "refused",
    };
    let trace = |steps, decoded, answer, notes| Trace {
        api: policy.api_name.clone(),
        filters: filters.clone(),
        route: route_label,
        steps,
        decoded,
        answer,
        notes,
    };
    let too_big = req.headers.iter().any(|(_, v)| v.len() > MAX_INPUT_BYTES)
        || req.body.is_some_and(|b| b.len() > MAX_INPUT_BYTES)
        || opts.response.is_some_and(|r| r.1.len() > MAX_INPUT_BYTES);
    if too_big {
        let r = Reason::MalformedToken;
        let mut steps = Vec::new();
        checks::record(
            &mut steps,
            "token",
            checks::TOKEN_CHECKS,
            Some((r, Some("input too large".into()))),
            0,
        );
        let reply = token_reply(policy, r, None, None, opts.now);
        let answer = reply_answer("token", r, reply, "an input is too large".into());
        let note = format!("an input is larger than {MAX_INPUT_BYTES} bytes: refused unread");
        return trace(steps, vec![], answer, vec![note]);
    }
    let worker = match Worker::new(policy.clone(), chain_steps(&filters)) {
        Ok(w) => w,
        Err(why) => {
            let steps = vec![Step {
                filter: "fhir_scope",
                check: "policy has a `fhir` section",
                spec: "docs/api-owner-guide.md",
                outcome: Outcome::Fail,
                reason: None,
                detail: Some(
                    "the FHIR scope step refuses a policy without `fhir`: Envoy would not load it"
                        .into(),
                ),
            }];
            let answer = Answer {
                forwarded: false,
                status: None,
                reason: None,
                filter: Some("fhir_scope"),
                headers: vec![],
                body: None,
                why: format!("configuration refused: {why}"),
            };
            return trace(steps, vec![], answer, vec![]);
        }
    };
    let mut notes = Vec::new();
    if !filters.iter().any(|f| f == "token") {
        notes.push("no token step in the chain: later steps find no verified token".into());
    }
    // The given JWKS stands in for every `jwks_uri` fetch.
    let mut any_remote = false;
    for (i, iss) in policy.issuers.iter().enumerate() {
        if let KeySource::Remote(r) = &iss.keys {
            any_remote = true;
            match opts.jwks {
                Some(j) => {
                    let _ = worker.ring.borrow_mut().apply_fetch(i, opts.now, Some(200), j);
                }
                None => notes.push(format!(
                    "issuer `{}`: keys come from {} (cluster `{}`); no JWKS given, so they count as never loaded",
                    iss.issuer, r.uri, r.cluster
                )),
            }
        }
    }
    if any_remote && opts.jwks.is_some() {
        notes.push("the given JWKS stands in for every jwks_uri fetch (the filter refetches once on an unknown kid; the answer is the same)".into());
    }
    let scheme = if req.scheme.is_empty() {
        "http"
    } else {
        req.scheme
    };
    let authority = if req.authority.is_empty() {
        "localhost"
    } else {
        req.authority
    };
    let mut headers = vec![
        (":method".to_string(), req.method.to_string()),
        (":path".to_string(), req.path.to_string()),
        (":scheme".to_string(), scheme.to_string()),
        (":authority".to_string(), authority.to_string()),
    ];
    headers.extend(
        req.headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
    );
    let x = ExplainExchange {
        headers,
        body: req.body.unwrap_or_default(),
        response: opts.response,
    };
    let rec = recorder::Recorder::default();
    let env = ExplainEnv {
        now: opts.now,
        store: MemoryStore::new(),
        recorder: &rec,
    };
    let held = drive(&worker, &env, &x, req, opts);
    let mut r = rec.r.into_inner();
    let cert_bound = worker.has(StepName::Dpop)
        && worker.dpop.cert_source == crate::dpop::policy::CertSource::Connection
        && held.1;
    if cert_bound {
        r.notes.insert(0, "a certificate-bound token: the explainer has no TLS connection, so no client certificate".into());
    }
    notes.append(&mut r.notes);
    let answer = answer(&mut r, held.0, req, opts, &worker);
    trace(r.steps, r.decoded, answer, notes)
}

/// Where the pipeline stopped.
enum Stopped {
    /// Every part went on (or a reply ended the stream).
    Through,
    /// Held for a read the explainer does not make (a write's stored resource, a HEAD's GET
    /// without `--response`).
    Read,
}

/// Drives the pipeline over the request (its body at once) and, when forwarded, the given
/// response. Returns where it stopped, and whether the verified token is certificate-bound.
fn drive(
    w: &Worker,
    env: &ExplainEnv<'_>,
    x: &ExplainExchange<'_>,
    req: &Request<'_>,
    opts: &Options<'_>,
) -> (Stopped, bool) {
    let mut p = Pipeline::new();
    let mut out = p.on_request_headers(w, env, x, req.body.is_none());
    let mut body_given = req.body.is_none();
    let stopped = loop {
        match out.action {
            Action::Reply(_) => break Stopped::Through,
            // The given JWKS is what the refetch answers.
            Action::FetchKeys { .. } => out = p.on_keys(w, env, x),
            Action::ReadStored(_) => {
                let head = req.method == "HEAD";
                match opts.response.filter(|_| head) {
                    Some((status, body)) => {
                        let read = || body.to_vec();
                        let answer = StoredAnswer {
                            status: Some(status),
                            body_size: body.len(),
                            body: &read,
                        };
                        out = p.on_stored_answer(w, env, &answer);
                    }
                    None => break Stopped::Read,
                }
            }
            Action::Continue | Action::Hold if !body_given => {
                body_given = true;
                out = p.on_request_body(w, env, x, x.body.len(), true);
            }
            Action::Hold => break Stopped::Read,
            Action::Continue => {
                if let (Some((_, body)), false) = (opts.response, req.method == "HEAD") {
                    let o = p.on_response_headers(w, env, x, body.is_empty());
                    if matches!(o.action, Action::Hold | Action::Continue) && !body.is_empty() {
                        let _ = p.on_response_body(w, env, x, body.len(), true);
                    }
                }
                break Stopped::Through;
            }
        }
    };
    let cert_bound = p.verified_token().is_some_and(|t| t.cnf_x5t_s256.is_some());
    (stopped, cert_bound)
}

/// The answer the proxy gives, from what was recorded.
fn answer(
    r: &mut recorder::Recorded,
    stopped: Stopped,
    req: &Request<'_>,
    opts: &Options<'_>,
    w: &Worker,
) -> Answer {
    if let Some(a) = r.refused.take() {
        return a;
    }
    if let Some(code) = r.shadow_refused {
        r.notes.push(format!(
            "dry run (`mode: shadow`): the proxy counts `shadow_denied.{code}`, logs it with the method, route and client_id, and lets the request pass; later filters still decide, without counting this request again"
        ));
        return forwarded_answer(
            opts,
            format!("dry run: would be refused ({code}); the request goes on"),
        );
    }
    if r.public {
        return forwarded_answer(
            opts,
            "public route: the request goes to the API unchecked".into(),
        );
    }
    let cluster = w
        .fhir()
        .map(|f| f.read_before_write_cluster.clone())
        .unwrap_or_default();
    if let (Stopped::Read, Some(c)) = (&stopped, r.stored_pending.take()) {
        r.steps.push(Step {
            filter: "fhir_scope",
            check: "read before write: the stored resource is in the grant",
            spec: "docs/checks.md §3 (BOLA); docs/checks.md",
            outcome: Outcome::Pending,
            reason: None,
            detail: Some(format!(
                "the filter GETs the stored resource from cluster `{c}` first"
            )),
        });
        return Answer {
            forwarded: false,
            status: None,
            reason: None,
            filter: Some("fhir_scope"),
            headers: vec![],
            body: None,
            why: "held: forwarded only if the stored resource is in the patient's compartment (the explainer does not read it)".into(),
        };
    }
    if r.response_pending {
        let head = req.method == "HEAD";
        r.steps.push(Step {
            filter: "fhir_scope",
            check: recorder::response_label(head),
            spec: "docs/checks.md §3 (BOLA); FHIR R4 compartments",
            outcome: Outcome::Pending,
            reason: None,
            detail: Some("decided on the upstream's response; give --response to check it".into()),
        });
        return Answer {
            forwarded: !head,
            status: None,
            reason: None,
            filter: head.then_some("fhir_scope"),
            headers: vec![],
            body: None,
            why: if head {
                format!("held: the filter GETs the same path from cluster `{cluster}` and forwards the HEAD only if every resource in that answer is in the grant; give --response (the GET's answer) to check it")
            } else {
                "forwarded; the response is held and passed only if every resource in it is in the grant".into()
            },
        };
    }
    let why = match (&r.what, r.response_checked) {
        (Some(what), true) => format!("every check passed, the response too: {what}"),
        (Some(what), false) => format!("every check passed: {what}"),
        (None, _) => "every check passed".into(),
    };
    forwarded_answer(opts, why)
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
