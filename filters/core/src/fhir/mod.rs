//! SMART App Launch v2.2 scopes against FHIR REST interactions, and patient-compartment
//! enforcement (checklist §3). STUB: being written.

pub mod policy;
