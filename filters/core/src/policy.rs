//! An API's policy: the JSON document under `policies/` (schema: `policies/schema/`).
//! Parsed strictly (unknown fields refused, errors name the field) and compiled once at
//! filter load into the validated [`Policy`] the decisions use. A policy that fails here
//! makes the filter refuse its configuration, so the proxy does not serve with it.
//!
//! Rooms: [`document`] the document as written, [`issuers`] and [`token_rules`] the compiled
//! sections of the token check, [`dpop`] the `dpop` section, [`request_route`] what the
//! routing of a request gives. The `fhir` section is compiled in `crate::fhir::policy`.

pub mod document;
pub mod dpop;
pub mod issuers;
pub mod request_route;
pub mod token_rules;

use crate::routes::RouteTable;
use issuers::compile_issuer;
use token_rules::compile_token;

// A leaf module (`error.rs`), so the section policies need not import this one back.
pub use crate::error::PolicyError;
pub use document::{ApiDoc, IssuerDoc, PolicyDoc, SchemeDoc, TokenDoc};
pub use issuers::{
    Issuer, KeySource, RemoteJwks, MAX_JWKS_FETCH_TIMEOUT_MS, MAX_JWKS_MAX_BYTES,
    MAX_JWKS_MAX_KEYS, MAX_JWKS_MIN_REFETCH_SECONDS, MAX_JWKS_REFRESH_SECONDS, MIN_JWKS_MAX_BYTES,
};
pub use request_route::{RequestFault, RequestRoute, RouteRefusal};
pub use token_rules::TokenRules;

/// A validated policy. Built only by [`Policy::from_json`].
#[derive(Debug, Clone)]
pub struct Policy {
    pub api_name: String,
    pub audience: String,
    pub sole_audience: bool,
    pub issuers: Vec<Issuer>,
    pub token: TokenRules,
    pub routes: RouteTable,
    pub dpop: Option<dpop::DpopPolicy>,
    pub fhir: Option<crate::fhir::policy::FhirPolicy>,
    pub mode: crate::authz::Mode,
    pub unmatched: crate::routes::Unmatched,
    /// The body of every denial (`api.denial_format`).
    pub denial_format: crate::denial::DenialFormat,
    /// The `audit` section (docs/audit.md).
    pub audit: crate::audit_policy::AuditPolicy,
}

impl Policy {
    /// Parses and validates a policy document. Errors name the offending field.
    /// `#[inline]`: code-generated where it is called (the Wasm modules: the size-built
    /// `fapi-guard-policy-load` crate, bench/README.md "Size").
    #[inline]
    pub fn from_json(bytes: &[u8]) -> Result<Policy, PolicyError> {
        let doc: PolicyDoc = crate::json_locate::parse(bytes, "")?;
        Policy::compile(doc)
    }

    #[inline]
    fn compile(doc: PolicyDoc) -> Result<Policy, PolicyError> {
        if doc.api.name.trim().is_empty() {
            return Err(PolicyError::new("api.name", "must not be empty"));
        }
        if doc.api.audience.trim().is_empty() {
            return Err(PolicyError::new("api.audience", "must not be empty"));
        }
        if doc.issuers.is_empty() {
            return Err(PolicyError::new(
                "issuers",
                "at least one issuer is required",
            ));
        }
        let mut issuers = Vec::new();
        for (i, d) in doc.issuers.iter().enumerate() {
            let mut issuer = compile_issuer(i, d)?;
            if let KeySource::Remote(r) = &mut issuer.keys {
                r.api = doc.api.name.clone();
            }
            issuers.push(issuer);
        }
        for (i, a) in issuers.iter().enumerate() {
            if issuers.iter().take(i).any(|b| b.issuer == a.issuer) {
                return Err(PolicyError::new(
                    format!("issuers[{i}].issuer"),
                    "issuer listed twice",
                ));
            }
        }
        if let Some(c) = &doc.cors {
            crate::cors::validate(c)?;
        }
        let token = compile_token(&doc.token)?;
        let routes = RouteTable::compile(doc.routes.as_deref())?;
        let dpop = match &doc.dpop {
            Some(d) => Some(d.compile()?),
            None => None,
        };
        let fhir = match &doc.fhir {
            Some(f) => Some(f.compile()?),
            None => None,
        };
        if fhir.is_some() && doc.api.denial_format != crate::denial::DenialFormat::OperationOutcome
        {
            // FHIR R4 http.html "Error handling": a FHIR API answers errors with an
            // OperationOutcome, which FHIR clients read.
            return Err(PolicyError::new(
                "api.denial_format",
                "a FHIR API (`fhir` section) answers with an OperationOutcome: use `operation_outcome`",
            ));
        }
        let audit = crate::audit_policy::compile(doc.audit.as_ref(), fhir.is_some())?;
        if !audit.record && routes.names_patients() {
            return Err(PolicyError::new(
                "audit.record",
                "is false, yet a route's `audit` names its patient for the record",
            ));
        }
        Ok(Policy {
            audit,
            api_name: doc.api.name,
            audience: doc.api.audience,
            sole_audience: doc.api.sole_audience,
            issuers,
            token,
            routes,
            dpop,
            fhir,
            mode: doc.mode,
            unmatched: doc.unmatched,
            denial_format: doc.api.denial_format,
        })
    }

