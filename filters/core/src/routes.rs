//! Per-route requirements: an exact `path` or a `path_prefix`, + methods → what the request
//! needs. A prefix respects segment boundaries (`/api/health` matches `/api/health` and
//! `/api/health/x`, never `/api/healthz`); `path` matches that one path only. First matching
//! rule wins; a request no rule matches needs a token (fail closed), or, with
//! the policy's `unmatched: deny`, is refused (`route_not_listed`, docs/checks.md §4).

use serde::Deserialize;

use crate::audit_policy::PatientParam;
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
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Exact path: `/api/health` matches `/api/health` (any query), not `/api/health/x`.
    #[serde(default)]
    pub path: Option<String>,
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
    /// Which parameter names the patient in the audit record (docs/audit.md "Patients").
    #[serde(default)]
    pub audit: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
struct Route {
    /// The `path` or `path_prefix` value (decoded canonical form, `{name}` templates allowed).
    pattern: String,
    /// `path` (true): that path only; `path_prefix` (false): it and every path below it.
    exact: bool,
    methods: Vec<String>,
    require: Requirement,
    authz: Option<Authz>,
    mode: Option<Mode>,
    patient: Option<PatientParam>,
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

impl RouteDoc {
    /// The rule's one matcher: (field name, pattern, exact). Exactly one of `path` and
    /// `path_prefix` is given; anything else is refused naming the field.
    pub fn matcher(&self, i: usize) -> Result<(&'static str, &str, bool), PolicyError> {
        match (&self.path, &self.path_prefix) {
            (Some(p), None) => Ok(("path", p, true)),
            (None, Some(p)) => Ok(("path_prefix", p, false)),
            (Some(_), Some(_)) => Err(PolicyError::new(
                format!("routes[{i}].path"),
                "give either `path` (exact) or `path_prefix`, not both",
            )),
            (None, None) => Err(PolicyError::new(
                format!("routes[{i}].path_prefix"),
                "one of `path` (exact) or `path_prefix` is required",
            )),
        }
    }

    /// The matcher in words, for `check`: "`/a` (exact)" or "`/a` and every path below it".
    pub fn describe_matcher(&self) -> String {
        match (&self.path, &self.path_prefix) {
            (Some(p), _) => format!("`{p}` (exact)"),
            (None, Some(p)) => format!("`{p}` and every path below it"),
            (None, None) => String::new(),
        }
    }
}

impl Route {
    /// The template parameters when `path` (canonical, query ignored) matches this rule.
    fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        if self.pattern.contains('{') {
            return authz::match_template(&self.pattern, path, self.exact);
        }
        let ok = if self.exact {
            path == self.pattern
        } else {
            // Segment boundary: the prefix ends in `/`, or the path goes on with `/`.
            path == self.pattern
                || (path.starts_with(&self.pattern)
                    && (self.pattern.ends_with('/')
                        || path.as_bytes().get(self.pattern.len()) == Some(&b'/')))
        };
        ok.then(Vec::new)
    }
}

pub(crate) const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

