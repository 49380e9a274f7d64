//! The filter chain as one pure function, for `fapi-guard explain` and the web page: runs a
//! request through the checks in the filters' order (token → DPoP → FHIR scope, then the
//! response check) with the same core functions the filters call, and records a trace:
//! every check with its spec reference, pass or fail, the reason code, and the HTTP answer
//! the proxy would give. Nothing here talks to a network; keys come from the policy or from
//! the JWKS the caller passes (standing in for the `jwks_uri` fetch).
//!
//! Where a filter sequences core calls itself (the token filter: cache → validate → JWKS
//! refetch on an unknown `kid`), this mirrors it: the cache is empty (a first request), and
//! the given JWKS is what the refetch would return, so the answer is the same.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::authz::{AuthzRequest, Mode};
use crate::challenge::{self, Challenge};
use crate::claims::VerifiedToken;
use crate::denial::{Reason, Reply, Scheme};
use crate::diagnostics;
use crate::dpop::{self, ClientCert, DpopRequest, KeyBudget, ProofRequest, RequestTarget};
use crate::fhir::{self, Decision, RequestView};
use crate::jose::{CompactJws, JwsError, SoftwareVerifier};
use crate::jwks_store::KeyRing;
use crate::policy::{KeySource, Policy};
use crate::routes::Requirement;
use crate::shared_store::MemoryStore;
use crate::token::{self, Presented};

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

// ---------------------------------------------------------------- check tables

/// A check and the reasons it can refuse with, in the filter's order.
struct Check {
    name: &'static str,
    spec: &'static str,
    reasons: &'static [Reason],
}

const TOKEN_CHECKS: &[Check] = &[
    Check {
        name: "one Authorization header, allowed scheme, no token in the query",
        spec: "docs/checks.md §1.1; RFC 6750 §2.1, §2.3; FAPI 2.0 §5.3.4",
        reasons: &[
            Reason::TokenInQuery,
            Reason::MissingToken,
            Reason::MultipleAuthorization,
            Reason::SchemeNotAllowed,
        ],
    },
    Check {
        name: "compact JWS: three base64url parts, JSON header and payload, known alg, no unknown crit",
        spec: "RFC 7515 §5.2, §4.1.11; RFC 8725 §3.1",
        reasons: &[Reason::MalformedToken, Reason::UnsupportedCrit],
    },
    Check {
        name: "typ is at+jwt",
        spec: "docs/checks.md §1.2; RFC 9068 §2.1",
        reasons: &[Reason::BadTyp],
    },
    Check {
        name: "alg on the policy's allow-list (never none or HMAC)",
        spec: "docs/checks.md §1.3; RFC 8725 §3.1; FAPI 2.0 §5.4",
        reasons: &[Reason::AlgNotAllowed],
    },
    Check {
        name: "iss is a configured issuer",
        spec: "docs/checks.md §1.5; RFC 9068 §4",
        reasons: &[Reason::UnknownIssuer],
    },
    Check {
        name: "a key of that issuer's JWKS matches kid and alg",
        spec: "docs/checks.md §1.4; RFC 7515 §4.1.4",
        reasons: &[Reason::UnknownKey, Reason::KeysUnavailable],
    },
    Check {
        name: "signature verifies (key fits alg, RSA ≥ 2048 bits)",
        spec: "docs/checks.md §1.4; RFC 7515 §5.2; FAPI 2.0 §5.4",
        reasons: &[Reason::WeakOrMismatchedKey, Reason::BadSignature],
    },
    Check {
        name: "required claims iss, sub, client_id, jti, exp, iat, aud",
        spec: "docs/checks.md §1.8; RFC 9068 §2.2",
        reasons: &[Reason::MissingClaim],
    },
    Check {
        name: "exp, nbf, iat against the proxy clock (with skew)",
        spec: "docs/checks.md §1.7; RFC 9068 §4; RFC 7519 §4.1.4",
        reasons: &[Reason::Expired, Reason::NotYetValid, Reason::IssuedInFuture],
    },
    Check {
        name: "aud contains this API's audience",
        spec: "docs/checks.md §1.6; RFC 9068 §4",
        reasons: &[Reason::WrongAudience, Reason::AudienceNotSole],
    },
    Check {
        name: "a DPoP-bound token is not used as Bearer",
        spec: "docs/checks.md §2.14; RFC 9449 §7.2",
        reasons: &[Reason::BearerDowngrade],
    },
];

