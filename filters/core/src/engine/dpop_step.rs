//! The DPoP step (docs/checks.md §2): RFC 9449 proof of possession on every request, server
//! nonces, the shared `jti` replay cache, and RFC 8705 certificate binding, on the token the
//! token step verified (never verified again). Decisions are `crate::dpop::evaluate_cached`.

use super::deny::{self, Refusal};
use super::{trace, Action, Count, Env, Exchange, Flow, Pipeline, StepName, Worker};
use crate::denial::Reason;
use crate::diagnostics;
use crate::dpop::policy::CertSource;
use crate::dpop::replay_store::{self, Claim};
use crate::dpop::{
    evaluate_cached, ClientCert, Denial, DpopRequest, Outcome, ProofRequest, RequestTarget,
};

pub(super) fn decide<E: Env>(p: &mut Pipeline, w: &Worker, env: &E, x: &dyn Exchange) -> Flow {
    // One read of every header (not one per header); `DPoP` may repeat, and every value is
    // kept so §2.1 can refuse two.
    let all = x.request_headers();
    let first = |name: &str| {
        all.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let values = |name: &str| -> Vec<&str> {
        all.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let method = p.method.clone();
    let path = p.raw_path.clone();
    let dpop_headers = values("dpop");
    // docs/checks.md §2.8: forwarded headers are read only when the policy trusts them.
    let trusted = |name: &str| {
        if w.dpop.trust_forwarded_headers {
            first(name)
        } else {
            None
        }
    };
    let target = RequestTarget {
        scheme: first(":scheme").unwrap_or_default(),
        authority: first(":authority").unwrap_or_default(),
        path: &path,
        forwarded_proto: trusted("x-forwarded-proto"),
        forwarded_host: trusted("x-forwarded-host"),
        forwarded_prefix: trusted("x-forwarded-prefix"),
    };
    let token = p.token.clone();
    // The client certificate is read only for certificate-bound tokens, from the one source
    // the policy names.
    let (conn_digest, xfcc) = match token.as_ref().and_then(|t| t.cnf_x5t_s256.as_ref()) {
        None => (None, None),
        Some(_) => match w.dpop.cert_source {
            CertSource::Connection => (x.peer_certificate_sha256(), None),
            CertSource::Xfcc => {
                let v = values("x-forwarded-client-cert");
                (None, (!v.is_empty()).then(|| v.join(",")))
            }
        },
    };
    let req = DpopRequest {
        proof: ProofRequest {
            method: &method,
            target: target.clone(),
            dpop_headers: &dpop_headers,
        },
        client_cert: ClientCert {
            connection_sha256_hex: conn_digest.as_deref(),
            xfcc: xfcc.as_deref(),
        },
    };
    let now = env.now();
    let decision = evaluate_cached(
        &w.policy,
        &w.dpop,
        &req,
        token.as_deref(),
        env.verifier(),
        env.store(),
        &w.budget,
        &w.proof_keys,
        now,
    );
    match decision {
        Ok(Outcome::Public) => {
            env.count(StepName::Dpop, Count::Public);
            Flow::Next
        }
        Ok(Outcome::Accepted { nonce, claim }) => {
            // Whether a proof was checked (an unbound Bearer token needs none when DPoP is
            // not required).
            let proof_checked = token.as_ref().is_some_and(|t| {
                w.dpop.required || t.scheme == crate::scheme::Scheme::Dpop || t.cnf_jkt.is_some()
            });
            trace::dpop_checked(env, dpop_headers.first().copied(), proof_checked, None);
            p.dpop_nonce = nonce;
            match claim {
                // docs/dpop.md "Replay across replicas": the store decides first use.
                Some(digest) => claim_proof(p, w, env, &digest),
                None => {
                    env.count(StepName::Dpop, Count::Allowed);
                    Flow::Next
                }
            }
        }
        Err(denial) => {
            // Safe facts (expected htu, iat against the clock).
            let detail = diagnostics::dpop_detail(
                &w.dpop,
                &method,
                &target,
                dpop_headers.first().copied(),
                denial.reason,
                now,
            );
            trace::dpop_checked(
                env,
                dpop_headers.first().copied(),
                true,
                Some((denial.reason, detail.clone())),
            );
            let reply = diagnostics::with_detail(
                &w.policy,
                denial.reply(&w.policy, &w.dpop),
                denial.reason,
                detail.as_deref(),
            );
            let refusal = Refusal {
                step: StepName::Dpop,
                reason: denial.reason,
                reply,
                detail,
                required_scope: None,
                client: token.as_ref().map(|t| t.client_id.clone()),
                verified: true,
            };
            match deny::refuse(p, w, env, refusal) {
                Action::Continue => Flow::Next,
                a => Flow::Stop(a),
            }
        }
    }
}

/// `replay_scope: api`: holds the request for the store's claim of `digest` under the
/// current lease; without a usable lease the proof cannot be recorded: fail closed.
fn claim_proof<E: Env>(p: &mut Pipeline, w: &Worker, env: &E, digest: &[u8]) -> Flow {
    let Some(store) = w.dpop.replay_store.as_ref() else {
        return Flow::Next;
    };
    match env.replay_lease() {
        Some(lease) => Flow::Stop(Action::ClaimProof(replay_store::claim_call(
            store, digest, lease,
        ))),
        None => match refuse_claim(p, w, env, Reason::DpopReplayStoreUnavailable) {
            Action::Continue => Flow::Next,
            a => Flow::Stop(a),
        },
    }
}

/// The store answered the claim (`None` status: not sent, failed or timed out).
pub(super) fn claim_answered<E: Env>(
    p: &mut Pipeline,
    w: &Worker,
    env: &E,
    status: Option<u32>,
    body: &[u8],
) -> Flow {
    let reason = match replay_store::claim_answer(status, body) {
        Claim::First => {
            env.count(StepName::Dpop, Count::Named("replay_store_claimed"));
            env.count(StepName::Dpop, Count::Allowed);
            return Flow::Next;
        }
        Claim::Claimed => Reason::DpopReplay,
        Claim::Unavailable => Reason::DpopReplayStoreUnavailable,
    };
    match refuse_claim(p, w, env, reason) {
        Action::Continue => Flow::Next,
        a => Flow::Stop(a),
    }
}

fn refuse_claim<E: Env>(p: &mut Pipeline, w: &Worker, env: &E, reason: Reason) -> Action {
    let denial = Denial {
        reason,
        nonce: w
            .dpop
            .nonce
            .as_ref()
            .map(|c| crate::dpop::nonce::issue(c, env.now())),
        retry_after: None,
    };
    let refusal = Refusal {
        step: StepName::Dpop,
        reason,
        reply: denial.reply(&w.policy, &w.dpop),
        detail: None,
        required_scope: None,
        client: p.token.as_ref().map(|t| t.client_id.clone()),
        verified: true,
    };
    deny::refuse(p, w, env, refusal)
}
