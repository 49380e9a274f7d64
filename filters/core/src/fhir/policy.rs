//! The policy's `fhir` section: how the FHIR scope filter reads SMART scopes for this API.
//!
//! ```json
//! "fhir": {
//!   "base_path": "/fhir",
//!   "scope_contexts": ["patient", "user", "system"],
//!   "patient_claim": "patient",
//!   "resource_types": ["Patient", "Observation", "Condition", "Medication"],
//!   "patient_shared_types": ["Medication"],
//!   "operations": [
//!     {"name": "$everything", "levels": ["instance"], "resource_types": ["Patient"],
//!      "permissions": "rs", "all_types": true}
//!   ],
//!   "response_check": {"max_body_bytes": 1048576},
//!   "hide_foreign_as_not_found": false,
//!   "max_request_body_bytes": 1048576,
//!   "read_before_write_cluster": "api"
//! }
//! ```

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::PolicyError;

use super::compartment::{Compartment, PATIENT_COMPARTMENT, SUBJECT_ONLY};
use super::interaction::{normalise_base, Level};
use super::scope::{is_resource_type, Context, Perms};

const MIB: usize = 1024 * 1024;
const MAX_BUFFER: usize = 64 * MIB;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirDoc {
    /// The server behind the guard (`generic` default, `hapi`, `microsoft`, `ibm`, `firely`,
    /// `medplum`): how it reads a request (`super::server`, docs/checks.md).
    #[serde(default)]
    pub server: super::server::Server,
    /// FHIR base path the API serves under (default `/`).
    #[serde(default = "default_base")]
    pub base_path: String,
    /// Scope contexts this API accepts (default all three).
    #[serde(default = "default_contexts")]
    pub scope_contexts: Vec<String>,
    /// The token claim holding the launch patient's id (default `patient`).
    #[serde(default = "default_patient_claim")]
    pub patient_claim: String,
    /// Resource types the API serves. Default: every type of the patient compartment table.
    #[serde(default)]
    pub resource_types: Option<Vec<String>>,
    /// Types outside the patient compartment (e.g. `Medication`, `Practitioner`) that a
    /// `patient/` grant may read and search without confinement. Default none.
    #[serde(default)]
    pub patient_shared_types: Vec<String>,
    /// Operations the API allows, and what each needs. Unlisted operations are refused.
    #[serde(default)]
    pub operations: Vec<OperationDoc>,
    /// Which compartment parameters put a resource in the patient's compartment. Default:
    /// the FHIR R4 `CompartmentDefinition/patient` table.
    #[serde(default)]
    pub compartment: CompartmentDoc,
    #[serde(default)]
    pub response_check: ResponseCheckDoc,
    /// Answer 404 instead of 403 when a resource turns out to be another patient's.
    #[serde(default)]
    pub hide_foreign_as_not_found: bool,
    /// Largest request body the filter buffers (bundles, `_search` forms, writes).
    #[serde(default = "default_body")]
    pub max_request_body_bytes: usize,
    /// The host holds HTTP headers while the filter reads the body: Envoy's Wasm
    /// `PluginConfig.allow_on_headers_stop_iteration: true` (envoy/render.py sets it). Where a
    /// host cannot (Istio's WasmPlugin has no such field), set `false`: bodies are then read
    /// after the headers went on, and a refusal decided on a response body resets the stream
    /// (the client gets no status and none of the body) instead of answering 403.
    #[serde(default = "default_true")]
    pub hold_headers_while_buffering: bool,
    /// Envoy cluster the filter reads the stored resource from before an update, patch or
    /// delete by id under a patient or query-constrained grant (default `api`, the route's
    /// cluster in envoy/render.py). It must reach the FHIR API itself without passing this
    /// filter chain again (Istio: the API's `inbound|<port>||` cluster in its own sidecar).
    #[serde(default = "default_rbw_cluster")]
    pub read_before_write_cluster: String,
    /// Request headers copied onto the stored read so the API picks the same tenant and
    /// resource as the write (e.g. `x-tenant-id`). Lower-case names; never credentials
    /// (`authorization`, `cookie`, `proxy-authorization`) unless
    /// `read_before_write_copy_credentials` is true; never `dpop` (a proof is bound to the
    /// client's own request, RFC 9449 §4.3), pseudo-headers or hop-by-hop headers.
    #[serde(default)]
    pub read_before_write_headers: Vec<String>,
    /// Allow `authorization`/`cookie`/`proxy-authorization` in `read_before_write_headers`
    /// (an API that authorises the read with the caller's own Bearer token or session).
    #[serde(default)]
    pub read_before_write_copy_credentials: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationDoc {
    /// `$everything` or `everything`.
    pub name: String,
    /// `system`, `type`, `instance`.
    pub levels: Vec<String>,
    /// Types the operation may be invoked on (type/instance level). Empty = any served type.
    #[serde(default)]
    pub resource_types: Vec<String>,
    /// SMART permission letters needed (v2 `cruds` subset, or v1 `read`/`write`/`*`).
    pub permissions: String,
    /// The result spans every type: the letters are needed on every served resource type
    /// (`$everything`, `$export`), not just the type the operation is invoked on.
    #[serde(default)]
    pub all_types: bool,
}

/// `fhir.compartment` (docs/api-owner-guide.md "The patient compartment").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompartmentDoc {
    /// `r4` (default): every parameter of FHIR R4 `CompartmentDefinition/patient`;
    /// `subject_only`: only the parameters naming the record's own patient
    /// ([`SUBJECT_ONLY`]), not its actors (`performer`, `author`, `member`, ...).
    #[serde(default)]
    pub preset: Option<String>,
    /// Per type, the compartment parameters that count, a subset of the type's R4 ones;
    /// overrides the preset for that type. `[]` takes the type out of the compartment.
    #[serde(default)]
    pub params: Map<String, Value>,
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseCheckDoc {
    /// Largest upstream response body the filter buffers to check it.
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
}

impl Default for ResponseCheckDoc {
    fn default() -> Self {
        ResponseCheckDoc {
            max_body_bytes: default_body(),
        }
    }
}

fn default_base() -> String {
    "/".to_string()
}
fn default_contexts() -> Vec<String> {
    Context::ALL.iter().map(|c| c.name().to_string()).collect()
}
fn default_patient_claim() -> String {
    "patient".to_string()
}
fn default_body() -> usize {
    MIB
}
fn default_true() -> bool {
    true
}
fn default_rbw_cluster() -> String {
    "api".to_string()
}

/// One allowed operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRule {
    pub name: String,
    pub levels: Vec<Level>,
    pub resource_types: Vec<String>,
    pub perms: Perms,
    pub all_types: bool,
}

