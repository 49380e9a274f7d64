//! The policy's `audit` section and a route's `audit` (docs/audit.md): whether the audit record
//! is built at all, whether the FHIR scope step reads the patients bodies name, and which
//! request parameter names a REST route's patient.

use serde_json::{Map, Value};

use crate::error::PolicyError;

/// The compiled `audit` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPolicy {
    /// `false`: no audit record is built or written. Default `true`.
    pub record: bool,
    /// Name the patients of request and response bodies (FHIR JSON). Default `true` with a
    /// `fhir` section; only a FHIR API can have it.
    pub patients_in_bodies: bool,
}

/// Where a route's patient is named: the `{name}` path parameter, or the query parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientParam {
    pub name: String,
    pub in_path: bool,
}

/// The members of an `audit` object, each checked by `member` (read as a JSON value, like
/// `cors`: a derived reader costs the module more bytes). Errors name the field.
fn members(
    v: &Value,
    at: &str,
    mut member: impl FnMut(&str, &Value) -> Result<(), &'static str>,
) -> Result<(), PolicyError> {
    let o: &Map<String, Value> = v
        .as_object()
        .ok_or_else(|| PolicyError::new(at, "must be an object"))?;
    for (k, x) in o {
        member(k, x).map_err(|why| PolicyError::new(format!("{at}.{k}"), why))?;
    }
    Ok(())
}

/// The policy's `audit` (`None`: left out).
pub fn compile(v: Option<&Value>, fhir: bool) -> Result<AuditPolicy, PolicyError> {
    let (mut record, mut bodies) = (true, fhir);
    if let Some(v) = v {
        members(v, "audit", |k, x| {
            let slot = match k {
                "record" => &mut record,
                "patients_in_bodies" => &mut bodies,
                _ => return Err("unknown field"),
            };
            *slot = x.as_bool().ok_or("true or false")?;
            Ok(())
        })?;
    }
    if bodies && !fhir {
        return Err(PolicyError::new(
            "audit.patients_in_bodies",
            "needs a `fhir` section (a REST route names its patient with `routes[].audit`)",
        ));
    }
    Ok(AuditPolicy {
        record,
        patients_in_bodies: bodies && record,
    })
}

/// Route `i`'s `audit`: `patient_path_param` (a `{name}` segment of `pattern`) or
/// `patient_query_param`.
pub fn compile_route(v: &Value, i: usize, pattern: &str) -> Result<PatientParam, PolicyError> {
    let at = format!("routes[{i}].audit");
    let mut found = Vec::new();
    members(v, &at, |k, x| {
        let in_path = match k {
            "patient_path_param" => true,
            "patient_query_param" => false,
            _ => return Err("unknown field"),
        };
        let name = x
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or("a non-empty string")?;
        let segment = |s: &str| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) == Some(name);
        if in_path && !pattern.split('/').any(segment) {
            return Err("not a `{name}` segment of the route's path");
        }
        found.push(PatientParam {
            name: name.to_string(),
            in_path,
        });
        Ok(())
    })?;
    match (found.pop(), found.is_empty()) {
        (Some(p), true) => Ok(p),
        _ => Err(PolicyError::new(
            format!("{at}.patient_path_param"),
            "give one of `patient_path_param` or `patient_query_param`",
        )),
    }
}

impl PatientParam {
    /// The patient the request names: the bound path parameter, or the query parameter.
    pub fn value(&self, params: &[(String, String)], path_with_query: &str) -> Option<String> {
        let v = if self.in_path {
            params.iter().find(|(n, _)| *n == self.name)?.1.clone()
        } else {
            let q = path_with_query.split_once('?')?.1;
            crate::fhir::query::parse(q)?
                .into_iter()
                .find(|p| p.name == self.name)?
                .value
        };
        Some(v).filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::policy::Policy;

    fn load(extra: &str) -> Result<Policy, String> {
        let doc = format!(
            r#"{{"api":{{"name":"a","audience":"a"}},"issuers":[{{"issuer":"https://i","jwks_uri":"https://i/jwks","jwks_cluster":"c"}}]{extra}}}"#
        );
        Policy::from_json(doc.as_bytes()).map_err(|e| e.field)
    }

    #[test]
    fn the_audit_knobs_and_their_errors() {
        let p = load("").unwrap();
        assert!(p.audit.record && !p.audit.patients_in_bodies);
        let p = load(r#","audit":{"record":false}"#).unwrap();
        assert!(!p.audit.record);
        assert_eq!(
            load(r#","audit":{"patients_in_bodies":true}"#)
                .err()
                .as_deref(),
            Some("audit.patients_in_bodies")
        );
        assert_eq!(
            load(r#","audit":{"recrod":true}"#).err().as_deref(),
            Some("audit.recrod")
        );
        let route = r#","routes":[{"path_prefix":"/p/{pid}","require":"token","audit":"#;
        let p = load(&format!(r#"{route}{{"patient_path_param":"pid"}}}}]"#)).unwrap();
        let r = p.route("GET", "/p/abc/x?q=1", &|_| false).unwrap();
        let param = p.routes.patient_of(r.rule.unwrap()).unwrap();
        assert_eq!(
            param.value(&r.params, &r.path_with_query).as_deref(),
            Some("abc")
        );
        let p = load(&format!(r#"{route}{{"patient_query_param":"patient"}}}}]"#)).unwrap();
        let r = p
            .route("GET", "/p/1?a=b&patient=p%2D9", &|_| false)
            .unwrap();
        let param = p.routes.patient_of(r.rule.unwrap()).unwrap();
        assert_eq!(
            param.value(&r.params, &r.path_with_query).as_deref(),
            Some("p-9")
        );
        for (audit, field) in [
            (
                r#"{"patient_path_param":"x"}"#,
                "routes[0].audit.patient_path_param",
            ),
            (r#"{}"#, "routes[0].audit.patient_path_param"),
            (r#"{"patient_path":"x"}"#, "routes[0].audit.patient_path"),
        ] {
            let err = load(&format!("{route}{audit}}}]")).err();
            assert_eq!(err.as_deref(), Some(field), "{audit}");
        }
        let err = load(&format!(
            r#"{route}{{"patient_path_param":"pid"}}}}],"audit":{{"record":false}}"#
        ))
        .err();
        assert_eq!(err.as_deref(), Some("audit.record"));
    }
}
