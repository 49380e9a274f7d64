//! Denials that explain themselves: the `diagnostics` facts of an `OperationOutcome`
//! (`docs/reason-codes.md`, "Diagnostics"). Only facts that are safe to show the caller:
//! values from the policy (audience, issuers, allowed algs, expected `htu`), the proxy's
//! clock against the token's or proof's time claims, and the key id the token names.
//! Never a token, a proof, a claim value other than those, or patient data.

use serde_json::{Map, Value};

use crate::denial::{Reason, Reply, Scheme};
use crate::dpop::htu::{normalise_path, Origin, RequestTarget};
use crate::dpop::DpopPolicy;
use crate::jose::Alg;
use crate::policy::Policy;

/// Decodes the (unverified) header and payload of a compact JWS, for facts and display only.
pub fn decode_unverified(compact: &str) -> Option<(Map<String, Value>, Map<String, Value>)> {
    let mut parts = compact.trim().split('.');
    let h = crate::b64::decode(parts.next()?)?;
    let p = crate::b64::decode(parts.next()?)?;
    let header = serde_json::from_slice::<Map<String, Value>>(&h).ok()?;
    let payload = serde_json::from_slice::<Map<String, Value>>(&p).ok()?;
    Some((header, payload))
}

fn num(m: &Map<String, Value>, name: &str) -> Option<i64> {
    let v = m.get(name)?;
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

/// A key id is shown only when it looks like one (no token material, bounded length).
fn safe_kid(kid: &str) -> Option<&str> {
    let ok = !kid.is_empty()
        && kid.len() <= 128
        && kid
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:+/=@".contains(&c));
    ok.then_some(kid)
}

fn algs(list: &[Alg]) -> String {
    list.iter().map(|a| a.name()).collect::<Vec<_>>().join(" ")
}

fn relative(t: i64, now: i64) -> String {
    let d = t.saturating_sub(now);
    if d >= 0 {
        format!("{d} s after")
    } else {
        format!("{} s before", d.unsigned_abs())
    }
}

/// The token in an `Authorization` value (`DPoP x` / `Bearer x`), if any.
pub fn token_of(authorization: &str) -> Option<&str> {
    let (_, rest) = authorization.split_once(' ')?;
    let t = rest.trim();
    (!t.is_empty()).then_some(t)
}

/// Safe facts for a token-filter refusal (docs/checks.md §1). `token` is the presented token.
pub fn token_detail(
    policy: &Policy,
    token: Option<&str>,
    reason: Reason,
    now: i64,
) -> Option<String> {
    let decoded = token.and_then(decode_unverified);
    let header = decoded.as_ref().map(|d| &d.0);
    let payload = decoded.as_ref().map(|d| &d.1);
    let skew = i64::try_from(policy.token.skew_seconds).unwrap_or(i64::MAX);
    match reason {
        Reason::MissingToken => Some(format!(
            "send `Authorization: {} <access token>`",
            if policy.token.allow_dpop {
                "DPoP"
            } else {
                "Bearer"
            }
        )),
        Reason::TokenInQuery => Some(
            "send the token in the Authorization header, never in the query (RFC 6750 §2.3)".into(),
        ),
        Reason::SchemeNotAllowed => Some(format!(
            "this API accepts the schemes: {}",
            schemes(policy)
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Reason::BadTyp => Some("the JWS header `typ` must be `at+jwt` (RFC 9068 §2.1)".into()),
        Reason::AlgNotAllowed => Some(format!("allowed algs: {}", algs(&policy.token.algs))),
        Reason::UnknownIssuer => Some(format!(
            "configured issuers: {}",
            policy
                .issuers
                .iter()
                .map(|i| i.issuer.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Reason::UnknownKey => {
            let kid = header
                .and_then(|h| h.get("kid"))
                .and_then(Value::as_str)
                .and_then(safe_kid);
            Some(match kid {
                Some(k) => {
                    format!("no key with kid `{k}` (and the token's alg) in the issuer's JWKS")
                }
                None => "no key for the token's alg in the issuer's JWKS (the token names no kid)"
                    .into(),
            })
        }
        Reason::KeysUnavailable => {
            Some("the issuer's JWKS has not been loaded yet (jwks_uri through jwks_cluster)".into())
        }
        Reason::Expired => payload.and_then(|p| num(p, "exp")).map(|exp| {
            format!(
                "exp {exp} is {} the proxy clock {now} (skew {skew} s)",
                relative(exp, now)
            )
        }),
        Reason::NotYetValid => payload.and_then(|p| num(p, "nbf")).map(|nbf| {
            format!(
                "nbf {nbf} is {} the proxy clock {now} (skew {skew} s)",
                relative(nbf, now)
            )
        }),
        Reason::IssuedInFuture => payload.and_then(|p| num(p, "iat")).map(|iat| {
            format!(
                "iat {iat} is {} the proxy clock {now} (skew {skew} s)",
                relative(iat, now)
            )
        }),
        Reason::MissingClaim => {
            let missing: Vec<&str> = ["iss", "sub", "client_id", "jti", "exp", "iat", "aud"]
                .into_iter()
                .filter(|c| payload.is_none_or(|p| !p.contains_key(*c)))
                .collect();
            Some(if missing.is_empty() {
                "a required claim (RFC 9068 §2.2) has the wrong type".into()
            } else {
                format!("missing claims: {}", missing.join(", "))
            })
        }
        Reason::WrongAudience => Some(format!("aud must contain `{}`", policy.audience)),
        Reason::AudienceNotSole => Some(format!("aud must be `{}` only", policy.audience)),
        Reason::BearerDowngrade => Some(
            "the token is DPoP-bound (cnf.jkt): use `Authorization: DPoP` and a DPoP proof".into(),
        ),
        _ => None,
    }
}

/// The schemes the API accepts, in challenge order.
pub fn schemes(policy: &Policy) -> Vec<Scheme> {
    let mut s = Vec::new();
    if policy.token.allow_dpop {
        s.push(Scheme::Dpop);
    }
    if policy.token.allow_bearer {
        s.push(Scheme::Bearer);
    }
    s
}

/// The token filter's challenge schemes: the one the client used when the API accepts it,
/// else every one the API accepts.
pub fn token_challenge_schemes(policy: &Policy, used: Option<Scheme>) -> Vec<Scheme> {
    let all = schemes(policy);
    match used {
        Some(s) if all.contains(&s) => vec![s],
        _ => all,
    }
}

/// The scheme named in a single `Authorization` value, for the challenge.
pub fn scheme_of(authorization: &str) -> Option<Scheme> {
    let first = authorization.split(' ').next()?;
    if first.eq_ignore_ascii_case("DPoP") {
        Some(Scheme::Dpop)
    } else if first.eq_ignore_ascii_case("Bearer") {
        Some(Scheme::Bearer)
    } else {
        None
    }
}

/// The `htu` this request expects (docs/checks.md §2.8): the public origin and stripped prefix
/// from the policy when set, else the origin and path the proxy sees. Query and fragment
/// are never part of it (RFC 9449 §4.3).
pub fn expected_htu(dpop: &DpopPolicy, target: &RequestTarget<'_>) -> Option<String> {
    let raw = target.path.split(['?', '#']).next().unwrap_or("");
    let path = normalise_path(raw)?;
    let path = if dpop.stripped_path_prefix.is_empty() {
        path
    } else if path == "/" {
        dpop.stripped_path_prefix.clone()
    } else {
        format!("{}{}", dpop.stripped_path_prefix, path)
    };
    let origin = match dpop.public_origins.first() {
        Some(o) => o.clone(),
        None => Origin::from_parts(target.scheme, target.authority)?,
    };
    Some(format!("{origin}{path}"))
}

/// Safe facts for a DPoP-filter refusal (docs/checks.md §2).
pub fn dpop_detail(
    dpop: &DpopPolicy,
    method: &str,
    target: &RequestTarget<'_>,
    proof: Option<&str>,
    reason: Reason,
    now: i64,
) -> Option<String> {
    let payload = proof.and_then(decode_unverified).map(|d| d.1);
    match reason {
        Reason::DpopMissing => {
            Some("send one `DPoP` header with a proof for this request (RFC 9449 §4)".into())
        }
        Reason::DpopMissingMember => Some(
            "a proof needs typ, alg, jwk in its header and jti, htm, htu, iat, ath in its payload"
                .into(),
        ),
        Reason::DpopBadTyp => Some("the proof's `typ` must be `dpop+jwt`".into()),
        Reason::DpopAlgNotAllowed => Some(format!("allowed proof algs: {}", algs(&dpop.algs))),
        Reason::DpopHtmMismatch => Some(format!("expected htm `{method}`")),
        Reason::DpopHtuMismatch => {
            let htu = expected_htu(dpop, target)?;
            Some(format!("expected htu `{htu}` (no query, no fragment)"))
        }
        Reason::DpopIatOutOfWindow => {
            let iat = payload.as_ref().and_then(|p| num(p, "iat"))?;
            Some(format!(
                "proof iat {iat} is {} the proxy clock {now}; accepted: {} s before to {} s after",
                relative(iat, now),
                dpop.iat_past,
                dpop.iat_future
            ))
        }
        Reason::DpopReplay => Some("every request needs a fresh proof with a new jti".into()),
        Reason::DpopAthMismatch => {
            Some("ath must be base64url(SHA-256) of this access token".into())
        }
        Reason::DpopJktMismatch => {
            Some("the proof's jwk is not the key the token is bound to (cnf.jkt)".into())
        }
        Reason::DpopNonceRequired => {
            Some("retry with the `DPoP-Nonce` value of this answer in the proof's `nonce`".into())
        }
        Reason::TokenNotDpopBound => Some("this API requires DPoP-bound tokens (cnf.jkt)".into()),
        _ => None,
    }
}

/// Replaces a reply's body by the same body (the policy's `api.denial_format`) with `detail`.
pub fn with_detail(
    policy: &Policy,
    mut reply: Reply,
    reason: Reason,
    detail: Option<&str>,
) -> Reply {
    if detail.is_some() {
        reply.body = reason.body(policy.denial_format, detail).1;
    }
    reply
}
