//! Every refusal the guard can give, and the one place that maps it to HTTP:
//! status, `WWW-Authenticate` (RFC 6750 §3, RFC 9449 §7.1), the body (a FHIR `OperationOutcome`
//! or an RFC 9457 problem details object, per `api.denial_format`), and the stable reason code
//! used in logs and stats. Never carries token content.
//!
//! Rooms: [`reasons`] the table of refusals and their classes, [`reply`] the answer each class
//! gets (status, challenge, body).

pub mod reasons;
pub mod reply;

pub use reasons::{Class, Reason};
pub use reply::{ChallengeContext, DenialFormat, Reply, PROBLEM_TYPE_PREFIX, RETRY_AFTER_SECONDS};

// A leaf module (`scheme.rs`): tokens, claims and challenges use it without this table.
pub use crate::scheme::Scheme;

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap
)]
mod tests {
    use super::*;
    use crate::jose::Alg;

    fn header<'a>(r: &'a Reply, name: &str) -> Vec<&'a str> {
        r.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn codes_are_unique_per_class_and_space_free() {
        let mut seen = std::collections::HashMap::new();
        for r in Reason::ALL {
            assert!(!r.code().contains(' '), "{r:?}");
            if let Some(prev) = seen.insert(r.code(), r.class()) {
                // Only the 403/404 twin of response_outside_grant shares a code.
                assert_eq!(
                    r.code(),
                    "response_outside_grant",
                    "duplicate code {}",
                    r.code()
                );
                assert_ne!(prev, r.class());
            }
        }
    }

    #[test]
    fn no_token_challenge_has_no_error_attribute() {
        let ctx = ChallengeContext {
            schemes: &[Scheme::Dpop],
            dpop_algs: &Alg::FAPI_DEFAULT,
            ..Default::default()
        };
        let r = Reason::MissingToken.reply(&ctx);
        assert_eq!(r.status, 401);
        assert_eq!(
            header(&r, "www-authenticate"),
            vec!["DPoP algs=\"PS256 ES256 EdDSA\""]
        );
    }

    #[test]
    fn invalid_token_and_dpop_proof_and_scope() {
        let ctx = ChallengeContext {
            schemes: &[Scheme::Dpop],
            dpop_algs: &[Alg::ES256],
            required_scope: Some("patient/Observation.rs".into()),
            ..Default::default()
        };
        assert_eq!(
            header(&Reason::Expired.reply(&ctx), "www-authenticate"),
            vec!["DPoP error=\"invalid_token\", algs=\"ES256\""]
        );
        assert_eq!(
            header(&Reason::DpopReplay.reply(&ctx), "www-authenticate"),
            vec!["DPoP error=\"invalid_dpop_proof\", algs=\"ES256\""]
        );
        let r = Reason::InsufficientScope.reply(&ctx);
        assert_eq!(r.status, 403);
        assert_eq!(
            header(&r, "www-authenticate"),
            vec!["DPoP error=\"insufficient_scope\", scope=\"patient/Observation.rs\", algs=\"ES256\""]
        );
    }

    #[test]
    fn unavailable_has_retry_after_and_no_challenge() {
        let ctx = ChallengeContext {
            schemes: &[Scheme::Dpop],
            dpop_algs: &[Alg::ES256],
            ..Default::default()
        };
        for r in [Reason::KeysUnavailable, Reason::DpopReplayCacheFull] {
            let reply = r.reply(&ctx);
            assert_eq!(reply.status, 503);
            assert!(header(&reply, "www-authenticate").is_empty(), "{r:?}");
            assert_eq!(header(&reply, "retry-after"), vec!["5"]);
        }
    }

    #[test]
    fn body_is_operation_outcome_with_reason() {
        let r = Reason::BadSignature.reply(&ChallengeContext {
            schemes: &[Scheme::Bearer],
            ..Default::default()
        });
        assert_eq!(
            header(&r, "www-authenticate"),
            vec!["Bearer error=\"invalid_token\""]
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        assert_eq!(v["resourceType"], "OperationOutcome");
        assert_eq!(
            v["issue"][0]["details"]["coding"][0]["code"],
            "bad_signature"
        );
    }

    #[test]
    fn problem_json_carries_the_reason_and_keeps_the_challenge() {
        let ctx = |format| ChallengeContext {
            schemes: &[Scheme::Dpop],
            dpop_algs: &[Alg::ES256],
            detail: Some("expected htm `GET`".into()),
            format,
            ..Default::default()
        };
        let oo = Reason::DpopHtmMismatch.reply(&ctx(DenialFormat::OperationOutcome));
        let pj = Reason::DpopHtmMismatch.reply(&ctx(DenialFormat::ProblemJson));
        assert_eq!(pj.status, 401);
        assert_eq!(
            header(&pj, "content-type"),
            vec!["application/problem+json"]
        );
        assert_eq!(header(&oo, "content-type"), vec!["application/fhir+json"]);
        assert_eq!(
            header(&pj, "www-authenticate"),
            header(&oo, "www-authenticate")
        );
        let v: serde_json::Value = serde_json::from_slice(&pj.body).unwrap_or_default();
        assert_eq!(v["type"], "urn:fapi-guard:reason:dpop_htm_mismatch");
        assert_eq!(v["code"], "dpop_htm_mismatch");
        assert_eq!(v["status"], 401);
        assert_eq!(v["title"], "Unauthorized");
        assert_eq!(v["detail"], "dpop_htm_mismatch: expected htm `GET`");
        assert!(v.get("resourceType").is_none());
        // Compact JSON, members in serde_json's order.
        assert_eq!(String::from_utf8(pj.body.clone()).ok(), Some(v.to_string()));
        let r = Reason::RouteNotListed.reply(&ctx(DenialFormat::ProblemJson));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        assert_eq!(
            (v["status"].as_u64(), v["title"].as_str()),
            (Some(403), Some("Forbidden"))
        );
        assert_eq!(v["detail"], "route_not_listed: expected htm `GET`");
    }
}