const DPOP_CHECKS: &[Check] = &[
    Check {
        name: "a verified token from the token filter",
        spec: "docs/checks.md (filter-state hand-off)",
        reasons: &[Reason::NoVerifiedToken],
    },
    Check {
        name: "sender constraint: DPoP scheme for a DPoP-bound token, bound token where DPoP is required",
        spec: "docs/checks.md §2.14; RFC 9449 §7.2",
        reasons: &[Reason::BearerDowngrade, Reason::TokenNotDpopBound],
    },
    Check {
        name: "client certificate matches cnf.x5t#S256",
        spec: "RFC 8705 §3",
        reasons: &[Reason::MtlsCertMissing, Reason::MtlsThumbprintMismatch],
    },
    Check {
        name: "exactly one DPoP header, a well-formed JWS",
        spec: "docs/checks.md §2.1; RFC 9449 §4.3 steps 1-2",
        reasons: &[Reason::DpopMissing, Reason::DpopMultiple, Reason::DpopMalformed],
    },
    Check {
        name: "required members typ, alg, jwk, jti, htm, htu, iat, ath",
        spec: "docs/checks.md §2.2; RFC 9449 §4.3 step 3, §7.1",
        reasons: &[Reason::DpopMissingMember],
    },
    Check {
        name: "typ is dpop+jwt",
        spec: "docs/checks.md §2.3; RFC 9449 §4.3 step 4",
        reasons: &[Reason::DpopBadTyp],
    },
    Check {
        name: "alg asymmetric and allowed",
        spec: "docs/checks.md §2.4; RFC 9449 §4.3 step 5",
        reasons: &[Reason::DpopAlgNotAllowed],
    },
    Check {
        name: "jwk is a public key that fits alg",
        spec: "docs/checks.md §2.5; RFC 9449 §4.3 step 7",
        reasons: &[Reason::DpopPrivateKey, Reason::DpopBadJwk],
    },
    Check {
        name: "signature verifies with jwk",
        spec: "docs/checks.md §2.6; RFC 9449 §4.3 step 6",
        reasons: &[Reason::DpopBadSignature],
    },
    Check {
        name: "htm is the request method",
        spec: "docs/checks.md §2.7; RFC 9449 §4.3 step 8",
        reasons: &[Reason::DpopHtmMismatch],
    },
    Check {
        name: "htu is the request URI (normalised, no query)",
        spec: "docs/checks.md §2.8; RFC 9449 §4.3 step 9",
        reasons: &[Reason::DpopHtuMismatch],
    },
    Check {
        name: "iat within the acceptance window",
        spec: "docs/checks.md §2.9; RFC 9449 §4.3 step 11, §11.1",
        reasons: &[Reason::DpopIatOutOfWindow],
    },
    Check {
        name: "ath is the hash of the access token",
        spec: "docs/checks.md §2.11; RFC 9449 §4.3 step 12",
        reasons: &[Reason::DpopAthMismatch],
    },
    Check {
        name: "proof key is the token's cnf.jkt",
        spec: "docs/checks.md §2.12; RFC 9449 §6.1",
        reasons: &[Reason::DpopJktMismatch],
    },
    Check {
        name: "server nonce current (when nonces are on)",
        spec: "docs/checks.md §2.13; RFC 9449 §9",
        reasons: &[Reason::DpopNonceRequired],
    },
    Check {
        name: "jti not seen before (replay cache)",
        spec: "docs/checks.md §2.10; RFC 9449 §11.1",
        reasons: &[Reason::DpopReplay, Reason::DpopReplayCacheFull],
    },
];

