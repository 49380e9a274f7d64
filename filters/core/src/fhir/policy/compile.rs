//! Checking and compiling the `fhir` section: every error names its field (`fhir.<field>`).

use serde_json::Value;

use super::document::{CompartmentDoc, FhirDoc, MAX_BUFFER};
use super::rules::{FhirPolicy, OperationRule, RBW_CREDENTIALS, RBW_NEVER};
use crate::error::PolicyError;
use crate::fhir::compartment::{Compartment, PATIENT_COMPARTMENT, SUBJECT_ONLY};
use crate::fhir::interaction::{normalise_base, Level};
use crate::fhir::scope::{is_resource_type, Context, Perms};

impl CompartmentDoc {
    #[inline]
    fn compile(&self) -> Result<Compartment, PolicyError> {
        let subject_only = match self.preset.as_deref() {
            None | Some("r4") => false,
            Some("subject_only") => true,
            Some(p) => {
                return Err(err(
                    "compartment.preset",
                    format!("`{p}` is not one of r4, subject_only"),
                ))
            }
        };
        let mut lists: Vec<(&str, Vec<&str>)> = Vec::new();
        for (t, names) in &self.params {
            let field = format!("compartment.params.{t}");
            let names: Option<Vec<&str>> = names
                .as_array()
                .and_then(|a| a.iter().map(Value::as_str).collect());
            let Some(names) = names else {
                return Err(err(field, "must be a list of compartment parameter names"));
            };
            if t == "Patient" {
                return Err(err(
                    field,
                    "Patient is in its own compartment by id and its `link` always counts",
                ));
            }
            let Some((_, r4)) = PATIENT_COMPARTMENT.iter().find(|(x, _)| x == t) else {
                return Err(err(
                    field,
                    format!("`{t}` is not in the patient compartment"),
                ));
            };
            for (i, n) in names.iter().enumerate() {
                if !r4.iter().any(|(p, _)| p == n) {
                    return Err(err(
                        format!("{field}[{i}]"),
                        format!("`{n}` is not a compartment parameter of {t}"),
                    ));
                }
                if names.iter().take(i).any(|m| m == n) {
                    return Err(err(format!("{field}[{i}]"), "listed twice"));
                }
            }
            lists.push((t.as_str(), names));
        }
        if !subject_only && self.params.is_empty() {
            return Ok(Compartment::default());
        }
        Ok(Compartment::narrowed(|t, p| {
            match lists.iter().find(|(x, _)| *x == t) {
                Some((_, names)) => names.contains(&p),
                None => !subject_only || SUBJECT_ONLY.contains(&p),
            }
        }))
    }
}

fn err(field: impl AsRef<str>, msg: impl Into<String>) -> PolicyError {
    PolicyError::new(format!("fhir.{}", field.as_ref()), msg)
}

fn check_size(field: &str, v: usize) -> Result<(), PolicyError> {
    if v == 0 || v > MAX_BUFFER {
        return Err(err(field, format!("must be between 1 and {MAX_BUFFER}")));
    }
    Ok(())
}

