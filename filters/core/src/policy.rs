//! An API's policy: the JSON document under `policies/` (schema: `policies/schema/`).
//! Parsed strictly (unknown fields refused, errors name the field) and compiled once at
//! filter load into the validated [`Policy`] the decisions use. A policy that fails here
//! makes the filter refuse its configuration, so the proxy does not serve with it.

use serde::Deserialize;

use crate::jose::{Alg, Jwks};
use crate::routes::{RouteDoc, RouteTable};

// A leaf module (`error.rs`), so the section policies need not import this one back.
pub use crate::error::PolicyError;

// ---------- the document, as written ----------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    pub api: ApiDoc,
    pub issuers: Vec<IssuerDoc>,
    #[serde(default)]
    pub token: TokenDoc,
    #[serde(default)]
    pub routes: Option<Vec<RouteDoc>>,
    #[serde(default)]
    pub dpop: Option<crate::dpop::policy::DpopDoc>,
    #[serde(default)]
    pub fhir: Option<crate::fhir::policy::FhirDoc>,
    /// `enforce` (default) or `shadow` (dry run) for every route without its own `mode`.
    #[serde(default)]
    pub mode: crate::authz::Mode,
    /// What a request no `routes[]` rule matches needs: `token_only` (default) or `deny`.
    #[serde(default)]
    pub unmatched: crate::routes::Unmatched,
    /// Browser origins allowed to call the API; enforced by Envoy's CORS filter before the
    /// guard, not by the filters (`cors.rs`, docs/platform-guide.md "CORS").
    #[serde(default)]
    pub cors: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiDoc {
    /// Short name, used in logs and stats.
    pub name: String,
    /// The audience this API's tokens must carry (HelseID: the API's short name).
    pub audience: String,
    /// HelseID practice: this audience should be the token's only one.
    #[serde(default)]
    pub sole_audience: bool,
    /// The body of a denial: `operation_outcome` (default; the only one with `fhir`) or
    /// `problem+json` (RFC 9457, plain REST APIs). Status and challenges are the same.
    #[serde(default)]
    pub denial_format: crate::denial::DenialFormat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerDoc {
    /// Exact `iss` value (RFC 9068 §4).
    pub issuer: String,
    /// An inline JWKS document.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Where to fetch the JWKS (through `jwks_cluster`).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The Envoy cluster that reaches `jwks_uri`'s host.
    #[serde(default)]
    pub jwks_cluster: Option<String>,
    #[serde(default = "default_refresh")]
    pub jwks_refresh_seconds: u64,
    /// Least time between fetches triggered by an unknown `kid`.
    #[serde(default = "default_min_refetch")]
    pub jwks_min_refetch_seconds: u64,
    #[serde(default = "default_fetch_timeout")]
    pub jwks_fetch_timeout_ms: u64,
    /// Largest JWKS answer accepted, in bytes (`jwks_limits::JwksLimits`; docs/checks.md §1.4).
    #[serde(default = "default_jwks_max_bytes")]
    pub jwks_max_bytes: u64,
    /// Most entries in a JWKS answer's `keys` (`jwks_limits::JwksLimits`).
    #[serde(default = "default_jwks_max_keys")]
    pub jwks_max_keys: u64,
}

fn default_refresh() -> u64 {
    300
}
fn default_min_refetch() -> u64 {
    30
}
fn default_fetch_timeout() -> u64 {
    2000
}
/// 64 KiB: a real JWKS is a few KB (a handful of RSA-4096 keys with an `x5c` certificate each
/// is under 20 KB); far larger answers are a fault or an attack on the fetcher's memory.
fn default_jwks_max_bytes() -> u64 {
    64 * 1024
}
/// 100 keys: issuers publish a few (current, next, previous per alg); every key is parsed
/// (RSA keys with a ROCA check) on each new document.
fn default_jwks_max_keys() -> u64 {
    100
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SchemeDoc {
    DPoP,
    Bearer,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenDoc {
    /// Accepted `Authorization` schemes (docs/checks.md §1.1). Default: DPoP only.
    #[serde(default = "default_schemes")]
    pub schemes: Vec<SchemeDoc>,
    /// JWS `alg` allow-list (docs/checks.md §1.3). Default PS256, ES256, EdDSA.
    #[serde(default = "default_algs")]
    pub allowed_algs: Vec<String>,
    /// Also accept `typ: JWT` (HelseID historic tokens; docs/checks.md §1.2 choice).
    #[serde(default)]
    pub allow_typ_jwt: bool,
    /// RFC 9068 §2.2 `sub` required (default). `false` accepts client-credentials tokens
    /// that carry only `client_id` (Duende IdentityServer / HelseID system tokens).
    #[serde(default = "default_true")]
    pub require_sub: bool,
    /// Clock skew for `exp`/`nbf`/`iat` (docs/checks.md §1.7). Default 10 s.
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    /// Verified-token cache size per worker.
    #[serde(default = "default_cache")]
    pub cache_max_entries: usize,
}

fn default_schemes() -> Vec<SchemeDoc> {
    vec![SchemeDoc::DPoP]
}
fn default_algs() -> Vec<String> {
    Alg::FAPI_DEFAULT
        .iter()
        .map(|a| a.name().to_string())
        .collect()
}
fn default_true() -> bool {
    true
}
fn default_skew() -> u64 {
    10
}
fn default_cache() -> usize {
    10_000
}

impl Default for TokenDoc {
    fn default() -> Self {
        TokenDoc {
            schemes: default_schemes(),
            allowed_algs: default_algs(),
            allow_typ_jwt: false,
            require_sub: true,
            clock_skew_seconds: default_skew(),
            cache_max_entries: default_cache(),
        }
    }
}

// ---------- the compiled policy ----------

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Inline(Jwks),
    Remote(RemoteJwks),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    pub uri: String,
    /// The issuer these keys are for (`issuers[i].issuer`): the `issuer` label of the JWKS
    /// gauges (docs/platform-guide.md, "Metrics").
    pub issuer: String,
    pub cluster: String,
    /// The API this policy is for (`api.name`): shared-data keys are namespaced by it, because
    /// every plugin in an Istio proxy shares one shared-data namespace (docs/platform-guide.md).
    pub api: String,
    /// `:authority` for the fetch, from the URI.
    pub authority: String,
    /// `:path` for the fetch, from the URI.
    pub path: String,
    pub refresh_seconds: u64,
    pub min_refetch_seconds: u64,
    pub timeout_ms: u64,
    /// Size caps on a fetched answer (`issuers[i].jwks_max_bytes`, `jwks_max_keys`).
    pub limits: crate::jwks_limits::JwksLimits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    pub issuer: String,
    pub keys: KeySource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRules {
    pub allow_dpop: bool,
    pub allow_bearer: bool,
    pub algs: Vec<Alg>,
    pub allow_typ_jwt: bool,
    pub require_sub: bool,
    pub skew_seconds: u64,
    pub cache_max_entries: usize,
}

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

/// A validated policy. Built only by [`Policy::from_json`].
#[derive(Debug, Clone)]
pub struct Policy {
    pub api_name: String,
    pub audience: String,
    pub sole_audience: bool,
    pub issuers: Vec<Issuer>,
    pub token: TokenRules,
    pub routes: RouteTable,
    pub dpop: Option<crate::dpop::policy::DpopPolicy>,
    pub fhir: Option<crate::fhir::policy::FhirPolicy>,
    pub mode: crate::authz::Mode,
    pub unmatched: crate::routes::Unmatched,
    /// The body of every denial (`api.denial_format`).
    pub denial_format: crate::denial::DenialFormat,
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
        Ok(Policy {
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

/// Upper bounds of the issuer's JWKS timings (also in `policies/schema/policy.schema.json`):
/// a period beyond them is a mistake, and unbounded values would reach signed time arithmetic.
pub const MAX_JWKS_REFRESH_SECONDS: u64 = 7 * 86_400;
pub const MAX_JWKS_MIN_REFETCH_SECONDS: u64 = 86_400;
pub const MAX_JWKS_FETCH_TIMEOUT_MS: u64 = 60_000;
/// Bounds of the JWKS answer caps (also in the schema): at least 1 KiB and one key, at most
/// 1 MiB (the host never copies more than this from an answer) and 1000 keys.
pub const MIN_JWKS_MAX_BYTES: u64 = 1024;
pub const MAX_JWKS_MAX_BYTES: u64 = crate::jwks_limits::JWKS_BYTES_CEILING as u64;
pub const MAX_JWKS_MAX_KEYS: u64 = 1000;

#[inline]
fn compile_issuer(i: usize, d: &IssuerDoc) -> Result<Issuer, PolicyError> {
    let field = |name: &str| format!("issuers[{i}].{name}");
    for (name, value, max) in [
        (
            "jwks_refresh_seconds",
            d.jwks_refresh_seconds,
            MAX_JWKS_REFRESH_SECONDS,
        ),
        (
            "jwks_min_refetch_seconds",
            d.jwks_min_refetch_seconds,
            MAX_JWKS_MIN_REFETCH_SECONDS,
        ),
        (
            "jwks_fetch_timeout_ms",
            d.jwks_fetch_timeout_ms,
            MAX_JWKS_FETCH_TIMEOUT_MS,
        ),
        ("jwks_max_bytes", d.jwks_max_bytes, MAX_JWKS_MAX_BYTES),
        ("jwks_max_keys", d.jwks_max_keys, MAX_JWKS_MAX_KEYS),
    ] {
        if value > max {
            return Err(PolicyError::new(
                field(name),
                format!("must be at most {max}"),
            ));
        }
    }
    for (name, value, min) in [
        ("jwks_max_bytes", d.jwks_max_bytes, MIN_JWKS_MAX_BYTES),
        ("jwks_max_keys", d.jwks_max_keys, 1),
    ] {
        if value < min {
            return Err(PolicyError::new(
                field(name),
                format!("must be at least {min}"),
            ));
        }
    }
    if d.issuer.is_empty() {
        return Err(PolicyError::new(field("issuer"), "must not be empty"));
    }
    let keys = match (&d.jwks, &d.jwks_uri) {
        (Some(_), Some(_)) => {
            return Err(PolicyError::new(
                field("jwks"),
                "give either `jwks` or `jwks_uri`, not both",
            ))
        }
        (None, None) => {
            return Err(PolicyError::new(
                field("jwks_uri"),
                "one of `jwks` or `jwks_uri` is required",
            ))
        }
        (Some(v), None) => {
            let bytes = serde_json::to_vec(v)
                .map_err(|e| PolicyError::new(field("jwks"), e.to_string()))?;
            let jwks = Jwks::parse(&bytes)
                .map_err(|e| PolicyError::new(field("jwks"), format!("not a JWKS: {e:?}")))?;
            if jwks.keys.is_empty() {
                return Err(PolicyError::new(
                    field("jwks"),
                    "no usable public signing key",
                ));
            }
            KeySource::Inline(jwks)
        }
        (None, Some(uri)) => {
            let cluster = d
                .jwks_cluster
                .clone()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    PolicyError::new(field("jwks_cluster"), "required with `jwks_uri`")
                })?;
            let (authority, path) = split_http_uri(uri).ok_or_else(|| {
                PolicyError::new(field("jwks_uri"), "must be an absolute http(s) URI")
            })?;
            if d.jwks_refresh_seconds == 0 {
                return Err(PolicyError::new(
                    field("jwks_refresh_seconds"),
                    "must be at least 1",
                ));
            }
            if d.jwks_fetch_timeout_ms == 0 {
                return Err(PolicyError::new(
                    field("jwks_fetch_timeout_ms"),
                    "must be at least 1",
                ));
            }
            KeySource::Remote(RemoteJwks {
                uri: uri.clone(),
                issuer: d.issuer.clone(),
                cluster,
                api: String::new(), // set once the API name is known, below

                authority,
                path,
                refresh_seconds: d.jwks_refresh_seconds,
                min_refetch_seconds: d.jwks_min_refetch_seconds,
                timeout_ms: d.jwks_fetch_timeout_ms,
                limits: crate::jwks_limits::JwksLimits {
                    max_bytes: usize::try_from(d.jwks_max_bytes).unwrap_or(usize::MAX),
                    max_keys: usize::try_from(d.jwks_max_keys).unwrap_or(usize::MAX),
                },
            })
        }
    };
    if d.jwks.is_some() && d.jwks_cluster.is_some() {
        return Err(PolicyError::new(
            field("jwks_cluster"),
            "only used with `jwks_uri`",
        ));
    }
    Ok(Issuer {
        issuer: d.issuer.clone(),
        keys,
    })
}

/// `https://host:port/path?q` → (`host:port`, `/path?q`).
#[inline]
fn split_http_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some((authority.to_string(), path.to_string()))
}

#[inline]
fn compile_token(d: &TokenDoc) -> Result<TokenRules, PolicyError> {
    if d.schemes.is_empty() {
        return Err(PolicyError::new(
            "token.schemes",
            "at least one scheme is required",
        ));
    }
    let mut algs = Vec::new();
    for (i, name) in d.allowed_algs.iter().enumerate() {
        // RFC 8725 §3.1–3.2: `none` and HMAC can never be allowed, whatever the policy says.
        // `Ed25519` (RFC 9864 §2.2) is accepted as the name of the EdDSA/Ed25519 algorithm.
        let alg = Alg::parse(name).ok_or_else(|| {
            PolicyError::new(format!("token.allowed_algs[{i}]"), format!("`{name}` is not an allowed asymmetric JWS algorithm (use PS256, ES256, EdDSA/Ed25519, RS256, RS384, RS512, PS384, PS512, ES384 or ES512)"))
        })?;
        if !algs.contains(&alg) {
            algs.push(alg);
        }
    }
    if algs.is_empty() {
        return Err(PolicyError::new("token.allowed_algs", "must not be empty"));
    }
    if d.clock_skew_seconds > 300 {
        return Err(PolicyError::new(
            "token.clock_skew_seconds",
            "must be at most 300",
        ));
    }
    if d.cache_max_entries > 1_000_000 {
        return Err(PolicyError::new(
            "token.cache_max_entries",
            "must be at most 1000000",
        ));
    }
    Ok(TokenRules {
        allow_dpop: d.schemes.contains(&SchemeDoc::DPoP),
        allow_bearer: d.schemes.contains(&SchemeDoc::Bearer),
        algs,
        allow_typ_jwt: d.allow_typ_jwt,
        require_sub: d.require_sub,
        skew_seconds: d.clock_skew_seconds,
        cache_max_entries: d.cache_max_entries,
    })
}
