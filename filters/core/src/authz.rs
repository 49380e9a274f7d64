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

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::claims::VerifiedToken;
use crate::denial::Reason;
use crate::error::PolicyError;

/// Enforce (deny) or shadow (decide, count `shadow_denied.<reason>`, log, let it pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    /// Dry run: every decision is made and counted, the request passes.
    Shadow,
}

// ---------- the document ----------

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzDoc {
    #[serde(default)]
    pub scopes: Option<ScopesDoc>,
    #[serde(default)]
    pub claims: Vec<CondDoc>,
    #[serde(default)]
    pub authorization_details: Vec<DetailDoc>,
    #[serde(default)]
    pub bind: Vec<BindDoc>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopesDoc {
    /// Every one of these scopes must be granted.
    #[serde(default)]
    pub all_of: Vec<String>,
    /// At least one of these scopes must be granted.
    #[serde(default)]
    pub any_of: Vec<String>,
}

/// One condition on a claim (`claim`) or on a field of an `authorization_details` entry
/// (`field`, dotted path). Exactly one test, except `gte` + `lte` together (a range).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CondDoc {
    #[serde(default)]
    pub claim: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub equals: Option<Value>,
    #[serde(default)]
    pub one_of: Option<Vec<Value>>,
    #[serde(default)]
    pub prefix: Option<String>,
    /// `true`: present (not null); `false`: absent.
    #[serde(default)]
    pub present: Option<bool>,
    #[serde(default)]
    pub gte: Option<f64>,
    #[serde(default)]
    pub lte: Option<f64>,
    /// The claim is a list (or a single value) that contains this value.
    #[serde(default)]
    pub contains: Option<Value>,
}

/// RFC 9396 §2: some entry of `authorization_details` with this `type` satisfies every field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailDoc {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub fields: Vec<CondDoc>,
}

