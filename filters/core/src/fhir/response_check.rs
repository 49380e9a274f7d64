//! What the upstream's answer must be when the request alone cannot decide: the checks
//! [`decide`](super::decide::decide) hands to the response phase ([`super::response`]) and to
//! the read before a write by id (docs/checks.md §3, BOLA).

use super::query::Param;
use super::scope::SmartScope;

/// One way a read can turn out to be allowed: every member that is set must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    /// The resource must be in this patient's compartment.
    pub patient: Option<String>,
    /// The resource must match these `param=value` pairs (a query-constrained scope).
    pub constraint: Vec<Param>,
}

/// What a single resource in the response must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceCheck {
    pub resource_type: String,
    pub id: Option<String>,
    /// The response is a history Bundle of versions of that resource.
    pub history: bool,
    /// Passes when any alternative holds.
    pub alternatives: Vec<Alternative>,
}

/// What every resource of a searchset must be (a search a patient grant allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchCheck {
    /// Type of the `match` entries (`None`: any, for `Patient/{id}/*`).
    pub resource_type: Option<String>,
    /// The patient whose compartment every entry (`match` and `include`) must be in.
    pub patient: String,
    /// `match` entries must pass any of these constraints (empty list: no constraint).
    pub constraints: Vec<Vec<Param>>,
    /// Entries of types outside the patient compartment pass (`$everything` also returns
    /// referenced Practitioner, Medication, ...); compartment types must still be the patient's.
    pub non_compartment_types_pass: bool,
    /// The patient pin was sent where the server reads it (path, query, or a form body the
    /// `fhir.server` profile reads). Otherwise a `total` above the entries the check sees is
    /// a count oracle (`search_total_unchecked`).
    pub pin_read: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseCheck {
    Resource(ResourceCheck),
    /// A searchset confined by a patient grant: checked entry by entry, so a server that
    /// ignores the pinning parameter (lenient handling) cannot leak another patient's data.
    Searchset(SearchCheck),
    /// Batch/transaction: entry `i` of the response Bundle must pass its check.
    BundleEntries(Vec<(usize, ResponseCheck)>),
    /// A page fetched by the server's paging link: the request shows nothing of the search.
    Page(PageCheck),
}

/// What every entry of a page must be (docs/checks.md §3 "paging"): the guard keeps no state
/// between requests, so each entry is decided against the token's grants as the original
/// search's answer would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCheck {
    /// The token's grants with `s` or `r`; an entry passes when one of them allows it.
    pub grants: Vec<PageGrant>,
}

/// One grant a page entry can pass under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageGrant {
    pub scope: SmartScope,
    /// The patient a `patient/` grant confines to.
    pub patient: Option<String>,
}

/// What the stored resource a write by id targets must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheck {
    /// The stored resource (type, id) must pass any of these alternatives.
    pub resource: ResourceCheck,
    /// A 404 on the read is fine: update-as-create (FHIR R4 §3.1.0.4.1); the body that
    /// creates it already passed the request checks.
    pub absent_ok: bool,
    /// A conditional update, patch or delete (FHIR R4 http.html#cond-update): the stored read
    /// is a search with the request's own criteria, and every match must pass `resource`.
    pub search: Option<Box<StoredSearch>>,
}

/// The stored read of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSearch {
    /// The request's query string, as sent (the server resolves the write with the same).
    pub query: String,
    /// At most this many matches (update and patch act on one; more is refused).
    pub max_matches: Option<usize>,
}
