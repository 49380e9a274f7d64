//! The policy's `fhir` section. STUB: being written.

use serde::Deserialize;

use crate::policy::PolicyError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirDoc {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirPolicy {}

impl FhirDoc {
    pub fn compile(&self) -> Result<FhirPolicy, PolicyError> {
        Ok(FhirPolicy {})
    }
}
