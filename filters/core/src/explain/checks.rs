//! The checks each step runs, in its order, with the reasons each can refuse with and the spec
//! rule it applies: what the explainer shows for a step the pipeline reported as one event.

use super::{Outcome, Step};
use crate::denial::Reason;

/// A check and the reasons it can refuse with, in the filter's order.
pub(super) struct Check {
    pub name: &'static str,
    pub spec: &'static str,
    pub reasons: &'static [Reason],
}

pub(super) const TOKEN_CHECKS: &[Check] = &[
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

pub(super) const DPOP_CHECKS: &[Check] = &[
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
pub(super) fn record(
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

pub(super) fn skip_all(steps: &mut Vec<Step>, filter: &'static str, checks: &[Check]) {
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

pub(super) fn push_fail(
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
