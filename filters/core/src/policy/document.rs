//! The policy document as written (`policies/schema/policy.schema.json`): the top-level
//! object, `api`, `issuers[]` and `token`, with their defaults. Unknown fields are refused;
//! the sections of other checks (`routes`, `dpop`, `fhir`, `cors`) are typed where they are
//! compiled.

use serde::Deserialize;

use crate::jose::Alg;
use crate::routes::RouteDoc;

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
    pub dpop: Option<super::dpop::DpopDoc>,
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
    /// The audit record (docs/audit.md, `super::audit`).
    #[serde(default)]
    pub audit: Option<serde_json::Value>,
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
