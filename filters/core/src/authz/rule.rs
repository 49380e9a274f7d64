//! A route's compiled authorization rule: [`Authz::compile`] checks `routes[i].authz` at load,
//! [`Authz::evaluate`] runs its conditions on a request in order (scopes, claims,
//! `authorization_details`, bindings) and names the first that fails, never a claim value.

use serde_json::Value;

use super::condition::{
    compile_cond, detail_entries, lookup, AuthzRequest, Bind, Cond, Detail, Source, Target,
};
use super::doc::AuthzDoc;
use super::template::template_params;
use crate::claims::VerifiedToken;
use crate::denial::Reason;
use crate::error::PolicyError;

/// A route's compiled authorization rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Authz {
    /// `routes[i].authz`, for denial details.
    field: String,
    all_of: Vec<String>,
    any_of: Vec<String>,
    claims: Vec<Cond>,
    details: Vec<Detail>,
    binds: Vec<Bind>,
}

/// Why a request was refused, for the reply (no claim values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzDenial {
    pub reason: Reason,
    /// RFC 6750 §3.1 `scope` attribute for `insufficient_scope`.
    pub required_scope: Option<String>,
    /// Names the condition and the claim name.
    pub detail: String,
}

impl Authz {
    /// Compiles `routes[index].authz` for a route whose matcher (`matcher`: `path` or
    /// `path_prefix`) is `pattern`.
    #[inline]
    pub fn compile(
        index: usize,
        matcher: &str,
        pattern: &str,
        d: &AuthzDoc,
    ) -> Result<Authz, PolicyError> {
        let base = format!("routes[{index}].authz");
        let params = template_params(pattern, &format!("routes[{index}].{matcher}"))?;
        let scopes = d.scopes.clone().unwrap_or_default();
        for (k, list) in [("all_of", &scopes.all_of), ("any_of", &scopes.any_of)] {
            for (i, s) in list.iter().enumerate() {
                if s.is_empty() || s.contains(char::is_whitespace) || s.contains('"') {
                    return Err(PolicyError::new(
                        format!("{base}.scopes.{k}[{i}]"),
                        "a scope is one non-empty token without spaces or quotes (RFC 6749 §3.3)",
                    ));
                }
            }
        }
        let mut claims = Vec::new();
        for (i, c) in d.claims.iter().enumerate() {
            let mut cond = compile_cond(&format!("{base}.claims[{i}]"), c, "claim")?;
            // A claim name is one key, even with dots (`helseid://claims/...`).
            cond.path = vec![cond.name.clone()];
            claims.push(cond);
        }
        let mut details = Vec::new();
        for (i, dd) in d.authorization_details.iter().enumerate() {
            let f = format!("{base}.authorization_details[{i}]");
            if dd.type_.is_empty() {
                return Err(PolicyError::new(format!("{f}.type"), "must not be empty"));
            }
            let mut fields = Vec::new();
            for (j, c) in dd.fields.iter().enumerate() {
                fields.push(compile_cond(&format!("{f}.fields[{j}]"), c, "field")?);
            }
            details.push(Detail {
                type_: dd.type_.clone(),
                fields,
            });
        }
        let mut binds = Vec::new();
        for (i, b) in d.bind.iter().enumerate() {
            let f = format!("{base}.bind[{i}]");
            let source = match (&b.path_param, &b.header) {
                (Some(p), None) => {
                    if !params.contains(p) {
                        return Err(PolicyError::new(
                            format!("{f}.path_param"),
                            format!("`{p}` is not a `{{parameter}}` of this route's {matcher}"),
                        ));
                    }
                    Source::PathParam(p.clone())
                }
                (None, Some(h)) => {
                    if h.is_empty() || h.starts_with(':') || h.to_ascii_lowercase() != *h {
                        return Err(PolicyError::new(
                            format!("{f}.header"),
                            "a lower-case request header name",
                        ));
                    }
                    Source::Header(h.clone())
                }
                _ => {
                    return Err(PolicyError::new(
                        f,
                        "give exactly one of `path_param` or `header`",
                    ))
                }
            };
            let target = match (&b.claim, &b.authorization_details) {
                (Some(c), None) if !c.is_empty() => Target::Claim(c.clone()),
                (None, Some(r)) if !r.type_.is_empty() && !r.field.is_empty() => Target::Detail {
                    type_: r.type_.clone(),
                    path: r.field.split('.').map(str::to_string).collect(),
                },
                _ => {
                    return Err(PolicyError::new(
                        f,
                        "give exactly one of `claim` or `authorization_details` {type, field}",
                    ))
                }
            };
            binds.push(Bind {
                source,
                target,
                match_: b.match_,
            });
        }
        Ok(Authz {
            field: base,
            all_of: scopes.all_of,
            any_of: scopes.any_of,
            claims,
            details,
            binds,
        })
    }