/// Records `checks` up to the one that refused with `failed` (pass before, skip after).
fn record(
    steps: &mut Vec<Step>,
    filter: &'static str,
    checks: &[Check],
    failed: Option<(Reason, Option<String>)>,
    from: usize,
) {
    let at = failed
        .as_ref()
        .and_then(|(r, _)| checks.iter().position(|c| c.reasons.contains(r)));
    let mut detail = failed.as_ref().and_then(|f| f.1.clone());
    for (i, c) in checks.iter().enumerate().skip(from) {
        let (outcome, reason) = match at {
            Some(a) if i == a => (Outcome::Fail, failed.as_ref().map(|f| f.0.code())),
            Some(a) if i > a => (Outcome::Skip, None),
            _ => (Outcome::Pass, None),
        };
        steps.push(Step {
            filter,
            check: c.name,
            spec: c.spec,
            outcome: outcome.clone(),
            reason,
            detail: if outcome == Outcome::Fail {
                detail.take()
            } else {
                None
            },
        });
    }
    if let (None, Some((r, d))) = (at, failed) {
        // A reason outside the table (should not happen): still shown, never hidden.
        steps.push(Step {
            filter,
            check: "other",
            spec: "docs/checks.md",
            outcome: Outcome::Fail,
            reason: Some(r.code()),
            detail: d,
        });
    }
}

fn skip_all(steps: &mut Vec<Step>, filter: &'static str, checks: &[Check]) {
    for c in checks {
        steps.push(Step {
            filter,
            check: c.name,
            spec: c.spec,
            outcome: Outcome::Skip,
            reason: None,
            detail: None,
        });
    }
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
    let mut trace = explain_enforced(policy, req, opts);
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
    let mode = crate::path::canonical(req.path)
        .ok()
        .map(|c| policy.mode_for(req.method, &c));
    if mode == Some(Mode::Shadow) && !trace.answer.forwarded {
        if let Some(code) = trace.answer.reason {
            trace.notes.push(format!(
                "dry run (`mode: shadow`): the proxy counts `shadow_denied.{code}`, logs it with the method, route and client_id, and lets the request pass; later filters still decide, without counting this request again"
            ));
            trace.answer = forwarded_answer(
                opts,
                format!("dry run: would be refused ({code}); the request goes on"),
            );
        }
    }
    trace
}

