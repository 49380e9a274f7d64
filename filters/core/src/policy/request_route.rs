//! Where a request stands before any token is read ([`super::Policy::route`]), and why the
//! route refused it ([`RequestFault`], [`RouteRefusal`]).

/// Where a request stands before any token is read ([`Policy::route`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRoute {
    /// A `require: none` route: no token needed.
    pub public: bool,
    /// `enforce`, or `shadow` (dry run) for this route / policy.
    pub mode: crate::authz::Mode,
    /// The canonical (decoded) path and the raw query, as decisions read it.
    pub path_with_query: String,
    /// No percent-encoding in the path (FHIR types, ids and operations never need one).
    pub plain: bool,
    /// No `routes[]` rule matches and the policy says `unmatched: deny`: refuse with
    /// `route_not_listed` (the token filter, before the token is read; docs/checks.md §4).
    pub unlisted: bool,
    /// The matching `routes[]` rule and its template parameters, so the route's `authz` is
    /// applied later without reading the path again ([`Policy::authorize_route`]).
    pub rule: Option<usize>,
    pub params: Vec<(String, String)>,
}

/// Why [`Policy::route`] refused a request before any token is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFault {
    /// The path is not canonical.
    Path(crate::path::PathFault),
    /// A method override the server would execute (`method_override`).
    MethodOverride,
}

impl RequestFault {
    /// The denial-table reason (`filters/core/src/denial.rs`).
    pub fn reason(self) -> crate::denial::Reason {
        match self {
            RequestFault::Path(f) => f.reason(),
            RequestFault::MethodOverride => crate::denial::Reason::MethodOverride,
        }
    }

    /// A short, fixed description for the `OperationOutcome` diagnostics.
    pub fn detail(self) -> &'static str {
        match self {
            RequestFault::Path(f) => f.detail(),
            RequestFault::MethodOverride => {
                "method-override header or parameter: the server may execute another method"
            }
        }
    }
}

/// Why [`Policy::authorize`] refused.
#[derive(Debug, Clone)]
pub enum RouteRefusal {
    /// The path is not canonical (`path_not_canonical`, ...).
    Path(crate::denial::Reason),
    /// The route's `authz` refused (details name the condition).
    Authz(crate::authz::AuthzDenial),
}
