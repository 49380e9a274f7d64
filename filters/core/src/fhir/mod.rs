//! SMART App Launch v2.2 scopes against FHIR REST interactions, and patient-compartment
//! enforcement (docs/checks.md §3).
//!
//! - [`scope`]: the scope grammar (v1 and v2, query-constrained scopes).
//! - [`interaction`]: method + path + query -> FHIR REST interaction.
//! - [`compartment`]: FHIR R4 `CompartmentDefinition/patient` as data; body checks.
//! - [`decide`]: grants × interaction × patient context -> [`decide::Decision`], one file
//!   per concern (grants, search and read, writes, patch, operations, bundle).
//! - [`response`]: [`check_response`] for reads the request alone cannot decide,
//!   [`check_stored`] for writes by id that need the stored resource read first.
//! - [`response_check`]: what the answer must be, as [`decide()`] hands it to [`response`].
//! - [`policy`]: the policy's `fhir` section.
//! - [`stream`]: holding a stream until its decision; conditional reads.
//! - [`subsetting`]: `_summary`/`_elements` keep what the response check reads.

pub mod compartment;
pub mod decide;
pub mod exchange;
pub mod interaction;
pub mod policy;
pub mod query;
pub mod response;
pub mod response_check;
pub mod scope;
pub mod server;
pub mod stream;
pub mod subsetting;

pub use decide::{decide, Decision, Denial, RequestView};
pub use response::{
    check_response, check_response_into, check_response_meta, check_stored, ResponseMeta,
};
pub use response_check::{PageCheck, PageGrant, ResponseCheck, StoredCheck, StoredSearch};
