//! Per-route requirements: path prefix + methods → what the request needs.
//! First matching rule wins; a request no rule matches needs a token (fail closed), or, with
//! the policy's `unmatched: deny`, is refused (`route_not_listed`, docs/checks.md §4).

use serde::Deserialize;

use crate::authz::{self, Authz, AuthzDoc, Mode};
use crate::error::PolicyError;
use crate::path::{self, CanonicalPath};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// Public: no token needed (e.g. `/metadata`, `/.well-known/smart-configuration`).
    None,
    /// A valid access token (and, where the policy says, DPoP and FHIR scope checks).
    Token,
}

/// What a request no `routes[]` rule matches needs (policy `unmatched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// A valid token, nothing more (the behaviour before `unmatched` existed).
    #[default]
    TokenOnly,
    /// Refused: only listed routes are served (`route_not_listed` → 403).
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDoc {
    /// Segment-aware prefix: `/metadata` matches `/metadata` and `/metadata/x`, not `/metadataX`.
    pub path_prefix: String,
    /// Methods this rule applies to; empty = all.
    #[serde(default)]
    pub methods: Vec<String>,
    pub require: Requirement,
    /// Per-route authorization after the token verified (`crate::authz`).
    #[serde(default)]
    pub authz: Option<AuthzDoc>,
    /// `enforce` or `shadow` for this rule; unset = the policy's `mode`.
    #[serde(default)]
    pub mode: Option<Mode>,
}

#[derive(Debug, Clone, PartialEq)]
struct Route {
    prefix: String,
    methods: Vec<String>,
    require: Requirement,
    authz: Option<Authz>,
    mode: Option<Mode>,
}

/// Compiled route rules.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// The rule a request matched: its requirement, authorization, mode and template parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch<'a> {
    pub require: Requirement,
    pub authz: Option<&'a Authz>,
    pub mode: Option<Mode>,
    pub params: Vec<(String, String)>,
    /// The index of the `routes[]` rule that matched (None: the default, `Requirement::Token`).
    pub rule: Option<usize>,
}

pub(crate) const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

impl RouteTable {
    pub fn compile(docs: Option<&[RouteDoc]>) -> Result<RouteTable, PolicyError> {
        let mut routes = Vec::new();
        for (i, d) in docs.unwrap_or_default().iter().enumerate() {
            if !d.path_prefix.starts_with('/') {
                return Err(PolicyError::new(
                    format!("routes[{i}].path_prefix"),
                    "must start with `/`",
                ));
            }
            if d.path_prefix.contains(['?', '#']) {
                return Err(PolicyError::new(
                    format!("routes[{i}].path_prefix"),
                    "must be a path without query or fragment",
                ));
            }
            // Prefixes are compared with the decoded canonical path (docs/checks.md, "Path
            // canonicalisation"): a prefix must already be in that form or it never matches.
            // A template segment `{name}` stands for one plain segment.
            let probe: Vec<&str> = d
                .path_prefix
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                .collect();
            let probe = probe.join("/");
            let canonical_ok = path::canonical(&probe)
                .map(|c| c.path() == probe)
                .unwrap_or(false);
            if !canonical_ok {
                return Err(PolicyError::new(
                    format!("routes[{i}].path_prefix"),
                    "must be a canonical path: no dot-segments, `//`, `;`, `\\`, `%`-encoding or non-ASCII",
                ));
            }
            for (j, m) in d.methods.iter().enumerate() {
                if !METHODS.contains(&m.as_str()) {
                    return Err(PolicyError::new(
                        format!("routes[{i}].methods[{j}]"),
                        format!("`{m}` is not an HTTP method (upper case)"),
                    ));
                }
            }
            let authz = match &d.authz {
                Some(_) if d.require == Requirement::None => {
                    return Err(PolicyError::new(
                        format!("routes[{i}].authz"),
                        "needs `require: token` (a public route has no token to authorize)",
                    ))
                }
                Some(a) => Some(Authz::compile(i, &d.path_prefix, a)?),
                None => {
                    authz::template_params(&d.path_prefix, &format!("routes[{i}].path_prefix"))?;
                    None
                }
            };
            routes.push(Route {
                prefix: d.path_prefix.clone(),
                methods: d.methods.clone(),
                require: d.require,
                authz,
                mode: d.mode,
            });
        }
        Ok(RouteTable { routes })
    }