impl RouteTable {
    #[inline]
    pub fn compile(docs: Option<&[RouteDoc]>) -> Result<RouteTable, PolicyError> {
        let mut routes = Vec::new();
        for (i, d) in docs.unwrap_or_default().iter().enumerate() {
            let (matcher, pattern, exact) = d.matcher(i)?;
            let field = format!("routes[{i}].{matcher}");
            if !pattern.starts_with('/') {
                return Err(PolicyError::new(field, "must start with `/`"));
            }
            if pattern.contains(['?', '#']) {
                return Err(PolicyError::new(
                    field,
                    "must be a path without query or fragment",
                ));
            }
            // Patterns are compared with the decoded canonical path (docs/checks.md, "Path
            // canonicalisation"): a pattern must already be in that form or it never matches.
            // A template segment `{name}` stands for one plain segment.
            let probe: Vec<&str> = pattern
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                .collect();
            let probe = probe.join("/");
            let canonical_ok = path::canonical(&probe)
                .map(|c| c.path() == probe)
                .unwrap_or(false);
            if !canonical_ok {
                return Err(PolicyError::new(
                    field,
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
                Some(a) => Some(Authz::compile(i, matcher, pattern, a)?),
                None => {
                    authz::template_params(pattern, &format!("routes[{i}].{matcher}"))?;
                    None
                }
            };
            let patient = match &d.audit {
                Some(a) => Some(crate::audit_policy::compile_route(a, i, pattern)?),
                None => None,
            };
            routes.push(Route {
                patient,
                pattern: pattern.to_string(),
                exact,
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

    /// The public (`require: none`) `path_prefix` rules, as (index, prefix): each makes every
    /// deeper path public too (`/api/health` also opens `/api/health/admin/dump`), whatever
    /// `unmatched` says. `check` warns about them; an exact `path` opens one path only.
    pub fn public_prefixes_covering_deeper_paths(&self) -> Vec<(usize, &str)> {
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.require == Requirement::None && !r.exact)
            .map(|(i, r)| (i, r.pattern.as_str()))
            .collect()
    }

    /// Rule `index`'s `path` or `path_prefix`, as written.
    pub fn pattern_of(&self, index: usize) -> Option<&str> {
        self.routes.get(index).map(|r| r.pattern.as_str())
    }

    /// Rule `index`'s patient parameter (`routes[].audit`).
    pub fn patient_of(&self, index: usize) -> Option<&PatientParam> {
        self.routes.get(index).and_then(|r| r.patient.as_ref())
    }

    /// Some route names its patient for the audit record.
    pub fn names_patients(&self) -> bool {
        self.routes.iter().any(|r| r.patient.is_some())
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
            let Some(params) = r.matches(path) else {
                continue;
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
                path_prefix: Some(bad.to_string()),
                path: None,
                methods: vec![],
                require: Requirement::None,
                authz: None,
                mode: None,
                audit: None,
            }];
            let err = RouteTable::compile(Some(&docs)).err().map(|e| e.field);
            assert_eq!(err.as_deref(), Some("routes[0].path_prefix"), "{bad}");
        }
    }

    #[test]
    fn exact_path_matches_one_path_and_prefixes_stop_at_segments() {
        let t = table(
            r#"[{"path":"/api/v2/health","methods":["GET"],"require":"none"},
                {"path":"/api/v2/orgs/{org}","require":"none"},
                {"path_prefix":"/api/v2/public","require":"none"},
                {"path_prefix":"/api/v2","require":"token"}]"#,
        );
        let cases = [
            ("GET", "/api/v2/health", Some(0)),
            ("GET", "/api/v2/health?verbose=1", Some(0)),
            ("GET", "/api/v2/health/admin/dump", Some(3)),
            ("GET", "/api/v2/health/", Some(3)),
            ("GET", "/api/v2/healthz", Some(3)),
            ("POST", "/api/v2/health", Some(3)),
            ("GET", "/api/v2/orgs/1", Some(1)),
            ("GET", "/api/v2/orgs/1/members", Some(3)),
            ("GET", "/api/v2/public", Some(2)),
            ("GET", "/api/v2/public/x/y", Some(2)),
            ("GET", "/api/v2/publicity", Some(3)),
            ("GET", "/api/v2x", None),
        ];
        for (m, p, want) in cases {
            let c = path::canonical(p).unwrap();
            assert_eq!(t.lookup(m, &c).rule, want, "{m} {p}");
        }
        let r = t.lookup("GET", &path::canonical("/api/v2/orgs/974").unwrap());
        assert_eq!(r.params, vec![("org".to_string(), "974".to_string())]);
        assert_eq!(
            t.public_prefixes_covering_deeper_paths(),
            vec![(2, "/api/v2/public")]
        );
    }

    #[test]
    fn one_matcher_per_rule() {
        for (json, field) in [
            (
                r#"[{"path":"/a","path_prefix":"/a","require":"none"}]"#,
                "routes[0].path",
            ),
            (r#"[{"require":"none"}]"#, "routes[0].path_prefix"),
            (r#"[{"path":"a","require":"none"}]"#, "routes[0].path"),
            (r#"[{"path":"/a/../b","require":"none"}]"#, "routes[0].path"),
            (
                r#"[{"path":"/a/{x}{y}","require":"none"}]"#,
                "routes[0].path",
            ),
            (
                r#"[{"path":"/a/{x}","require":"token","authz":{"bind":[{"path_param":"y","claim":"c"}]}}]"#,
                "routes[0].authz.bind[0].path_param",
            ),
        ] {
            let docs: Vec<RouteDoc> = serde_json::from_str(json).unwrap();
            let err = RouteTable::compile(Some(&docs)).err().map(|e| e.field);
            assert_eq!(err.as_deref(), Some(field), "{json}");
        }
    }
}
