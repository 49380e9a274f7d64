//! SMART App Launch v2.2 scopes against FHIR REST interactions, and patient-compartment
//! enforcement (checklist §3).
//!
//! - [`scope`]: the scope grammar (v1 and v2, query-constrained scopes).
//! - [`interaction`]: method + path + query -> FHIR REST interaction.
//! - [`compartment`]: FHIR R4 `CompartmentDefinition/patient` as data; body checks.
//! - [`decide`]: grants × interaction × patient context -> [`decide::Decision`];
//!   [`decide::check_response`] for reads the request alone cannot decide.
//! - [`policy`]: the policy's `fhir` section.

pub mod compartment;
pub mod decide;
pub mod interaction;
pub mod policy;
pub mod query;
pub mod scope;

pub use decide::{
    check_response, decide, decide_request, Decision, Denial, RequestView, ResponseCheck,
};
