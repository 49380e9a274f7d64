//! The compiled `issuers[]`: each issuer's keys, inline or fetched (the JWKS URI, cluster,
//! timings and size caps), and their bounds.

use super::document::IssuerDoc;
use crate::error::PolicyError;
use crate::jose::Jwks;

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
pub(super) fn compile_issuer(i: usize, d: &IssuerDoc) -> Result<Issuer, PolicyError> {
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