    /// The requirement for `method` on the request's one canonical path (`crate::path`: a
    /// path a server could read differently never gets here).
    pub fn requirement(&self, method: &str, path: &CanonicalPath<'_>) -> Requirement {
        self.lookup(method, path).require
    }

    /// Rule `index`'s `authz` (for a [`RouteMatch::rule`] kept from [`Self::lookup`]).
    pub fn authz_of(&self, index: usize) -> Option<&Authz> {
        self.routes.get(index).and_then(|r| r.authz.as_ref())
    }

    /// The first rule matching `method` on the canonical path; no match = a token, nothing more.
    pub fn lookup(&self, method: &str, path: &CanonicalPath<'_>) -> RouteMatch<'_> {
        let path = path.path();
        for (i, r) in self.routes.iter().enumerate() {
            if !(r.methods.is_empty() || r.methods.iter().any(|m| m == method)) {
                continue;
            }
            let params = if r.prefix.contains('{') {
                match authz::match_template(&r.prefix, path) {
                    Some(p) => p,
                    None => continue,
                }
            } else {
                let prefix_ok = path == r.prefix
                    || (path.starts_with(&r.prefix)
                        && (r.prefix.ends_with('/')
                            || path.as_bytes().get(r.prefix.len()) == Some(&b'/')));
                if !prefix_ok {
                    continue;
                }
                Vec::new()
            };
            return RouteMatch {
                require: r.require,
                authz: r.authz.as_ref(),
                mode: r.mode,
                params,
                rule: Some(i),
            };
        }
        RouteMatch {
            require: Requirement::Token,
            authz: None,
            mode: None,
            params: Vec::new(),
            rule: None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn table(json: &str) -> RouteTable {
        let docs: Vec<RouteDoc> = serde_json::from_str(json).unwrap_or_default();
        RouteTable::compile(Some(&docs)).unwrap_or(RouteTable { routes: vec![] })
    }

    #[test]
    fn first_match_wins_and_default_is_token() {
        let t = table(
            r#"[{"path_prefix":"/metadata","methods":["GET"],"require":"none"},
                         {"path_prefix":"/.well-known/","require":"none"}]"#,
        );
        let cases = [
            ("GET", "/metadata", Requirement::None),
            ("GET", "/metadata?_format=json", Requirement::None),
            ("POST", "/metadata", Requirement::Token),
            ("GET", "/metadataX", Requirement::Token),
            ("GET", "/.well-known/smart-configuration", Requirement::None),
            ("GET", "/Patient/1", Requirement::Token),
            // Decided on the decoded path, as the upstream reads it.
            ("GET", "/%6Detadata", Requirement::None),
            (
                "GET",
                "/.well-known/%73mart-configuration",
                Requirement::None,
            ),
        ];
        for (m, p, want) in cases {
            let c = path::canonical(p).unwrap();
            assert_eq!(t.requirement(m, &c), want, "{m} {p}");
        }
    }

    #[test]
    fn unmatched_requests_are_not_listed() {
        let t = table(r#"[{"path_prefix":"/fhir","methods":["GET"],"require":"token"}]"#);
        for (m, p, listed) in [
            ("GET", "/fhir/Patient/1", true),
            ("POST", "/fhir/Patient", false),
            ("GET", "/admin", false),
            ("GET", "/fhirX", false),
        ] {
            let c = path::canonical(p).unwrap();
            let r = t.lookup(m, &c);
            assert_eq!(r.rule.is_some(), listed, "{m} {p}");
            assert_eq!(r.require, Requirement::Token, "{m} {p}");
        }
    }

    #[test]
    fn bad_rules_name_the_field() {
        let docs: Vec<RouteDoc> =
            serde_json::from_str(r#"[{"path_prefix":"/a","methods":["get"],"require":"none"}]"#)
                .unwrap_or_default();
        let err = RouteTable::compile(Some(&docs)).err().map(|e| e.field);
        assert_eq!(err.as_deref(), Some("routes[0].methods[0]"));
        for bad in [
            "/a/../b", "/a//b", "/a;b", "/a%2Fb", "/%61", "/a\\b", "/a/.",
        ] {
            let docs = vec![RouteDoc {
                path_prefix: bad.to_string(),
                methods: vec![],
                require: Requirement::None,
                authz: None,
                mode: None,
            }];
            let err = RouteTable::compile(Some(&docs)).err().map(|e| e.field);
            assert_eq!(err.as_deref(), Some("routes[0].path_prefix"), "{bad}");
        }
    }
}