/// A request value (path template parameter or header) that must equal a token value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindDoc {
    #[serde(default)]
    pub path_param: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub claim: Option<String>,
    #[serde(default)]
    pub authorization_details: Option<DetailRefDoc>,
    /// `equals` (default) or `colon_suffix`: the token value ends with `:` + the request
    /// value (HelseID's `NO:ORGNR:<parent>:<child>` organisation identifiers).
    #[serde(default, rename = "match")]
    pub match_: BindMatch,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailRefDoc {
    #[serde(rename = "type")]
    pub type_: String,
    pub field: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindMatch {
    #[default]
    Equals,
    ColonSuffix,
}

// ---------- compiled ----------

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Equals(String),
    OneOf(Vec<String>),
    Prefix(String),
    Present(bool),
    Range(Option<f64>, Option<f64>),
    Contains(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Cond {
    /// Claim name or dotted field path.
    name: String,
    path: Vec<String>,
    test: Test,
}

#[derive(Debug, Clone, PartialEq)]
struct Detail {
    type_: String,
    fields: Vec<Cond>,
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    PathParam(String),
    Header(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Target {
    Claim(String),
    Detail { type_: String, path: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
struct Bind {
    source: Source,
    target: Target,
    match_: BindMatch,
}

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

/// What the check reads from the request besides the token.
pub struct AuthzRequest<'a> {
    /// Template parameters bound by the matching route's `path` or `path_prefix`.
    pub path_params: &'a [(String, String)],
    /// A request header's value (`None` when absent).
    pub header: &'a dyn Fn(&str) -> Option<String>,
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[inline]
fn compile_cond(field: &str, d: &CondDoc, key: &str) -> Result<Cond, PolicyError> {
    let (name, other) = match key {
        "claim" => (&d.claim, &d.field),
        _ => (&d.field, &d.claim),
    };
    let name = name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| PolicyError::new(format!("{field}.{key}"), "required, non-empty"))?;
    if other.is_some() {
        let wrong = if key == "claim" { "field" } else { "claim" };
        return Err(PolicyError::new(
            format!("{field}.{wrong}"),
            format!("not allowed here (use `{key}`)"),
        ));
    }
    let scalar_of = |v: &Value, f: &str| {
        scalar(v).ok_or_else(|| {
            PolicyError::new(
                format!("{field}.{f}"),
                "must be a string, number or boolean",
            )
        })
    };
    let mut tests = Vec::new();
    if let Some(v) = &d.equals {
        tests.push(Test::Equals(scalar_of(v, "equals")?));
    }
    if let Some(vs) = &d.one_of {
        if vs.is_empty() {
            return Err(PolicyError::new(
                format!("{field}.one_of"),
                "must not be empty",
            ));
        }
        let mut out = Vec::new();
        for (i, v) in vs.iter().enumerate() {
            out.push(scalar_of(v, &format!("one_of[{i}]"))?);
        }
        tests.push(Test::OneOf(out));
    }
    if let Some(p) = &d.prefix {
        if p.is_empty() {
            return Err(PolicyError::new(
                format!("{field}.prefix"),
                "must not be empty",
            ));
        }
        tests.push(Test::Prefix(p.clone()));
    }
    if let Some(p) = d.present {
        tests.push(Test::Present(p));
    }
    if d.gte.is_some() || d.lte.is_some() {
        for (f, v) in [("gte", d.gte), ("lte", d.lte)] {
            if v.is_some_and(|x| !x.is_finite()) {
                return Err(PolicyError::new(format!("{field}.{f}"), "must be finite"));
            }
        }
        tests.push(Test::Range(d.gte, d.lte));
    }
    if let Some(v) = &d.contains {
        tests.push(Test::Contains(scalar_of(v, "contains")?));
    }
    if tests.len() != 1 {
        return Err(PolicyError::new(
            field.to_string(),
            "give exactly one of equals, one_of, prefix, present, contains, or gte/lte",
        ));
    }
    let path = name.split('.').map(str::to_string).collect();
    Ok(Cond {
        name,
        path,
        test: tests.remove(0),
    })
}

/// Template parameter names of a `path` or `path_prefix` (`/orgs/{orgnr}/x` → `["orgnr"]`), validated:
/// each `{name}` is a whole segment, `[A-Za-z0-9_]+`, used once.
#[inline]
pub fn template_params(prefix: &str, field: &str) -> Result<Vec<String>, PolicyError> {
    let mut names: Vec<String> = Vec::new();
    for seg in prefix.split('/') {
        if !seg.contains(['{', '}']) {
            continue;
        }
        let name = seg
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .ok_or_else(|| {
                PolicyError::new(
                    field.to_string(),
                    "a template parameter is a whole segment `{name}` (letters, digits, _)",
                )
            })?;
        if names.iter().any(|n| n == name) {
            return Err(PolicyError::new(
                field.to_string(),
                format!("template parameter `{name}` used twice"),
            ));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// Matches `path` (query ignored) against a template: literal segments equal, `{name}`
/// segments non-empty. A prefix (`exact` false) matches the path and every path below it; an
/// exact `path` matcher (`exact` true) matches the same number of segments only. Returns the
/// bound parameters (raw, not percent-decoded: an encoded value simply fails a binding).
pub fn match_template(pattern: &str, path: &str, exact: bool) -> Option<Vec<(String, String)>> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let pattern = if exact {
        pattern
    } else {
        pattern.trim_end_matches('/')
    };
    let pre: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    if segs.len() < pre.len() || (exact && segs.len() != pre.len()) {
        return None;
    }
    let mut params = Vec::new();
    for (p, s) in pre.iter().zip(segs.iter()) {
        if let Some(name) = p.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            if s.is_empty() {
                return None;
            }
            params.push((name.to_string(), (*s).to_string()));
        } else if p != s {
            return None;
        }
    }
    Some(params)
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

/// `authorization_details` as a list of objects (RFC 9396 §2: a JSON array; a single object
/// is read as a one-entry list). Anything else: no entries.
fn detail_entries(claims: &Map<String, Value>) -> Vec<&Map<String, Value>> {
    match claims.get("authorization_details") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_object).collect(),
        Some(Value::Object(o)) => vec![o],
        _ => Vec::new(),
    }
}

/// Dotted path through objects; a numeric segment indexes an array.
fn lookup<'v>(obj: &'v Map<String, Value>, path: &[String]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let mut v = obj.get(first)?;
    for seg in rest {
        v = match v {
            Value::Object(o) => o.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// A number, or a string holding a JSON number (`security_level` is `"4"`). The string is
/// read by the same JSON number parser as numeric claims (not `str::parse::<f64>`, whose
/// tables cost ~11 KB of the modules: bench/README.md, "Size"), so `"+4"`, `".5"` or
/// `"inf"` are no number. Read from the bytes (`from_slice`, as every other JSON the filters
/// read): `from_str` would instantiate a second copy of the reader (bench/README.md, "Size").
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => serde_json::from_slice::<serde_json::Number>(s.trim().as_bytes())
            .ok()
            .and_then(|n| n.as_f64()),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

impl Cond {
    fn holds(&self, v: Option<&Value>) -> bool {
        let v = v.filter(|v| !v.is_null());
        match (&self.test, v) {
            (Test::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (Test::Equals(e), Some(v)) => scalar(v).as_ref() == Some(e),
            (Test::OneOf(list), Some(v)) => scalar(v).is_some_and(|s| list.contains(&s)),
            (Test::Prefix(p), Some(v)) => v.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            (Test::Range(lo, hi), Some(v)) => number(v)
                .is_some_and(|n| lo.is_none_or(|lo| n >= lo) && hi.is_none_or(|hi| n <= hi)),
            (Test::Contains(c), Some(Value::Array(a))) => {
                a.iter().any(|x| scalar(x).as_ref() == Some(c))
            }
            (Test::Contains(c), Some(v)) => scalar(v).as_ref() == Some(c),
        }
    }
}

impl Bind {
    fn holds(
        &self,
        req: &AuthzRequest<'_>,
        token: &VerifiedToken,
        entries: &[&Map<String, Value>],
    ) -> bool {
        let value = match &self.source {
            Source::PathParam(p) => req
                .path_params
                .iter()
                .find(|(n, _)| n == p)
                .map(|(_, v)| v.clone()),
            // Envoy folds repeated headers into one value joined by `,`: ambiguous, refused.
            Source::Header(h) => (req.header)(h).filter(|v| !v.contains(',')),
        };
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return false;
        };
        let matches = |t: &Value| {
            let Some(t) = scalar(t) else { return false };
            match self.match_ {
                BindMatch::Equals => t == value,
                BindMatch::ColonSuffix => t
                    .strip_suffix(value.as_str())
                    .is_some_and(|head| head.ends_with(':')),
            }
        };
        let any = |v: Option<&Value>| match v {
            Some(Value::Array(a)) => a.iter().any(matches),
            Some(v) => matches(v),
            None => false,
        };
        match &self.target {
            Target::Claim(c) => any(token.claims.get(c)),
            Target::Detail { type_, path } => entries.iter().any(|e| {
                e.get("type").and_then(Value::as_str) == Some(type_.as_str())
                    && any(lookup(e, path))
            }),
        }
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

    /// Numeric strings are read as JSON numbers (the parser numeric claims go through).
    #[test]
    fn numeric_strings() {
        for (v, want) in [
            (json!("4"), Some(4.0)),
            (json!(" 4 "), Some(4.0)),
            (json!("4.5"), Some(4.5)),
            (json!("-1e2"), Some(-100.0)),
            (json!(3), Some(3.0)),
            (json!("+4"), None),
            (json!(".5"), None),
            (json!("4."), None),
            (json!("inf"), None),
            (json!("NaN"), None),
            (json!("4 5"), None),
            (json!("1e999"), None),
            (json!(""), None),
            (json!(true), None),
        ] {
            assert_eq!(number(&v), want, "{v}");
        }
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

    #[test]
    fn templates() {
        assert_eq!(
            match_template("/orgs/{o}/d", "/orgs/1/d/x?q=1", false),
            Some(vec![("o".into(), "1".into())])
        );
        assert_eq!(match_template("/orgs/{o}/d", "/orgs//d", false), None);
        assert_eq!(match_template("/orgs/{o}/d", "/orgs/1/e", false), None);
        assert_eq!(match_template("/orgs/{o}/d", "/orgs/1", false), None);
        assert!(template_params("/a/{x}{y}", "f").is_err());
        assert!(template_params("/a/{x}/{x}", "f").is_err());
        assert!(template_params("/a/x{y}", "f").is_err());
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
