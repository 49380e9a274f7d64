//! The one builder of every `WWW-Authenticate` challenge the guard sends (RFC 6750 §3,
//! RFC 9449 §7.1), for the token, DPoP and FHIR scope filters alike: which schemes are offered,
//! and the DPoP `algs=` attribute, which lists the algorithms the API accepts for DPoP
//! **proofs** (`dpop.allowed_algs`), not the access token's (RFC 9449 §7.1).

use crate::denial::{ChallengeContext, Reason, Reply};
use crate::jose::Alg;
use crate::policy::dpop::DpopPolicy;
use crate::policy::Policy;
use crate::scheme::Scheme;

/// Which schemes a challenge offers.
#[derive(Debug, Clone, Copy)]
pub enum Offer<'a> {
    /// Token and FHIR scope filters: the scheme the request used when the API accepts it,
    /// else every scheme the API accepts (`token.schemes`).
    Used(Option<Scheme>),
    /// DPoP filter: `DPoP`, and `Bearer` too where the API accepts Bearer tokens and the
    /// `dpop` section does not require proofs (RFC 9449 §7.1).
    DpopFilter(&'a DpopPolicy),
}

/// What a denial adds to the policy's challenge.
#[derive(Debug, Clone)]
pub struct Challenge<'a> {
    pub offer: Offer<'a>,
    /// A fresh server nonce to send as `DPoP-Nonce` (RFC 9449 §9).
    pub nonce: Option<String>,
    /// `scope` attribute for `insufficient_scope` (RFC 6750 §3.1).
    pub required_scope: Option<String>,
    /// OperationOutcome detail (no token content, no patient data).
    pub detail: Option<String>,
    /// `Retry-After` seconds (RFC 6585 §4, for a 429).
    pub retry_after: Option<u32>,
}

impl Challenge<'_> {
    /// A challenge in the scheme(s) for `used` and nothing else.
    pub fn used(used: Option<Scheme>) -> Challenge<'static> {
        Challenge {
            offer: Offer::Used(used),
            nonce: None,
            required_scope: None,
            detail: None,
            retry_after: None,
        }
    }
}

/// Every scheme the API accepts (`token.schemes`), in order.
pub fn accepted_schemes(policy: &Policy) -> Vec<Scheme> {
    let mut s = Vec::new();
    if policy.token.allow_dpop {
        s.push(Scheme::Dpop);
    }
    if policy.token.allow_bearer {
        s.push(Scheme::Bearer);
    }
    s
}

/// The DPoP proof algorithms the API accepts: `dpop.allowed_algs`, or the default when the
/// policy has no `dpop` section (RFC 9449 §7.1 `algs`).
pub fn proof_algs(policy: &Policy) -> Vec<Alg> {
    match &policy.dpop {
        Some(d) => d.algs.clone(),
        None => DpopPolicy::default().algs,
    }
}

