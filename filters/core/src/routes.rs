//! Per-route requirements: path prefix + methods → what the request needs.
//! First matching rule wins; a request no rule matches needs a token (fail closed).

use serde::Deserialize;

use crate::authz::{self, Authz, AuthzDoc, Mode};
use crate::policy::PolicyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// Public: no token needed (e.g. `/metadata`, `/.well-known/smart-configuration`).
    None,
    /// A valid access token (and, where the policy says, DPoP and FHIR scope checks).
    Token,
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
}

const METHODS: [&str; 9] = [
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

    /// Whether any rule has an `authz` section.
    pub fn has_authz(&self) -> bool {
        self.routes.iter().any(|r| r.authz.is_some())
    }

    /// The requirement for `method` on `path` (query already removed or not; it is ignored).
    pub fn requirement(&self, method: &str, path: &str) -> Requirement {
        self.lookup(method, path).require
    }

    /// The first rule matching `method` on `path`; no match = a token, nothing more.
    pub fn lookup(&self, method: &str, path: &str) -> RouteMatch<'_> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        for r in &self.routes {
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
            };
        }
        RouteMatch {
            require: Requirement::Token,
            authz: None,
            mode: None,
            params: Vec::new(),
        }
    }
}

#[cfg(test)]
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
        ];
        for (m, p, want) in cases {
            assert_eq!(t.requirement(m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn bad_rules_name_the_field() {
        let docs: Vec<RouteDoc> =
            serde_json::from_str(r#"[{"path_prefix":"/a","methods":["get"],"require":"none"}]"#)
                .unwrap_or_default();
        let err = RouteTable::compile(Some(&docs)).err().map(|e| e.field);
        assert_eq!(err.as_deref(), Some("routes[0].methods[0]"));
    }
}
