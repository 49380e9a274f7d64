//! The `fhir` section as written: unknown fields refused, defaults filled in. Checked and
//! compiled by `compile` into the section the decisions read (`rules`).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::fhir::scope::Context;

const MIB: usize = 1024 * 1024;
pub(super) const MAX_BUFFER: usize = 64 * MIB;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirDoc {
    /// The server behind the guard (`generic` default, `hapi`, `microsoft`, `ibm`, `firely`,
    /// `medplum`): how it reads a request (`super::server`, docs/checks.md).
    #[serde(default)]
    pub server: crate::fhir::server::Server,
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