/// The reply for `reason`, with the challenge this policy and request call for.
pub fn reply(policy: &Policy, reason: Reason, c: &Challenge<'_>) -> Reply {
    let (schemes, algs) = match c.offer {
        Offer::Used(used) => {
            let all = accepted_schemes(policy);
            let schemes = match used {
                Some(s) if all.contains(&s) => vec![s],
                _ => all,
            };
            (schemes, proof_algs(policy))
        }
        Offer::DpopFilter(dpop) => {
            let schemes = if policy.token.allow_bearer && !dpop.required {
                vec![Scheme::Dpop, Scheme::Bearer]
            } else {
                vec![Scheme::Dpop]
            };
            (schemes, dpop.algs.clone())
        }
    };
    let mut reply = reason.reply(&ChallengeContext {
        schemes: &schemes,
        dpop_algs: &algs,
        dpop_nonce: c.nonce.clone(),
        required_scope: c.required_scope.clone(),
        detail: c.detail.clone(),
        format: policy.denial_format,
    });
    if let Some(secs) = c.retry_after {
        reply
            .headers
            .push(("retry-after".to_string(), secs.to_string()));
    }
    reply
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn policy(extra: serde_json::Value) -> Policy {
        let mut doc = serde_json::json!({
            "api": {"name": "api", "audience": "https://api.test"},
            "issuers": [{"issuer": "https://issuer.test", "jwks": {"keys": [{
                "kty": "EC", "crv": "P-256", "kid": "k",
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}}],
        });
        if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                d.insert(k.clone(), v.clone());
            }
        }
        Policy::from_json(doc.to_string().as_bytes()).unwrap()
    }

    fn www(r: &Reply) -> Vec<&str> {
        r.headers
            .iter()
            .filter(|(k, _)| k == "www-authenticate")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn algs_are_the_proof_algs_not_the_token_algs() {
        // RFC 9449 §7.1: `algs` lists the JWS algorithms accepted for DPoP proofs.
        let p = policy(serde_json::json!({
            "token": {"allowed_algs": ["RS256"]},
            "dpop": {"allowed_algs": ["ES256", "PS256"]},
        }));
        let r = reply(&p, Reason::Expired, &Challenge::used(Some(Scheme::Dpop)));
        assert_eq!(
            www(&r),
            vec![r#"DPoP error="invalid_token", algs="ES256 PS256""#]
        );
        let dpop = p.dpop.clone().unwrap_or_default();
        let c = Challenge {
            offer: Offer::DpopFilter(&dpop),
            ..Challenge::used(None)
        };
        assert_eq!(
            www(&reply(&p, Reason::DpopReplay, &c)),
            vec![r#"DPoP error="invalid_dpop_proof", algs="ES256 PS256""#]
        );
        // No `dpop` section: the default proof algs.
        let p = policy(serde_json::json!({"token": {"allowed_algs": ["RS256"]}}));
        assert_eq!(
            www(&reply(&p, Reason::MissingToken, &Challenge::used(None))),
            vec![r#"DPoP algs="PS256 ES256 EdDSA""#]
        );
    }

    #[test]
    fn schemes_follow_the_request_and_the_policy() {
        let both = policy(serde_json::json!({"token": {"schemes": ["DPoP", "Bearer"]}}));
        let r = reply(
            &both,
            Reason::Expired,
            &Challenge::used(Some(Scheme::Bearer)),
        );
        assert_eq!(www(&r), vec![r#"Bearer error="invalid_token""#]);
        let r = reply(&both, Reason::MissingToken, &Challenge::used(None));
        assert_eq!(www(&r), vec![r#"DPoP algs="PS256 ES256 EdDSA""#, "Bearer"]);
        // A scheme the API does not accept is not echoed: every accepted one is offered.
        let dpop_only = policy(serde_json::json!({}));
        let r = reply(
            &dpop_only,
            Reason::SchemeNotAllowed,
            &Challenge::used(Some(Scheme::Bearer)),
        );
        assert_eq!(
            www(&r),
            vec![r#"DPoP error="invalid_token", algs="PS256 ES256 EdDSA""#]
        );
        // DPoP filter: Bearer only where proofs are not required.
        let optional = policy(serde_json::json!({
            "token": {"schemes": ["DPoP", "Bearer"]}, "dpop": {"required": false}}));
        let dpop = optional.dpop.clone().unwrap_or_default();
        let c = Challenge {
            offer: Offer::DpopFilter(&dpop),
            retry_after: Some(3),
            ..Challenge::used(None)
        };
        let r = reply(&optional, Reason::DpopKeyOverBudget, &c);
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k == "retry-after" && v == "3"));
        let r = reply(&optional, Reason::DpopReplay, &c);
        assert_eq!(www(&r).len(), 2);
    }

    #[test]
    fn the_policy_picks_the_denial_body() {
        let mut doc = serde_json::json!({
            "api": {"name": "api", "audience": "https://api.test", "denial_format": "problem+json"},
            "issuers": [{"issuer": "https://issuer.test", "jwks": {"keys": [{
                "kty": "EC", "crv": "P-256", "kid": "k",
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}}],
        });
        let p = Policy::from_json(doc.to_string().as_bytes()).unwrap();
        let r = reply(&p, Reason::MissingToken, &Challenge::used(None));
        assert!(r
            .headers
            .contains(&("content-type".into(), "application/problem+json".into())));
        assert_eq!(www(&r), vec![r#"DPoP algs="PS256 ES256 EdDSA""#]);
        // Unset: an OperationOutcome, as before.
        let p = policy(serde_json::json!({}));
        let r = reply(&p, Reason::MissingToken, &Challenge::used(None));
        assert!(r
            .headers
            .contains(&("content-type".into(), "application/fhir+json".into())));
        // A FHIR API keeps the OperationOutcome; an unknown format is refused too.
        doc["fhir"] = serde_json::json!({"base_path": "/fhir"});
        let err = Policy::from_json(doc.to_string().as_bytes())
            .err()
            .map(|e| e.field);
        assert_eq!(err.as_deref(), Some("api.denial_format"));
        doc["api"]["denial_format"] = "problem".into();
        let err = Policy::from_json(doc.to_string().as_bytes())
            .err()
            .map(|e| e.field);
        assert_eq!(err.as_deref(), Some("api.denial_format"));
    }
}
