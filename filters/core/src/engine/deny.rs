//! A refusal by a step: counted, logged (one line with the stable reason code, never token
//! content) and answered with the reply `crate::denial` renders; in dry run (`mode: shadow`,
//! docs/checks.md §4) only the first refusal of a request is counted and logged
//! (`shadow_denied.<reason>`, `crate::shadow`), and the stream goes on.

use super::{trace, Action, Count, Env, Level, Pipeline, StepName, Worker};
use crate::authz::Mode;
use crate::challenge::{self, Challenge};
use crate::denial::{Reason, Reply};
use crate::diagnostics;
use crate::policy::RequestFault;
use crate::shadow::{self, ShadowRequest};

/// One refusal, as a step decided it.
pub(super) struct Refusal {
    pub step: StepName,
    pub reason: Reason,
    pub reply: Reply,
    /// Safe facts shown with it (docs/reason-codes.md).
    pub detail: Option<String>,
    pub required_scope: Option<String>,
    /// For the dry-run line: the token's `client_id`, and whether that token verified.
    pub client: Option<String>,
    pub verified: bool,
}

/// The reply to a request refused before any step (non-canonical path, method override):
/// the token step's challenge, every scheme the API accepts.
pub(super) fn request_fault_reply<E: Env>(w: &Worker, env: &E, f: &RequestFault) -> Refusal {
    let reason = f.reason();
    // No token facts: the token is not read before the request is routed.
    let detail = diagnostics::token_detail(&w.policy, None, reason, env.now());
    let reply = challenge::reply(
        &w.policy,
        reason,
        &Challenge {
            detail: detail.clone(),
            ..Challenge::used(None)
        },
    );
    Refusal {
        step: w.first_step(),
        reason,
        reply,
        detail: Some(f.detail().to_string()),
        required_scope: None,
        client: None,
        verified: false,
    }
}

/// Enforce: the reply, and the stream ends. Shadow: `Continue`.
pub(super) fn refuse<E: Env>(p: &mut Pipeline, w: &Worker, env: &E, r: Refusal) -> Action {
    trace::refused(
        env,
        (r.step, r.reason, &r.reply),
        (r.detail.as_deref(), r.required_scope.as_deref()),
        p.mode,
    );
    p.audit.refused(
        r.step,
        r.reason,
        p.mode == Mode::Shadow,
        r.client.as_deref(),
    );
    match p.mode {
        Mode::Enforce => {
            env.count(r.step, Count::Denied(r.reason));
            // A 503: the guard could not decide; an operator should look.
            let level = if r.reply.status == 503 {
                Level::Warn
            } else {
                Level::Info
            };
            env.log(
                level,
                &format!(
                    "fapi_guard.{}: denied reason={} status={}",
                    r.step.as_str(),
                    r.reason.code(),
                    r.reply.status
                ),
            );
            p.ended = true;
            Action::Reply(r.reply)
        }
        Mode::Shadow => {
            // Later refusals of the same request follow from the first (e.g. no verified
            // token after a token refusal): not counted again.
            if !p.shadow_refused {
                p.shadow_refused = true;
                env.count(r.step, Count::ShadowDenied(r.reason));
                let rule = p.route.as_ref().and_then(|r| r.rule);
                let who = ShadowRequest {
                    method: p.method.clone(),
                    route: w.policy.route_label(rule).to_string(),
                    client_id: r.client,
                    verified: r.verified,
                };
                env.log(
                    Level::Info,
                    &shadow::log_line(r.step.as_str(), r.reason, &who),
                );
            }
            Action::Continue
        }
    }
}
