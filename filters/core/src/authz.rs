//! Per-route authorization after the token is verified (`docs/checks.md` §4): required
//! scopes, claim conditions, RFC 9396 `authorization_details` conditions, and bindings of a
//! path segment or header to the token (object-level authorisation, OWASP API1:2023 BOLA).
//!
//! A route rule (`routes[i]` in the policy) may carry an `authz` object and a `mode`; the token
//! filter evaluates it on every request the rule matches, after the token verified. Every
//! condition must hold; a claim that is missing or of the wrong type fails its condition (fail
//! closed). Denials name the condition (`routes[i].authz.claims[j]`) and the claim's *name*,
//! never a claim value.
//!
//! Path templates: a `path` or `path_prefix` segment `{name}` matches one non-empty path segment and
//! binds it for `bind` (`/orgs/{orgnr}/documents`).
//!
//! Rooms: [`doc`] the policy's `authz` object as written, [`template`] path templates,
//! [`condition`] the compiled conditions and bindings, [`rule`] a route's whole rule
//! (compile and evaluate).

pub mod condition;
pub mod doc;
pub mod rule;
pub mod template;

pub use condition::AuthzRequest;
pub use doc::{AuthzDoc, BindDoc, BindMatch, CondDoc, DetailDoc, DetailRefDoc, Mode, ScopesDoc};
pub use rule::{Authz, AuthzDenial};
pub use template::{match_template, template_params};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::error::PolicyError;
    use serde_json::{json, Value};

    fn authz(prefix: &str, doc: Value) -> Result<Authz, PolicyError> {
        let d: AuthzDoc = serde_json::from_value(doc).unwrap();
        Authz::compile(0, "path_prefix", prefix, &d)
    }

    #[test]
    fn bad_rules_name_the_field() {
        let cases = [
            (
                json!({"claims": [{"claim": "a"}]}),
                "routes[0].authz.claims[0]",
            ),
            (
                json!({"claims": [{"claim": "a", "equals": 1, "prefix": "x"}]}),
                "routes[0].authz.claims[0]",
            ),
            (
                json!({"claims": [{"field": "a", "equals": 1}]}),
                "routes[0].authz.claims[0].claim",
            ),
            (
                json!({"claims": [{"claim": "a", "equals": [1]}]}),
                "routes[0].authz.claims[0].equals",
            ),
            (
                json!({"scopes": {"all_of": ["a b"]}}),
                "routes[0].authz.scopes.all_of[0]",
            ),
            (
                json!({"bind": [{"path_param": "nope", "claim": "a"}]}),
                "routes[0].authz.bind[0].path_param",
            ),
            (
                json!({"bind": [{"header": "X-Org", "claim": "a"}]}),
                "routes[0].authz.bind[0].header",
            ),
            (
                json!({"bind": [{"header": "x", "claim": "a", "path_param": "o"}]}),
                "routes[0].authz.bind[0]",
            ),
            (
                json!({"authorization_details": [{"type": "t", "fields": [{"claim": "a", "equals": 1}]}]}),
                "routes[0].authz.authorization_details[0].fields[0].field",
            ),
        ];
        for (doc, want) in cases {
            let got = authz("/orgs/{o}", doc.clone()).err().map(|e| e.field);
            assert_eq!(got.as_deref(), Some(want), "{doc}");
        }
    }
}