    /// The first step of every filter on every request: the one canonical path (docs/checks.md
    /// "Path canonicalisation"), then how the server reads the method (no method override it
    /// would execute instead of `method`: docs/checks.md "Reading the request as the server
    /// does"), then the route: public or protected, and its mode. A fault is refused in every
    /// mode, on public routes too (it is no decision an API owner rolls out). `has_header`
    /// says whether a (lower-case) request header is present.
    pub fn route(
        &self,
        method: &str,
        raw_path: &str,
        has_header: &dyn Fn(&str) -> bool,
    ) -> Result<RequestRoute, RequestFault> {
        let c = crate::path::canonical(raw_path).map_err(RequestFault::Path)?;
        let query = raw_path.split_once('?').map_or("", |(_, q)| q);
        if self.server().profile().overrides(has_header, query) {
            return Err(RequestFault::MethodOverride);
        }
        let route = self.routes.lookup(method, &c);
        Ok(RequestRoute {
            public: route.require == crate::routes::Requirement::None,
            mode: route.mode.unwrap_or(self.mode),
            path_with_query: c.path_with_query(),
            plain: c.is_plain(),
            unlisted: self.unlisted(&route),
            rule: route.rule,
            params: route.params,
        })
    }

    /// The server behind the guard (`fhir.server`; `generic` without a `fhir` section).
    pub fn server(&self) -> crate::fhir::server::Server {
        self.fhir.as_ref().map(|f| f.server).unwrap_or_default()
    }

    /// [`Self::authorize`] for a request already routed by [`Self::route`]: the path is
    /// canonicalised and matched once per request.
    pub fn authorize_route(
        &self,
        route: &RequestRoute,
        header: &dyn Fn(&str) -> Option<String>,
        token: &crate::claims::VerifiedToken,
    ) -> Result<(), crate::authz::AuthzDenial> {
        let Some(authz) = route.rule.and_then(|i| self.routes.authz_of(i)) else {
            return Ok(());
        };
        let req = crate::authz::AuthzRequest {
            path_params: &route.params,
            header,
        };
        authz.evaluate(&req, token)
    }

    /// Whether `route` (a [`RouteTable::lookup`] result) is refused as `route_not_listed`:
    /// no rule matched and the policy says `unmatched: deny`.
    pub fn unlisted(&self, route: &crate::routes::RouteMatch<'_>) -> bool {
        route.rule.is_none() && self.unmatched == crate::routes::Unmatched::Deny
    }

    /// The matching route's `authz` (docs/checks.md §4) on a verified token: `Ok` when the
    /// route has none or it allows. `header` reads a request header (bindings).
    pub fn authorize(
        &self,
        method: &str,
        raw_path: &str,
        header: &dyn Fn(&str) -> Option<String>,
        token: &crate::claims::VerifiedToken,
    ) -> Result<(), RouteRefusal> {
        let route = self
            .route(method, raw_path, &|_| false)
            .map_err(|f| RouteRefusal::Path(f.reason()))?;
        self.authorize_route(&route, header, token)
            .map_err(RouteRefusal::Authz)
    }

    /// The matching rule in a log line: its `path` / `path_prefix`, or `(unlisted)` when no
    /// rule matched (`rule` of a [`RequestRoute`]).
    pub fn route_label(&self, rule: Option<usize>) -> &str {
        rule.and_then(|i| self.routes.pattern_of(i))
            .unwrap_or("(unlisted)")
    }

    /// The mode for a request: the matching route's `mode`, else the policy's.
    pub fn mode_for(
        &self,
        method: &str,
        path: &crate::path::CanonicalPath<'_>,
    ) -> crate::authz::Mode {
        self.routes.lookup(method, path).mode.unwrap_or(self.mode)
    }

    pub fn issuer(&self, iss: &str) -> Option<&Issuer> {
        self.issuers.iter().find(|i| i.issuer == iss)
    }

    /// The index of issuer `iss` (exact match, RFC 9068 §4), the one issuer look-up.
    pub fn issuer_index(&self, iss: &str) -> Option<usize> {
        self.issuers.iter().position(|i| i.issuer == iss)
    }

    /// Issuer `index`'s remote JWKS, if its keys are fetched.
    pub fn remote_jwks(&self, index: usize) -> Option<&RemoteJwks> {
        match &self.issuers.get(index)?.keys {
            KeySource::Remote(r) => Some(r),
            KeySource::Inline(_) => None,
        }
    }
}
