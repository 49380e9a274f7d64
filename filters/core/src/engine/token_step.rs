//! The token step (docs/checks.md §1, §4): `unmatched: deny`, the one access token of the
//! request, its validation through the verified-token cache and the issuers' keys
//! ([`crate::token_flow`]: an unknown `kid` holds the request while the keys are fetched),
//! then the route's `authz` on the verified token.

use super::deny::{self, Refusal};
use super::{trace, Action, Count, Env, Exchange, Flow, Pipeline, StepName, Worker};
use crate::authz::AuthzDenial;
use crate::cache::CachedToken;
use crate::challenge::{self, Challenge};
use crate::denial::Reason;
use crate::diagnostics;
use crate::jwks_store::KeyRing;
use crate::scheme::Scheme;
use crate::shadow;
use crate::shared_store::SharedStore;
use crate::token::{self, Presented};
use crate::token_flow::{self, Checked, KeyFetcher, TokenWorker};

/// The token step's state for one request.
#[derive(Default)]
pub(super) struct State {
    /// The token being checked, kept while the request waits for keys.
    presented: Option<(Scheme, String)>,
}

/// The request headers reach the token step.
pub(super) fn start<E: Env>(p: &mut Pipeline, w: &Worker, env: &E, x: &dyn Exchange) -> Flow {
    // `unmatched: deny` (docs/checks.md §4): a path no rule lists is refused before the token
    // is read; in dry run it is counted and the token is still checked.
    if p.route.as_ref().is_some_and(|r| r.unlisted) {
        let token = authorization_token(x);
        // No token facts in this reply: the token was not read.
        let reply = challenge::reply(
            &w.policy,
            Reason::RouteNotListed,
            &Challenge {
                detail: diagnostics::token_detail(
                    &w.policy,
                    None,
                    Reason::RouteNotListed,
                    env.now(),
                ),
                ..Challenge::used(None)
            },
        );
        let refusal = Refusal {
            step: StepName::Token,
            reason: Reason::RouteNotListed,
            reply,
            detail: None,
            required_scope: None,
            client: token.as_deref().and_then(shadow::client_id_of),
            verified: false,
        };
        if let a @ Action::Reply(_) = deny::refuse(p, w, env, refusal) {
            return Flow::Stop(a);
        }
    }
    decide(p, w, env, x, true)
}

/// The token of the request's `Authorization` header, for safe facts and the dry-run line.
fn authorization_token(x: &dyn Exchange) -> Option<String> {
    x.request_header("authorization")
        .and_then(|a| diagnostics::token_of(&a).map(str::to_string))
}

/// The keys of another worker, and the refetch, for [`token_flow::check`]: the fetch itself
/// is the driver's ([`super::Action::FetchKeys`]).
struct Keys<'a, S: SharedStore> {
    w: &'a Worker,
    store: &'a S,
}

impl<S: SharedStore> KeyFetcher for Keys<'_, S> {
    fn sync_shared(&self, _ring: &std::cell::RefCell<KeyRing>) {
        self.w.sync_shared_keys(self.store);
    }

    fn start_fetch(&self, index: usize, now: i64) -> bool {
        self.w.begin_fetch(self.store, index, now)
    }
}

/// Validates the token (`allow_refetch`: an unknown `kid` may fetch keys once).
pub(super) fn decide<E: Env>(
    p: &mut Pipeline,
    w: &Worker,
    env: &E,
    x: &dyn Exchange,
    allow_refetch: bool,
) -> Flow {
    let (scheme, token_str) = match p.tok.presented.take() {
        Some(held) => held,
        None => {
            // Envoy folds a repeated `Authorization` into one value (`extract` refuses it).
            let auth: Vec<String> = x.request_header("authorization").into_iter().collect();
            match token::extract(&w.policy, &auth, &p.raw_path) {
                Ok(t) => (t.scheme, t.token.to_string()),
                Err(r) => {
                    let token = authorization_token(x);
                    let detail =
                        diagnostics::token_detail(&w.policy, token.as_deref(), r, env.now());
                    trace::token_extract_refused(env, r, detail);
                    let used = token::scheme_named(&auth);
                    return refused(p, w, env, r, used, None, token.as_deref());
                }
            }
        }
    };
    let presented = Presented {
        scheme,
        token: &token_str,
    };
    let now = env.now();
    let worker = TokenWorker {
        policy: &w.policy,
        ring: &w.ring,
        cache: &w.cache,
        verifier: env.verifier(),
    };
    let keys = Keys {
        w,
        store: env.store(),
    };
    let route = p.route.as_ref();
    let header = |name: &str| x.request_header(name);
    // The sequence (cache, binding, validation, keys from other workers, refetch) is
    // `token_flow::check`; the route's `authz` then reads the verified token.
    let checked = token_flow::check(
        &worker,
        &keys,
        presented,
        now,
        allow_refetch,
        &mut || env.count(StepName::Token, Count::CacheHit),
        &mut |t: &CachedToken, scheme| {
            let token = t.for_scheme(scheme);
            let authz = match route {
                Some(r) => w.policy.authorize_route(r, &header, &token),
                None => Ok(()),
            };
            (token, authz)
        },
    );
    match checked {
        Checked::Accepted((token, authz)) => {
            trace::token_checked(env, &token_str, None);
            p.token = Some(token.clone());
            match authz {
                Ok(()) => {
                    // Shown only for a route that has an `authz` (the trace's check list).
                    let rule = p.route.as_ref().and_then(|r| r.rule);
                    trace::authz_passed(env, || {
                        rule.is_some_and(|i| w.policy.routes.authz_of(i).is_some())
                    });
                    env.count(StepName::Token, Count::Allowed);
                    Flow::Next
                }
                Err(d) => {
                    trace::authz(env, Some(&d));
                    refused(
                        p,
                        w,
                        env,
                        d.reason,
                        Some(scheme),
                        Some(&d),
                        Some(&token_str),
                    )
                }
            }
        }
        Checked::Denied(r, scheme) => {
            let detail = diagnostics::token_detail(&w.policy, Some(&token_str), r, now);
            trace::token_checked(env, &token_str, Some((r, detail)));
            refused(p, w, env, r, Some(scheme), None, Some(&token_str))
        }
        Checked::WaitForKeys { issuer } => {
            p.tok.presented = Some((scheme, token_str));
            Flow::Stop(Action::FetchKeys { issuer })
        }
    }
}

/// A refusal by the token step. `token`: the presented token (its safe facts, and its
/// `client_id` for the dry-run line); `authz`: the route's `authz` refused the verified token.
fn refused<E: Env>(
    p: &mut Pipeline,
    w: &Worker,
    env: &E,
    reason: Reason,
    used: Option<Scheme>,
    authz: Option<&AuthzDenial>,
    token: Option<&str>,
) -> Flow {
    let detail = match authz {
        Some(a) => Some(a.detail.clone()),
        None => diagnostics::token_detail(&w.policy, token, reason, env.now()),
    };
    let reply = challenge::reply(
        &w.policy,
        reason,
        &Challenge {
            required_scope: authz.and_then(|a| a.required_scope.clone()),
            detail: detail.clone(),
            ..Challenge::used(used)
        },
    );
    let refusal = Refusal {
        step: StepName::Token,
        reason,
        reply,
        detail,
        required_scope: authz.and_then(|a| a.required_scope.clone()),
        client: token.and_then(shadow::client_id_of),
        verified: authz.is_some(),
    };
    match deny::refuse(p, w, env, refusal) {
        Action::Continue => Flow::Next,
        a => Flow::Stop(a),
    }
}