/// The compiled `fhir` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirPolicy {
    pub server: super::server::Server,
    pub base_path: String,
    pub contexts: Vec<Context>,
    pub patient_claim: String,
    pub resource_types: Vec<String>,
    pub patient_shared_types: Vec<String>,
    pub operations: Vec<OperationRule>,
    /// The patient compartment decided with (`fhir.compartment`).
    pub compartment: Compartment,
    pub max_response_bytes: usize,
    pub hide_foreign_as_not_found: bool,
    pub max_request_body_bytes: usize,
    pub hold_headers_while_buffering: bool,
    pub read_before_write_cluster: String,
    pub read_before_write_headers: Vec<String>,
}

/// Headers the stored read sets itself, or that describe the client's own message.
const RBW_NEVER: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "accept",
    "accept-encoding",
    "if-none-exist",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "dpop",
];
const RBW_CREDENTIALS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

impl FhirPolicy {
    /// The request headers to copy onto the stored read (read before write): every value of
    /// each name in `read_before_write_headers`, in request order (docs/checks.md).
    pub fn stored_read_headers(&self, request: &[(String, String)]) -> Vec<(String, String)> {
        request
            .iter()
            .filter(|(k, _)| {
                self.read_before_write_headers
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(k))
            })
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    }

    pub fn serves(&self, t: &str) -> bool {
        self.resource_types.iter().any(|x| x == t)
    }

    pub fn is_shared(&self, t: &str) -> bool {
        self.patient_shared_types.iter().any(|x| x == t)
    }

    pub fn operation(&self, name: &str) -> Option<&OperationRule> {
        self.operations.iter().find(|o| o.name == name)
    }

    /// A policy from a JSON `fhir` section alone (tests, tools).
    pub fn from_section_json(bytes: &[u8]) -> Result<FhirPolicy, PolicyError> {
        let doc: FhirDoc = crate::json_locate::parse(bytes, "fhir")?;
        doc.compile()
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

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"base_path":"fhir"}"#, "fhir.base_path"),
            (r#"{"base_path":"/a//b"}"#, "fhir.base_path"),
            (r#"{"scope_contexts":[]}"#, "fhir.scope_contexts"),
            (
                r#"{"scope_contexts":["patient","admin"]}"#,
                "fhir.scope_contexts[1]",
            ),
            (
                r#"{"scope_contexts":["user","user"]}"#,
                "fhir.scope_contexts[1]",
            ),
            (r#"{"patient_claim":""}"#, "fhir.patient_claim"),
            (
                r#"{"resource_types":["Patient","observation"]}"#,
                "fhir.resource_types[1]",
            ),
            (r#"{"resource_types":[]}"#, "fhir.resource_types"),
            (
                r#"{"resource_types":["Patient"],"patient_shared_types":["Medication"]}"#,
                "fhir.patient_shared_types[0]",
            ),
            (
                r#"{"patient_shared_types":["Observation"],"resource_types":["Observation"]}"#,
                "fhir.patient_shared_types[0]",
            ),
            (
                r#"{"operations":[{"name":"$","levels":["type"],"permissions":"r"}]}"#,
                "fhir.operations[0].name",
            ),
            (
                r#"{"operations":[{"name":"a","levels":[],"permissions":"r"}]}"#,
                "fhir.operations[0].levels",
            ),
            (
                r#"{"operations":[{"name":"a","levels":["type","global"],"permissions":"r"}]}"#,
                "fhir.operations[0].levels[1]",
            ),
            (
                r#"{"operations":[{"name":"a","levels":["type"],"permissions":"sr"}]}"#,
                "fhir.operations[0].permissions",
            ),
            (
                r#"{"operations":[{"name":"a","levels":["type"],"permissions":"r","resource_types":["Foo"]}]}"#,
                "fhir.operations[0].resource_types[0]",
            ),
            (
                r#"{"operations":[{"name":"a","levels":["system"],"permissions":"r","resource_types":["Patient"]}]}"#,
                "fhir.operations[0].resource_types",
            ),
            (
                r#"{"operations":[{"name":"a","levels":["type"],"permissions":"r"},{"name":"$a","levels":["type"],"permissions":"r"}]}"#,
                "fhir.operations[1].name",
            ),
            (
                r#"{"response_check":{"max_body_bytes":0}}"#,
                "fhir.response_check.max_body_bytes",
            ),
            (
                r#"{"max_request_body_bytes":999999999}"#,
                "fhir.max_request_body_bytes",
            ),
            (r#"{"unknown_field":1}"#, "fhir.unknown_field"),
            (
                r#"{"read_before_write_cluster":""}"#,
                "fhir.read_before_write_cluster",
            ),
            (
                r#"{"read_before_write_cluster":"a b"}"#,
                "fhir.read_before_write_cluster",
            ),
            (
                r#"{"operations":[{"name":"a","levels":["type"],"permissions":"r","extra":1}]}"#,
                "fhir.operations[0].extra",
            ),
            (
                r#"{"read_before_write_headers":["x-tenant","X-Tenant-2"]}"#,
                "fhir.read_before_write_headers[1]",
            ),
            (
                r#"{"read_before_write_headers":[":authority"]}"#,
                "fhir.read_before_write_headers[0]",
            ),
            (
                r#"{"read_before_write_headers":["authorization"]}"#,
                "fhir.read_before_write_headers[0]",
            ),
            (
                r#"{"read_before_write_headers":["cookie"]}"#,
                "fhir.read_before_write_headers[0]",
            ),
            (
                r#"{"read_before_write_headers":["dpop"],"read_before_write_copy_credentials":true}"#,
                "fhir.read_before_write_headers[0]",
            ),
            (
                r#"{"read_before_write_headers":["content-length"]}"#,
                "fhir.read_before_write_headers[0]",
            ),
            (
                r#"{"read_before_write_headers":["x-t","x-t"]}"#,
                "fhir.read_before_write_headers[1]",
            ),
            (
                r#"{"read_before_write_headers":[""]}"#,
                "fhir.read_before_write_headers[0]",
            ),
            (
                r#"{"compartment":{"preset":"narrow"}}"#,
                "fhir.compartment.preset",
            ),
            (
                r#"{"compartment":{"params":{"Practitioner":[]}}}"#,
                "fhir.compartment.params.Practitioner",
            ),
            (
                r#"{"compartment":{"params":{"Observation":["subject","actor"]}}}"#,
                "fhir.compartment.params.Observation[1]",
            ),
            (
                r#"{"compartment":{"params":{"Observation":["subject","subject"]}}}"#,
                "fhir.compartment.params.Observation[1]",
            ),
            (
                r#"{"compartment":{"params":{"Patient":[]}}}"#,
                "fhir.compartment.params.Patient",
            ),
            (r#"{"compartment":{"extra":1}}"#, "fhir.compartment.extra"),
            (
                r#"{"compartment":{"params":{"Group":"member"}}}"#,
                "fhir.compartment.params.Group",
            ),
        ];
        for (doc, field) in cases {
            match FhirPolicy::from_section_json(doc.as_bytes()) {
                Ok(_) => panic!("accepted {doc}"),
                Err(e) => assert_eq!(e.field, *field, "{doc}: {e}"),
            }
        }
    }

    #[test]
    fn stored_read_headers_copy_only_the_listed_names() {
        let p = FhirPolicy::from_section_json(
            br#"{"read_before_write_headers":["x-tenant-id","authorization"],"read_before_write_copy_credentials":true}"#,
        );
        let p = p.ok();
        let req: Vec<(String, String)> = [
            ("X-Tenant-Id", "t1"),
            ("authorization", "Bearer x"),
            ("dpop", "proof"),
            ("cookie", "s=1"),
            ("x-tenant-id", "t2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let got = p.map(|p| p.stored_read_headers(&req)).unwrap_or_default();
        let want: Vec<(String, String)> = [
            ("x-tenant-id", "t1"),
            ("authorization", "Bearer x"),
            ("x-tenant-id", "t2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
        let none = FhirPolicy::from_section_json(b"{}").ok();
        assert_eq!(none.map(|p| p.stored_read_headers(&req).len()), Some(0));
        let ok = FhirPolicy::from_section_json(
            br#"{"read_before_write_headers":["cookie"],"read_before_write_copy_credentials":true}"#,
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn narrower_compartment() {
        use crate::fhir::response_check::{Alternative, ResourceCheck, ResponseCheck};
        let check = ResponseCheck::Resource(ResourceCheck {
            resource_type: "Observation".into(),
            id: None,
            history: false,
            alternatives: vec![Alternative {
                patient: Some("a".into()),
                constraint: Vec::new(),
            }],
        });
        // A child's result (subject b) the parent (a) performed.
        let performed = br#"{"resourceType":"Observation","subject":{"reference":"Patient/b"},
            "performer":[{"reference":"Patient/a"}]}"#;
        let own = br#"{"resourceType":"Observation","subject":{"reference":"Patient/a"}}"#;
        let run = |doc: &str, body: &[u8]| {
            let p = FhirPolicy::from_section_json(doc.as_bytes()).ok();
            p.map(|p| crate::fhir::check_response(&p, &check, 200, body).is_ok())
        };
        assert_eq!(run("{}", performed), Some(true));
        assert_eq!(
            run(r#"{"compartment":{"preset":"r4"}}"#, performed),
            Some(true)
        );
        for narrow in [
            r#"{"compartment":{"preset":"subject_only"}}"#,
            r#"{"compartment":{"params":{"Observation":["subject"]}}}"#,
        ] {
            assert_eq!(run(narrow, performed), Some(false), "{narrow}");
            assert_eq!(run(narrow, own), Some(true), "{narrow}");
        }
        // A preset, then one type put back to its R4 parameters.
        let back = r#"{"compartment":{"preset":"subject_only","params":{"Observation":["subject","performer"]}}}"#;
        assert_eq!(run(back, performed), Some(true));
        // The roster: Group is in by `member` (R4), out under subject_only or `[]`.
        let contains = |doc: &str, t: &str| {
            FhirPolicy::from_section_json(doc.as_bytes())
                .ok()
                .map(|p| p.compartment.contains(t))
        };
        assert_eq!(contains("{}", "Group"), Some(true));
        assert_eq!(
            contains(r#"{"compartment":{"preset":"subject_only"}}"#, "Group"),
            Some(false)
        );
        assert_eq!(
            contains(r#"{"compartment":{"params":{"Group":[]}}}"#, "Group"),
            Some(false)
        );
        assert_eq!(
            contains(r#"{"compartment":{"preset":"subject_only"}}"#, "Patient"),
            Some(true)
        );
        assert_eq!(
            contains(r#"{"compartment":{"preset":"subject_only"}}"#, "Binary"),
            Some(true)
        );
    }

    #[test]
    fn defaults() {
        let p = FhirPolicy::from_section_json(b"{}").ok();
        let p = p.as_ref();
        assert_eq!(p.map(|p| p.base_path.as_str()), Some("/"));
        assert_eq!(p.map(|p| p.contexts.len()), Some(3));
        assert_eq!(p.map(|p| p.serves("Observation")), Some(true));
        assert_eq!(p.map(|p| p.serves("Practitioner")), Some(false));
        assert_eq!(p.map(|p| p.read_before_write_cluster.as_str()), Some("api"));
        let p = FhirPolicy::from_section_json(br#"{"base_path":"/fhir/"}"#).ok();
        assert_eq!(p.map(|p| p.base_path), Some("/fhir".to_string()));
    }
}
