//! The policy's `audit` section and a route's `audit` (docs/audit.md): whether the audit record
//! is built at all, whether the FHIR scope step reads the patients bodies name, and which
//! request parameter names a REST route's patient.

use serde::Deserialize;

use crate::error::PolicyError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditDoc {
    /// `false`: no audit record is built or written. Default `true`.
    #[serde(default)]
    pub record: Option<bool>,
    /// Name the patients of request and response bodies (FHIR JSON). Default `true` with a
    /// `fhir` section; only a FHIR API can have it.
    #[serde(default)]
    pub patients_in_bodies: Option<bool>,
}

/// The compiled `audit` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPolicy {
    pub record: bool,
    pub patients_in_bodies: bool,
}

impl AuditDoc {
    pub fn compile(&self, fhir: bool) -> Result<AuditPolicy, PolicyError> {
        let record = self.record.unwrap_or(true);
        let bodies = self.patients_in_bodies.unwrap_or(fhir);
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
}

/// A route's `audit`: which parameter of the request names the patient (a plain REST API).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuditDoc {
    /// A `{name}` template parameter of the route's `path` / `path_prefix`.
    #[serde(default)]
    pub patient_path_param: Option<String>,
    /// A query parameter (its first occurrence, percent-decoded).
    #[serde(default)]
    pub patient_query_param: Option<String>,
}

/// Where a route's patient is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientParam {
    Path(String),
    Query(String),
}

impl RouteAuditDoc {
    /// `template`: the route's template parameter names.
    pub fn compile(&self, i: usize, template: &[String]) -> Result<PatientParam, PolicyError> {
        let field = |f: &str| format!("routes[{i}].audit.{f}");
        match (&self.patient_path_param, &self.patient_query_param) {
            (Some(p), None) if template.contains(p) => Ok(PatientParam::Path(p.clone())),
            (Some(p), None) => Err(PolicyError::new(
                field("patient_path_param"),
                format!("`{p}` is not a `{{name}}` parameter of the route's path"),
            )),
            (None, Some(q)) if !q.is_empty() => Ok(PatientParam::Query(q.clone())),
            _ => Err(PolicyError::new(
                field("patient_path_param"),
                "give one of `patient_path_param` or `patient_query_param`",
            )),
        }
    }
}

impl PatientParam {
    /// The patient the request names: the bound path parameter, or the query parameter.
    pub fn value(&self, params: &[(String, String)], path_with_query: &str) -> Option<String> {
        let v = match self {
            PatientParam::Path(name) => params.iter().find(|(n, _)| n == name)?.1.clone(),
            PatientParam::Query(name) => {
                let q = path_with_query.split_once('?')?.1;
                crate::fhir::query::parse(q)?
                    .into_iter()
                    .find(|p| &p.name == name)?
                    .value
            }
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
