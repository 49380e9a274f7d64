//! The explainer's driver of the pipeline: an in-memory host (its clock, the software
//! verifier, in-memory shared data, the recorder as trace hook), the request and the
//! upstream's answer as given, and the answer the proxy would give from what was recorded.

use super::{
    chain, checks, forwarded_answer, header_values, recorder, reply_answer, token_reply, Answer,
    Options, Outcome, Request, Step, Trace, MAX_INPUT_BYTES,
};
use crate::denial::Reason;
use crate::engine::trace::Tracer;
use crate::engine::{
    Action, ChainSteps, Count, Env, Exchange, Level, Pipeline, StepName, StoredAnswer, Worker,
};
use crate::jose::{SignatureVerifier, SoftwareVerifier};
use crate::policy::{KeySource, Policy};
use crate::routes::Requirement;
use crate::shared_store::MemoryStore;

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
    /// No store is called: any lease id does (the claim is answered as a first use).
    fn replay_lease(&self) -> Option<i64> {
        Some(0)
    }
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
        partition: false,
    }
}

pub(super) fn explain_run(policy: &Policy, req: &Request<'_>, opts: &Options<'_>) -> Trace {
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
            // The explainer shows one request: its proof's first use across replicas.
            Action::ClaimProof(_) => {
                let first = br#"{"header":{},"succeeded":true}"#;
                out = p.on_claim_answer(w, env, x, Some(200), first);
            }
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
