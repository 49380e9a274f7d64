//! A route's compiled conditions (docs/checks.md §4): a claim or `authorization_details` field
//! test, and a binding of a path parameter or header to the token. Each says whether it holds;
//! a missing claim or one of the wrong type fails its condition (fail closed).

use serde_json::{Map, Value};

use super::doc::{BindMatch, CondDoc};
use crate::claims::VerifiedToken;
use crate::error::PolicyError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Test {
    Equals(String),
    OneOf(Vec<String>),
    Prefix(String),
    Present(bool),
    Range(Option<f64>, Option<f64>),
    Contains(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Cond {
    /// Claim name or dotted field path.
    pub(super) name: String,
    pub(super) path: Vec<String>,
    pub(super) test: Test,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Detail {
    pub(super) type_: String,
    pub(super) fields: Vec<Cond>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Source {
    PathParam(String),
    Header(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Target {
    Claim(String),
    Detail { type_: String, path: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Bind {
    pub(super) source: Source,
    pub(super) target: Target,
    pub(super) match_: BindMatch,
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
pub(super) fn compile_cond(field: &str, d: &CondDoc, key: &str) -> Result<Cond, PolicyError> {
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

/// `authorization_details` as a list of objects (RFC 9396 §2: a JSON array; a single object
/// is read as a one-entry list). Anything else: no entries.
pub(super) fn detail_entries(claims: &Map<String, Value>) -> Vec<&Map<String, Value>> {
    match claims.get("authorization_details") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_object).collect(),
        Some(Value::Object(o)) => vec![o],
        _ => Vec::new(),
    }
}

/// Dotted path through objects; a numeric segment indexes an array.
pub(super) fn lookup<'v>(obj: &'v Map<String, Value>, path: &[String]) -> Option<&'v Value> {
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
    pub(super) fn holds(&self, v: Option<&Value>) -> bool {
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
    pub(super) fn holds(
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
mod tests {
    use super::*;
    use serde_json::json;

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
}