// Indexes and slices only the constant check tables (TOKEN_CHECKS, DPOP_CHECKS) at constant
// positions inside their lengths.
#[allow(clippy::indexing_slicing)]
fn explain_enforced(policy: &Policy, req: &Request<'_>, opts: &Options<'_>) -> Trace {
    let filters = chain(policy, &opts.filters);
    let has = |f: &str| filters.iter().any(|g| g == f);
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let mut decoded_list = Vec::new();
    let method = req.method;
    let path = req.path;
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
    let too_big = req.headers.iter().any(|(_, v)| v.len() > MAX_INPUT_BYTES)
        || req.body.is_some_and(|b| b.len() > MAX_INPUT_BYTES)
        || opts.response.is_some_and(|r| r.1.len() > MAX_INPUT_BYTES);
    if too_big {
        notes.push(format!(
            "an input is larger than {MAX_INPUT_BYTES} bytes: refused unread"
        ));
    }
    let auth = header_values(req.headers, "authorization");
    let dpop_values = header_values(req.headers, "dpop");
    let canonical = crate::path::canonical(path);
    let route_label = match &canonical {
        Ok(c) if policy.routes.requirement(method, c) == Requirement::None => "public",
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

    // Every filter first: the one canonical path (docs/checks.md, "Path canonicalisation").
    let canonical = match canonical {
        Ok(c) => c,
        Err(f) => {
            let r = f.reason();
            steps.push(Step {
                filter: "all",
                check: "canonical path (every filter, every route)",
                spec: "docs/checks.md (Path canonicalisation), RFC 3986 §5.2.4",
                outcome: Outcome::Fail,
                reason: Some(r.code()),
                detail: Some(f.detail().into()),
            });
            let tok = auth.first().and_then(|a| diagnostics::token_of(a));
            let detail = diagnostics::token_detail(policy, tok, r, opts.now);
            let reply = token_reply(policy, r, None, detail.as_deref(), opts.now);
            let answer = reply_answer("token", r, reply, why(r, Some(f.detail())));
            return trace(steps, decoded_list, answer, notes);
        }
    };
    steps.push(Step {
        filter: "all",
        check: "canonical path (every filter, every route)",
        spec: "docs/checks.md (Path canonicalisation), RFC 3986 §5.2.4",
        outcome: Outcome::Pass,
        reason: None,
        detail: None,
    });
    // Then no method override the server executes (`Policy::route`; docs/checks.md "Reading
    // the request as the server does").
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let has_header = |n: &str| !header_values(req.headers, n).is_empty();
    if policy.server().profile().overrides(&has_header, query) {
        let f = crate::policy::RequestFault::MethodOverride;
        let r = f.reason();
        steps.push(Step {
            filter: "all",
            check: "method override (every filter, every route)",
            spec: "docs/checks.md (Reading the request as the server does), RFC 9110 §9.1",
            outcome: Outcome::Fail,
            reason: Some(r.code()),
            detail: Some(f.detail().into()),
        });
        let reply = token_reply(policy, r, None, None, opts.now);
        let answer = reply_answer("token", r, reply, why(r, Some(f.detail())));
        return trace(steps, decoded_list, answer, notes);
    }

    // Every filter skips public routes (routes[], first match wins).
    if policy.routes.requirement(method, &canonical) == Requirement::None {
        steps.push(Step {
            filter: "all",
            check: "route requirement (routes[], first match wins)",
            spec: "docs/checks.md (routes)",
            outcome: Outcome::Pass,
            reason: None,
            detail: Some("public route: no token needed; no filter checks anything".into()),
        });
        let answer = forwarded_answer(
            opts,
            "public route: the request goes to the API unchecked".into(),
        );
        return trace(steps, decoded_list, answer, notes);
    }
    // `unmatched: deny` (docs/checks.md §4): the token filter refuses a path no rule lists
    // before it reads the token.
    if has("token") && policy.unlisted(&policy.routes.lookup(method, &canonical)) {
        let r = Reason::RouteNotListed;
        steps.push(Step {
            filter: "token",
            check: "route requirement (routes[], first match wins)",
            spec: "docs/checks.md §4 (unmatched)",
            outcome: Outcome::Fail,
            reason: Some(r.code()),
            detail: Some("no routes[] rule matches and the policy says `unmatched: deny`".into()),
        });
        let reply = token_reply(policy, r, None, None, opts.now);
        let answer = reply_answer("token", r, reply, why(r, None));
        return trace(steps, decoded_list, answer, notes);
    }
    steps.push(Step {
        filter: "all",
        check: "route requirement (routes[], first match wins)",
        spec: "docs/checks.md (routes)",
        outcome: Outcome::Pass,
        reason: None,
        detail: Some("protected route: a valid access token is needed".into()),
    });

    // ---------------- token filter (filters/token): extract → cache (empty) → validate
    let mut verified: Option<VerifiedToken> = None;
    if has("token") {
        if too_big {
            let r = Reason::MalformedToken;
            record(
                &mut steps,
                "token",
                TOKEN_CHECKS,
                Some((r, Some("input too large".into()))),
                0,
            );
            let reply = token_reply(policy, r, None, None, opts.now);
            let answer = reply_answer("token", r, reply, "an input is too large".into());
            return trace(steps, decoded_list, answer, notes);
        }
        let auth_owned: Vec<String> = if auth.is_empty() {
            Vec::new()
        } else {
            // Envoy folds repeated headers into one value joined by `,`.
            vec![auth.join(",")]
        };
        let presented = match token::extract(policy, &auth_owned, path) {
            Ok(p) => p,
            Err(r) => {
                let used = auth_owned.first().and_then(|a| diagnostics::scheme_of(a));
                let detail = diagnostics::token_detail(policy, None, r, opts.now);
                // Every refusal of extract (also the token68 syntax) is the first check.
                push_fail(&mut steps, "token", &TOKEN_CHECKS[0], r, detail.clone());
                skip_all(&mut steps, "token", &TOKEN_CHECKS[1..]);
                let reply = token_reply(policy, r, used, detail.as_deref(), opts.now);
                let answer = reply_answer("token", r, reply, why(r, detail.as_deref()));
                return trace(steps, decoded_list, answer, notes);
            }
        };
        let tok = presented.token.to_string();
        let mut ring = KeyRing::new(policy);
        let mut any_remote = false;
        for (i, iss) in policy.issuers.iter().enumerate() {
            if let KeySource::Remote(r) = &iss.keys {
                any_remote = true;
                match opts.jwks {
                    Some(j) => {
                        let _ = ring.apply_fetch(i, opts.now, Some(200), j);
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
        let result = token::validate(
            policy,
            &ring,
            &SoftwareVerifier,
            Presented {
                scheme: presented.scheme,
                token: &tok,
            },
            opts.now,
        );
        match result {
            Ok(v) => {
                record(&mut steps, "token", TOKEN_CHECKS, None, 0);
                if let Some(d) = decoded("access token", &tok, true) {
                    decoded_list.push(d);
                }
                // The matching route's `authz` (docs/checks.md §4), on the verified token.
                let route = policy.routes.lookup(method, &canonical);
                if let Some(az) = route.authz {
                    let header = |name: &str| -> Option<String> {
                        let v = header_values(req.headers, name);
                        (!v.is_empty()).then(|| v.join(","))
                    };
                    let areq = AuthzRequest {
                        path_params: &route.params,
                        header: &header,
                    };
                    if let Err(d) = az.evaluate(&areq, &v) {
                        steps.push(Step {
                            filter: "token",
                            check: "route authz (scopes, claims, authorization_details, bindings)",
                            spec: "docs/checks.md §4, RFC 6750 §3.1, RFC 9396",
                            outcome: Outcome::Fail,
                            reason: Some(d.reason.code()),
                            detail: Some(d.detail.clone()),
                        });
                        let reply = challenge::reply(
                            policy,
                            d.reason,
                            &Challenge {
                                required_scope: d.required_scope.clone(),
                                detail: Some(d.detail.clone()),
                                ..Challenge::used(Some(presented.scheme))
                            },
                        );
                        let answer =
                            reply_answer("token", d.reason, reply, why(d.reason, Some(&d.detail)));
                        return trace(steps, decoded_list, answer, notes);
                    }
                    steps.push(Step {
                        filter: "token",
                        check: "route authz (scopes, claims, authorization_details, bindings)",
                        spec: "docs/checks.md §4, RFC 6750 §3.1, RFC 9396",
                        outcome: Outcome::Pass,
                        reason: None,
                        detail: None,
                    });
                }
                verified = Some(v);
            }
            Err(r) => {
                let detail = diagnostics::token_detail(policy, Some(&tok), r, opts.now);
                let at_parse = matches!(CompactJws::parse(&tok), Err(JwsError::BadAlg))
                    && r == Reason::AlgNotAllowed;
                let missing_iss = r == Reason::MissingClaim
                    && diagnostics::decode_unverified(&tok)
                        .is_some_and(|(_, p)| !p.get("iss").is_some_and(Value::is_string));
                if at_parse {
                    // An unknown or forbidden `alg` is refused while parsing.
                    record(&mut steps, "token", &TOKEN_CHECKS[..1], None, 0);
                    push_fail(&mut steps, "token", &TOKEN_CHECKS[1], r, detail.clone());
                    skip_all(&mut steps, "token", &TOKEN_CHECKS[2..]);
                } else if missing_iss {
                    record(&mut steps, "token", &TOKEN_CHECKS[..4], None, 0);
                    push_fail(&mut steps, "token", &TOKEN_CHECKS[4], r, detail.clone());
                    skip_all(&mut steps, "token", &TOKEN_CHECKS[5..]);
                } else {
                    record(
                        &mut steps,
                        "token",
                        TOKEN_CHECKS,
                        Some((r, detail.clone())),
                        0,
                    );
                }
                if let Some(d) = decoded("access token", &tok, false) {
                    decoded_list.push(d);
                }
                let reply = token_reply(
                    policy,
                    r,
                    Some(presented.scheme),
                    detail.as_deref(),
                    opts.now,
                );
                let answer = reply_answer("token", r, reply, why(r, detail.as_deref()));
                return trace(steps, decoded_list, answer, notes);
            }
        }
    } else {
        notes.push("no token filter in the chain: later filters find no verified token".into());
    }

    // ---------------- DPoP filter (filters/dpop): evaluate
    if has("dpop") {
        let dp = policy.dpop.clone().unwrap_or_default();
        let target = RequestTarget {
            scheme,
            authority,
            path,
            forwarded_proto: None,
            forwarded_host: None,
            forwarded_prefix: None,
        };
        let fwd: Vec<Option<&str>> = [
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-prefix",
        ]
        .iter()
        .map(|n| header_values(req.headers, n).first().copied())
        .collect();
        let target = if dp.trust_forwarded_headers {
            RequestTarget {
                forwarded_proto: fwd.first().copied().flatten(),
                forwarded_host: fwd.get(1).copied().flatten(),
                forwarded_prefix: fwd.get(2).copied().flatten(),
                ..target
            }
        } else {
            target
        };
        let xfcc = header_values(req.headers, "x-forwarded-client-cert").join(",");
        let client_cert = match dp.cert_source {
            dpop::policy::CertSource::Xfcc if !xfcc.is_empty() => ClientCert {
                connection_sha256_hex: None,
                xfcc: Some(&xfcc),
            },
            _ => ClientCert::default(),
        };
        if verified.as_ref().is_some_and(|t| t.cnf_x5t_s256.is_some())
            && dp.cert_source == dpop::policy::CertSource::Connection
        {
            notes.push("a certificate-bound token: the explainer has no TLS connection, so no client certificate".into());
        }
        let dreq = DpopRequest {
            proof: ProofRequest {
                method,
                target: target.clone(),
                dpop_headers: &dpop_values,
            },
            client_cert,
        };
        let store = MemoryStore::new();
        match dpop::evaluate(
            policy,
            &dp,
            &dreq,
            verified.as_ref(),
            &SoftwareVerifier,
            &store,
            &KeyBudget::new(),
            opts.now,
        ) {
            Ok(_) => {
                let proof_checked = verified.as_ref().is_some_and(|t| {
                    dp.required || t.scheme == Scheme::Dpop || t.cnf_jkt.is_some()
                });
                if proof_checked {
                    record(&mut steps, "dpop", DPOP_CHECKS, None, 0);
                } else {
                    record(&mut steps, "dpop", &DPOP_CHECKS[..3], None, 0);
                    for c in &DPOP_CHECKS[3..] {
                        steps.push(Step {
                            filter: "dpop",
                            check: c.name,
                            spec: c.spec,
                            outcome: Outcome::Skip,
                            reason: None,
                            detail: Some(
                                "no proof needed: unbound Bearer token and dpop.required is false"
                                    .into(),
                            ),
                        });
                    }
                }
                notes.push("replay: this is the first use of the proof's jti; the same proof again is refused with dpop_replay".into());
                if let Some(p) = dpop_values.first() {
                    if let Some(d) = decoded("DPoP proof", p, proof_checked) {
                        decoded_list.push(d);
                    }
                }
            }
            Err(denial) => {
                let r = denial.reason;
                let detail = diagnostics::dpop_detail(
                    &dp,
                    method,
                    &target,
                    dpop_values.first().copied(),
                    r,
                    opts.now,
                );
                record(
                    &mut steps,
                    "dpop",
                    DPOP_CHECKS,
                    Some((r, detail.clone())),
                    0,
                );
                if let Some(p) = dpop_values.first() {
                    if let Some(d) = decoded("DPoP proof", p, false) {
                        decoded_list.push(d);
                    }
                }
                let reply = diagnostics::with_detail(
                    policy,
                    denial.reply(policy, &dp),
                    r,
                    detail.as_deref(),
                );
                let answer = reply_answer("dpop", r, reply, why(r, detail.as_deref()));
                return trace(steps, decoded_list, answer, notes);
            }
        }
    }

    // ---------------- FHIR scope filter (filters/fhir-scope): decide → response check
    if has("fhir_scope") {
        let Some(fp) = policy.fhir.as_ref() else {
            steps.push(Step {
                filter: "fhir_scope",
                check: "policy has a `fhir` section",
                spec: "docs/api-owner-guide.md",
                outcome: Outcome::Fail,
                reason: None,
                detail: Some("the FHIR scope filter refuses a policy without `fhir`: Envoy would not load it".into()),
            });
            let answer = Answer {
                forwarded: false,
                status: None,
                reason: None,
                filter: Some("fhir_scope"),
                headers: vec![],
                body: None,
                why:
                    "configuration refused: policy field `fhir`: required by the FHIR scope filter"
                        .into(),
            };
            return trace(steps, decoded_list, answer, notes);
        };
        if !canonical.is_plain() {
            // FHIR types, ids and operations never need percent-encoding (docs/checks.md).
            let r = Reason::UnknownFhirRequest;
            let detail = "percent-encoded path segment".to_string();
            steps.push(fstep(
                "FHIR request (classify)",
                "FHIR R4 http.html",
                Outcome::Fail,
                Some(r),
                Some(detail.clone()),
            ));
            let reply = challenge::reply(
                policy,
                r,
                &Challenge {
                    detail: Some(detail.clone()),
                    ..Challenge::used(verified.as_ref().map(|t| t.scheme))
                },
            );
            let answer = reply_answer("fhir_scope", r, reply, why(r, Some(&detail)));
            return trace(steps, decoded_list, answer, notes);
        }
        let fhir_path = canonical.path_with_query();
        let path = fhir_path.as_str();
        let if_none_exist = header_values(req.headers, "if-none-exist").first().copied();
        let view = RequestView {
            method,
            path_with_query: path,
            if_none_exist,
            content_type: header_values(req.headers, "content-type").first().copied(),
            body: None,
        };
        let mut d = fhir::decide(fp, verified.as_ref(), &view);
        let mut used_body = false;
        if d == Decision::NeedBody {
            // The filter buffers the body and decides again (no body: an empty one).
            used_body = true;
            let body = req.body.unwrap_or(&[]);
            if body.len() > fp.max_request_body_bytes {
                d = Decision::Deny(fhir::Denial {
                    reason: Reason::RequestTooLarge,
                    required_scope: None,
                    detail: String::new(),
                });
            } else {
                d = fhir::decide(
                    fp,
                    verified.as_ref(),
                    &RequestView {
                        body: Some(body),
                        ..view
                    },
                );
                if d == Decision::NeedBody {
                    d = Decision::Deny(fhir::Denial {
                        reason: Reason::UnknownFhirRequest,
                        required_scope: None,
                        detail: String::new(),
                    });
                }
            }
        }
        let what = match fhir::interaction::classify(&fp.base_path, method, path) {
            Ok(r) => format!(
                "{} {}",
                r.label(),
                r.resource_type.as_deref().unwrap_or("*")
            ),
            Err(e) => format!("not a FHIR request under `{}`: {e}", fp.base_path),
        };
        let spec = "docs/checks.md §3; SMART App Launch v2.2 §scopes; FHIR R4 §3.1.0, compartments";
        let fhir_deny = |reason: Reason, required_scope: Option<String>, detail: Option<String>| {
            challenge::reply(
                policy,
                reason,
                &Challenge {
                    required_scope,
                    detail: detail.filter(|d| !d.is_empty()),
                    ..Challenge::used(verified.as_ref().map(|t| t.scheme))
                },
            )
        };
        match d {
            Decision::Allow => {
                steps.push(fstep(
                    "scopes and compartment for the interaction",
                    spec,
                    Outcome::Pass,
                    None,
                    Some(format!(
                        "{what}{}",
                        if used_body {
                            " (decided on the request body)"
                        } else {
                            ""
                        }
                    )),
                ));
                let answer = forwarded_answer(opts, format!("every check passed: {what}"));
                return trace(steps, decoded_list, answer, notes);
            }
            Decision::Deny(den) => {
                steps.push(fstep(
                    "scopes and compartment for the interaction",
                    spec,
                    Outcome::Fail,
                    Some(den.reason),
                    Some(if den.detail.is_empty() {
                        what.clone()
                    } else {
                        den.detail.clone()
                    }),
                ));
                let reply = fhir_deny(
                    den.reason,
                    den.required_scope.clone(),
                    Some(den.detail.clone()),
                );
                let why_s = match &den.required_scope {
                    Some(s) => format!("{}: needs scope `{s}`", den.reason.code()),
                    None => why(den.reason, Some(&den.detail)),
                };
                let answer = reply_answer("fhir_scope", den.reason, reply, why_s);
                return trace(steps, decoded_list, answer, notes);
            }
            Decision::AllowIfStoredMatches(_) => {
                steps.push(fstep(
                    "scopes for the interaction",
                    spec,
                    Outcome::Pass,
                    None,
                    Some(what.clone()),
                ));
                steps.push(fstep(
                    "read before write: the stored resource is in the grant",
                    "docs/checks.md §3 (BOLA); docs/checks.md",
                    Outcome::Pending,
                    None,
                    Some(format!(
                        "the filter GETs the stored resource from cluster `{}` first",
                        fp.read_before_write_cluster
                    )),
                ));
                let answer = Answer {
                    forwarded: false,
                    status: None,
                    reason: None,
                    filter: Some("fhir_scope"),
                    headers: vec![],
                    body: None,
                    why: "held: forwarded only if the stored resource is in the patient's compartment (the explainer does not read it)".into(),
                };
                return trace(steps, decoded_list, answer, notes);
            }
            Decision::AllowIfResponseMatches(check) | Decision::AllowIfReadMatches(check) => {
                steps.push(fstep(
                    "scopes for the interaction",
                    spec,
                    Outcome::Pass,
                    None,
                    Some(what.clone()),
                ));
                // RFC 9110 §9.3.2: a HEAD is decided on the answer to the GET it mirrors,
                // which the filter sends first; `--response` is that GET's answer.
                let head = method == "HEAD";
                let label = if head {
                    "HEAD: the GET it mirrors answers with resources in the grant / compartment"
                } else {
                    "response body: every resource in the grant / compartment"
                };
                let rspec = "docs/checks.md §3 (BOLA); FHIR R4 compartments";
                match opts.response {
                    None => {
                        steps.push(fstep(
                            label,
                            rspec,
                            Outcome::Pending,
                            None,
                            Some(
                                "decided on the upstream's response; give --response to check it"
                                    .into(),
                            ),
                        ));
                        let answer = Answer {
                            forwarded: !head,
                            status: None,
                            reason: None,
                            filter: head.then_some("fhir_scope"),
                            headers: vec![],
                            body: None,
                            why: if head {
                                format!("held: the filter GETs the same path from cluster `{}` and forwards the HEAD only if every resource in that answer is in the grant; give --response (the GET's answer) to check it", fp.read_before_write_cluster)
                            } else {
                                "forwarded; the response is held and passed only if every resource in it is in the grant".into()
                            },
                        };
                        return trace(steps, decoded_list, answer, notes);
                    }
                    Some((status, body)) => match fhir::check_response(fp, &check, status, body) {
                        Ok(()) => {
                            steps.push(fstep(label, rspec, Outcome::Pass, None, None));
                            let answer = forwarded_answer(
                                opts,
                                format!("every check passed, the response too: {what}"),
                            );
                            return trace(steps, decoded_list, answer, notes);
                        }
                        Err(r) => {
                            let detail = format!("{what}: the response holds a resource outside the granted scopes or the patient's compartment");
                            steps.push(fstep(
                                label,
                                rspec,
                                Outcome::Fail,
                                Some(r),
                                Some(detail.clone()),
                            ));
                            let reply = fhir_deny(r, None, Some(detail.clone()));
                            let answer = reply_answer("fhir_scope", r, reply, format!("{}: {detail}; the whole response is replaced (Istio: see docs/api-owner-guide.md)", r.code()));
                            return trace(steps, decoded_list, answer, notes);
                        }
                    },
                }
            }
            Decision::NeedBody => {}
        }
    }
    let answer = forwarded_answer(opts, "every check passed".into());
    trace(steps, decoded_list, answer, notes)
}

fn fstep(
    check: &'static str,
    spec: &'static str,
    outcome: Outcome,
    reason: Option<Reason>,
    detail: Option<String>,
) -> Step {
    Step {
        filter: "fhir_scope",
        check,
        spec,
        outcome,
        reason: reason.map(Reason::code),
        detail,
    }
}

fn push_fail(
    steps: &mut Vec<Step>,
    filter: &'static str,
    c: &Check,
    r: Reason,
    detail: Option<String>,
) {
    steps.push(Step {
        filter,
        check: c.name,
        spec: c.spec,
        outcome: Outcome::Fail,
        reason: Some(r.code()),
        detail,
    });
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