    /// Every condition, in order: scopes, claims, authorization_details, bindings.
    pub fn evaluate(
        &self,
        req: &AuthzRequest<'_>,
        token: &VerifiedToken,
    ) -> Result<(), AuthzDenial> {
        let has = |s: &String| token.scopes.iter().any(|g| g == s);
        // RFC 6750 §3.1: 403 insufficient_scope naming the scope(s) needed.
        let missing: Vec<&str> = self
            .all_of
            .iter()
            .filter(|s| !has(s))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(AuthzDenial {
                reason: Reason::AuthzScope,
                required_scope: Some(missing.join(" ")),
                detail: format!(
                    "{}.scopes.all_of: a required scope is not granted",
                    self.field
                ),
            });
        }
        if !self.any_of.is_empty() && !self.any_of.iter().any(has) {
            return Err(AuthzDenial {
                reason: Reason::AuthzScope,
                required_scope: Some(self.any_of.join(" ")),
                detail: format!(
                    "{}.scopes.any_of: none of the scopes is granted",
                    self.field
                ),
            });
        }
        for (i, c) in self.claims.iter().enumerate() {
            if !c.holds(token.claims.get(&c.name)) {
                return Err(AuthzDenial {
                    reason: Reason::AuthzClaim,
                    required_scope: None,
                    detail: format!(
                        "{}.claims[{i}]: claim `{}` does not satisfy the condition",
                        self.field, c.name
                    ),
                });
            }
        }
        let entries = detail_entries(&token.claims);
        for (i, d) in self.details.iter().enumerate() {
            let ok = entries.iter().any(|e| {
                e.get("type").and_then(Value::as_str) == Some(d.type_.as_str())
                    && d.fields.iter().all(|f| f.holds(lookup(e, &f.path)))
            });
            if !ok {
                return Err(AuthzDenial {
                    reason: Reason::AuthzDetails,
                    required_scope: None,
                    detail: format!(
                        "{}.authorization_details[{i}]: no `{}` entry satisfies the conditions",
                        self.field, d.type_
                    ),
                });
            }
        }
        for (i, b) in self.binds.iter().enumerate() {
            if !b.holds(req, token, &entries) {
                return Err(AuthzDenial {
                    reason: Reason::AuthzBinding,
                    required_scope: None,
                    detail: format!(
                        "{}.bind[{i}]: the request's {} is not the token's",
                        self.field,
                        match &b.source {
                            Source::PathParam(p) => format!("path parameter `{p}`"),
                            Source::Header(h) => format!("header `{h}`"),
                        }
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap
)]
mod tests {
    use super::*;
    use crate::authz::template::match_template;
    use serde_json::json;

    fn token(claims: Value, scopes: &[&str]) -> VerifiedToken {
        VerifiedToken {
            scheme: crate::scheme::Scheme::Dpop,
            token_sha256: String::new(),
            iss: "i".into(),
            sub: String::new(),
            client_id: "c".into(),
            exp: 0,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            cnf_jkt: None,
            cnf_x5t_s256: None,
            claims: claims.as_object().unwrap().clone(),
        }
    }

    fn authz(prefix: &str, doc: Value) -> Result<Authz, PolicyError> {
        let d: AuthzDoc = serde_json::from_value(doc).unwrap();
        Authz::compile(0, "path_prefix", prefix, &d)
    }

    fn eval(a: &Authz, path: &str, prefix: &str, t: &VerifiedToken) -> Result<(), Reason> {
        let params = match_template(prefix, path, false).unwrap();
        let header = |h: &str| (h == "x-org").then(|| "999".to_string());
        a.evaluate(
            &AuthzRequest {
                path_params: &params,
                header: &header,
            },
            t,
        )
        .map_err(|d| d.reason)
    }

    const SL: &str = "helseid://claims/identity/security_level";

    #[test]
    fn policy_authorize_matches_the_route_and_binds_its_parameters() {
        // `Policy::authorize`: route matching and the authz decision in core (docs/checks.md §4).
        let doc = json!({
            "api": {"name": "a", "audience": "a"},
            "issuers": [{"issuer": "i", "jwks_uri": "https://i/jwks", "jwks_cluster": "c"}],
            "routes": [{"path_prefix": "/orgs/{orgnr}/documents", "require": "token",
                        "authz": {"bind": [{"path_param": "orgnr", "claim": "org"}]}}]
        });
        let policy = crate::policy::Policy::from_json(doc.to_string().as_bytes()).unwrap();
        let t = token(json!({"org": "111"}), &[]);
        let no_header = |_: &str| None;
        assert!(policy
            .authorize("GET", "/orgs/111/documents", &no_header, &t)
            .is_ok());
        assert!(policy.authorize("GET", "/other", &no_header, &t).is_ok());
        let refused = policy.authorize("GET", "/orgs/222/documents", &no_header, &t);
        assert!(
            matches!(&refused, Err(crate::policy::RouteRefusal::Authz(d)) if d.reason == Reason::AuthzBinding),
            "{refused:?}"
        );
        let refused = policy.authorize("GET", "/orgs/111/x/../222/documents", &no_header, &t);
        assert!(
            matches!(
                refused,
                Err(crate::policy::RouteRefusal::Path(Reason::PathNotCanonical))
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn condition_kinds() {
        let prefix = "/orgs/{orgnr}/docs";
        let a = authz(
            prefix,
            json!({
                "scopes": {"all_of": ["api/read"], "any_of": ["api/x", "api/y"]},
                "claims": [
                    {"claim": SL, "gte": 4},
                    {"claim": "helseid://claims/identity/assurance_level", "one_of": ["high"]},
                    {"claim": "client_id", "prefix": "c"},
                    {"claim": "amr", "contains": "pwd"},
                    {"claim": "act", "present": false},
                    {"claim": "x", "equals": 1}
                ],
                "authorization_details": [{"type": "nhn:tillitsrammeverk:parameters", "fields": [
                    {"field": "care_relationship.purpose_of_use.code", "one_of": ["TREAT", "COC"]}
                ]}],
                "bind": [
                    {"path_param": "orgnr", "authorization_details": {"type": "helseid_authorization",
                      "field": "practitioner_role.organization.identifier.value"}, "match": "colon_suffix"},
                    {"header": "x-org", "claim": "orgnr_parent"}
                ]
            }),
        )
        .unwrap();
        let good = json!({
            SL: "4", "helseid://claims/identity/assurance_level": "high", "client_id": "c1",
            "amr": ["pwd"], "x": "1", "orgnr_parent": "999",
            "authorization_details": [
                {"type": "nhn:tillitsrammeverk:parameters", "care_relationship": {"purpose_of_use": {"code": "TREAT"}}},
                {"type": "helseid_authorization", "practitioner_role": {"organization": {"identifier": {"value": "NO:ORGNR:999:111"}}}}
            ]
        });
        let scopes = ["api/read", "api/y"];
        let path = "/orgs/111/docs/5";
        assert_eq!(
            eval(&a, path, prefix, &token(good.clone(), &scopes)),
            Ok(())
        );
        let with = |k: &str, v: Value| {
            let mut c = good.clone();
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v;
            }
            token(c, &scopes)
        };
        let cases: Vec<(&str, VerifiedToken, &str, Reason)> = vec![
            (
                "no all_of",
                token(good.clone(), &["api/y"]),
                path,
                Reason::AuthzScope,
            ),
            (
                "no any_of",
                token(good.clone(), &["api/read"]),
                path,
                Reason::AuthzScope,
            ),
            ("level 3", with(SL, json!("3")), path, Reason::AuthzClaim),
            (
                "level number 3",
                with(SL, json!(3)),
                path,
                Reason::AuthzClaim,
            ),
            (
                "level not numeric",
                with(SL, json!("four")),
                path,
                Reason::AuthzClaim,
            ),
            (
                "level missing",
                with(SL, Value::Null),
                path,
                Reason::AuthzClaim,
            ),
            (
                "assurance",
                with("helseid://claims/identity/assurance_level", json!("low")),
                path,
                Reason::AuthzClaim,
            ),
            (
                "prefix",
                with("client_id", json!("d1")),
                path,
                Reason::AuthzClaim,
            ),
            (
                "contains",
                with("amr", json!(["otp"])),
                path,
                Reason::AuthzClaim,
            ),
            (
                "absent",
                with("act", json!({"sub": "x"})),
                path,
                Reason::AuthzClaim,
            ),
            ("equals", with("x", json!(2)), path, Reason::AuthzClaim),
            (
                "purpose",
                with(
                    "authorization_details",
                    json!([
                {"type": "nhn:tillitsrammeverk:parameters", "care_relationship": {"purpose_of_use": {"code": "RESEARCH"}}}]),
                ),
                path,
                Reason::AuthzDetails,
            ),
            (
                "other org in path",
                token(good.clone(), &scopes),
                "/orgs/112/docs",
                Reason::AuthzBinding,
            ),
            (
                "suffix not segment",
                token(good.clone(), &scopes),
                "/orgs/11/docs",
                Reason::AuthzBinding,
            ),
            (
                "header",
                with("orgnr_parent", json!("998")),
                path,
                Reason::AuthzBinding,
            ),
        ];
        for (name, t, p, want) in cases {
            assert_eq!(eval(&a, p, prefix, &t), Err(want), "{name}");
        }
        // The scope attribute names what is missing (RFC 6750 §3.1); details name no values.
        let d = a
            .evaluate(
                &AuthzRequest {
                    path_params: &[],
                    header: &|_| None,
                },
                &token(good, &["api/y"]),
            )
            .unwrap_err();
        assert_eq!(d.required_scope.as_deref(), Some("api/read"));
        assert!(!d.detail.contains("999"));
    }
}
