//! The policy's `dpop` section. STUB: being written.

use serde::Deserialize;

use crate::policy::PolicyError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopDoc {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopPolicy {}

impl DpopDoc {
    pub fn compile(&self) -> Result<DpopPolicy, PolicyError> {
        Ok(DpopPolicy {})
    }
}