impl FhirDoc {
    #[inline]
    pub fn compile(&self) -> Result<FhirPolicy, PolicyError> {
        let base = &self.base_path;
        if !base.starts_with('/')
            || base.contains(['?', '#', '%', ';', '\\'])
            || base.contains("//")
            || base.split('/').any(|s| s == "." || s == "..")
        {
            return Err(err(
                "base_path",
                "must be an absolute path without query, fragment, escapes or empty segments",
            ));
        }

        if self.scope_contexts.is_empty() {
            return Err(err("scope_contexts", "at least one context is required"));
        }
        let mut contexts = Vec::new();
        for (i, c) in self.scope_contexts.iter().enumerate() {
            let ctx = Context::parse(c).ok_or_else(|| {
                err(
                    format!("scope_contexts[{i}]"),
                    format!("`{c}` is not one of patient, user, system"),
                )
            })?;
            if contexts.contains(&ctx) {
                return Err(err(format!("scope_contexts[{i}]"), "listed twice"));
            }
            contexts.push(ctx);
        }

        if self.patient_claim.trim().is_empty() {
            return Err(err("patient_claim", "must not be empty"));
        }

        let resource_types: Vec<String> = match &self.resource_types {
            None => PATIENT_COMPARTMENT
                .iter()
                .map(|(t, _)| t.to_string())
                .collect(),
            Some(list) => {
                if list.is_empty() {
                    return Err(err("resource_types", "must not be empty"));
                }
                for (i, t) in list.iter().enumerate() {
                    if !is_resource_type(t) {
                        return Err(err(
                            format!("resource_types[{i}]"),
                            format!("`{t}` is not a FHIR resource type name"),
                        ));
                    }
                    if list.iter().take(i).any(|u| u == t) {
                        return Err(err(format!("resource_types[{i}]"), "listed twice"));
                    }
                }
                list.clone()
            }
        };

        let compartment = self.compartment.compile()?;
        for (i, t) in self.patient_shared_types.iter().enumerate() {
            let f = format!("patient_shared_types[{i}]");
            if !resource_types.contains(t) {
                return Err(err(f, format!("`{t}` is not in `resource_types`")));
            }
            if compartment.contains(t) {
                return Err(err(
                    f,
                    format!("`{t}` is in the patient compartment; it cannot be shared"),
                ));
            }
        }

        let mut operations: Vec<OperationRule> = Vec::new();
        for (i, o) in self.operations.iter().enumerate() {
            let f = |name: &str| format!("operations[{i}].{name}");
            let name = o.name.strip_prefix('$').unwrap_or(&o.name);
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(err(
                    f("name"),
                    format!("`{}` is not an operation name", o.name),
                ));
            }
            if operations.iter().any(|p| p.name == name) {
                return Err(err(f("name"), "operation listed twice"));
            }
            if o.levels.is_empty() {
                return Err(err(f("levels"), "at least one level is required"));
            }
            let mut levels = Vec::new();
            for (j, l) in o.levels.iter().enumerate() {
                let level = Level::parse(l).ok_or_else(|| {
                    err(
                        format!("operations[{i}].levels[{j}]"),
                        format!("`{l}` is not one of system, type, instance"),
                    )
                })?;
                if !levels.contains(&level) {
                    levels.push(level);
                }
            }
            for (j, t) in o.resource_types.iter().enumerate() {
                if !resource_types.contains(t) {
                    return Err(err(
                        format!("operations[{i}].resource_types[{j}]"),
                        format!("`{t}` is not in `resource_types`"),
                    ));
                }
            }
            if !o.resource_types.is_empty() && levels == [Level::System] {
                return Err(err(
                    f("resource_types"),
                    "a system-level operation has no resource type",
                ));
            }
            let perms = Perms::parse(&o.permissions)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    err(
                        f("permissions"),
                        format!(
                            "`{}` is not SMART permissions (`cruds` in order, or read/write/*)",
                            o.permissions
                        ),
                    )
                })?;
            operations.push(OperationRule {
                name: name.to_string(),
                levels,
                resource_types: o.resource_types.clone(),
                perms,
                all_types: o.all_types,
            });
        }

        check_size(
            "response_check.max_body_bytes",
            self.response_check.max_body_bytes,
        )?;
        check_size("max_request_body_bytes", self.max_request_body_bytes)?;
        let cluster = &self.read_before_write_cluster;
        if cluster.is_empty() || cluster.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(
                "read_before_write_cluster",
                "must be an Envoy cluster name (non-empty, no whitespace)",
            ));
        }

        let mut rbw_headers: Vec<String> = Vec::new();
        for (i, h) in self.read_before_write_headers.iter().enumerate() {
            let f = format!("read_before_write_headers[{i}]");
            let token = !h.is_empty()
                && h.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
                });
            if !token {
                return Err(err(
                    f,
                    "must be a lower-case HTTP header name (RFC 9110 §5.1), no pseudo-headers",
                ));
            }
            if RBW_NEVER.contains(&h.as_str()) {
                return Err(err(
                    f,
                    format!("`{h}` is set by the stored read itself or belongs to the client's own request"),
                ));
            }
            if RBW_CREDENTIALS.contains(&h.as_str()) && !self.read_before_write_copy_credentials {
                return Err(err(
                    f,
                    format!("`{h}` carries credentials; set `read_before_write_copy_credentials: true` to copy it"),
                ));
            }
            if rbw_headers.contains(h) {
                return Err(err(f, "listed twice"));
            }
            rbw_headers.push(h.clone());
        }

        Ok(FhirPolicy {
            server: self.server,
            base_path: normalise_base(base),
            contexts,
            patient_claim: self.patient_claim.clone(),
            resource_types,
            patient_shared_types: self.patient_shared_types.clone(),
            operations,
            compartment,
            max_response_bytes: self.response_check.max_body_bytes,
            hide_foreign_as_not_found: self.hide_foreign_as_not_found,
            max_request_body_bytes: self.max_request_body_bytes,
            hold_headers_while_buffering: self.hold_headers_while_buffering,
            read_before_write_cluster: cluster.clone(),
            read_before_write_headers: rbw_headers,
        })
    }
}
