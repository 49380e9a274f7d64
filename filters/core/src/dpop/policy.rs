//! The policy's `dpop` section (checklist §2; RFC 9449, RFC 8705).
//!
//! ```json
//! "dpop": {
//!   "required": true,
//!   "allowed_algs": ["PS256", "ES256", "EdDSA"],
//!   "iat_window_past_seconds": 60,
//!   "iat_window_future_seconds": 10,
//!   "public_origins": ["https://api.example.org"],
//!   "stripped_path_prefix": "/fhir",
//!   "trust_forwarded_headers": false,
//!   "nonce": { "enabled": true, "secret": "<base64url, >= 32 bytes>", "window_seconds": 300 },
//!   "replay_cache": { "slots": 4096, "entries_per_slot": 16 },
//!   "mtls": { "client_cert_source": "connection" }
//! }
//! ```

use serde::Deserialize;

use super::htu::Origin;
use crate::jose::Alg;
use crate::policy::PolicyError;

/// The document as written. Unknown fields are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopDoc {
    /// Every token on a protected route must be DPoP-bound (`cnf.jkt`) and come with a proof.
    /// When false, the proof is still checked for every DPoP-bound token or `DPoP` scheme use.
    #[serde(default = "default_true")]
    pub required: bool,
    /// Proof `alg` allow-list (checklist §2.4). `Ed25519` may be written for EdDSA.
    #[serde(default = "default_algs")]
    pub allowed_algs: Vec<String>,
    /// How old a proof's `iat` may be (checklist §2.9).
    #[serde(default = "default_past")]
    pub iat_window_past_seconds: u64,
    /// How far in the future a proof's `iat` may be (clock skew).
    #[serde(default = "default_future")]
    pub iat_window_future_seconds: u64,
    /// Origins (`scheme://host[:port]`) clients use to reach this API (checklist §2.8).
    /// Empty: the origin the proxy sees (`:scheme` + `:authority`).
    #[serde(default)]
    pub public_origins: Vec<String>,
    /// A path prefix a gateway in front removes before the request reaches the proxy
    /// (public `/fhir/Patient/1` arrives as `/Patient/1`).
    #[serde(default)]
    pub stripped_path_prefix: Option<String>,
    /// Use `X-Forwarded-Proto`/`X-Forwarded-Host`/`X-Forwarded-Prefix` for `htu`. Only safe when
    /// a trusted gateway always overwrites them; with `public_origins`, the forwarded origin
    /// must also be one of them.
    #[serde(default)]
    pub trust_forwarded_headers: bool,
    /// Server nonces (RFC 9449 §8, §9).
    #[serde(default)]
    pub nonce: Option<NonceDoc>,
    /// The `jti` replay cache (RFC 9449 §11.1).
    #[serde(default)]
    pub replay_cache: Option<ReplayCacheDoc>,
    /// RFC 8705 certificate-bound tokens.
    #[serde(default)]
    pub mtls: Option<MtlsDoc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceDoc {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// HMAC-SHA256 key, base64url, at least 32 bytes, the same on every replica.
    pub secret: String,
    /// Each nonce is valid for its window and the next one.
    #[serde(default = "default_nonce_window")]
    pub window_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayCacheDoc {
    #[serde(default = "default_slots")]
    pub slots: u32,
    #[serde(default = "default_entries")]
    pub entries_per_slot: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertSourceDoc {
    /// The certificate the proxy itself saw on the TLS connection.
    Connection,
    /// `Hash=` of the first element of `x-forwarded-client-cert` (Istio/Envoy XFCC).
    Xfcc,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsDoc {
    #[serde(default = "default_cert_source")]
    pub client_cert_source: CertSourceDoc,
}

fn default_true() -> bool {
    true
}
fn default_algs() -> Vec<String> {
    Alg::FAPI_DEFAULT
        .iter()
        .map(|a| a.name().to_string())
        .collect()
}
fn default_past() -> u64 {
    60
}
fn default_future() -> u64 {
    10
}
fn default_nonce_window() -> u64 {
    300
}
fn default_slots() -> u32 {
    DEFAULT_SLOTS
}
fn default_entries() -> u32 {
    DEFAULT_ENTRIES_PER_SLOT
}
fn default_cert_source() -> CertSourceDoc {
    CertSourceDoc::Connection
}

/// Default replay cache: 4096 slots × 16 entries = 65,536 live `jti`s (~1.6 MB shared).
pub const DEFAULT_SLOTS: u32 = 4096;
pub const DEFAULT_ENTRIES_PER_SLOT: u32 = 16;

impl Default for DpopDoc {
    fn default() -> Self {
        DpopDoc {
            required: true,
            allowed_algs: default_algs(),
            iat_window_past_seconds: default_past(),
            iat_window_future_seconds: default_future(),
            public_origins: Vec::new(),
            stripped_path_prefix: None,
            trust_forwarded_headers: false,
            nonce: None,
            replay_cache: None,
            mtls: None,
        }
    }
}

// ---------- compiled ----------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceConfig {
    pub secret: Vec<u8>,
    pub window_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    pub slots: u32,
    pub entries_per_slot: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertSource {
    Connection,
    Xfcc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopPolicy {
    pub required: bool,
    /// Canonical algs (deduplicated), also the `algs="..."` of challenges.
    pub algs: Vec<Alg>,
    pub iat_past: i64,
    pub iat_future: i64,
    /// Normalised public origins; empty = the origin the proxy sees.
    pub public_origins: Vec<Origin>,
    /// Normalised prefix (starts with `/`, no trailing `/`), or empty.
    pub stripped_path_prefix: String,
    pub trust_forwarded_headers: bool,
    pub nonce: Option<NonceConfig>,
    pub replay: ReplayConfig,
    pub cert_source: CertSource,
    /// Key for the replay cache's slot hash (the nonce secret when configured, else empty).
    pub replay_key: Vec<u8>,
}

impl Default for DpopPolicy {
    fn default() -> Self {
        // The defaults always compile; the fallback only keeps this panic-free.
        DpopDoc::default().compile().unwrap_or(DpopPolicy {
            required: true,
            algs: Alg::FAPI_DEFAULT.to_vec(),
            iat_past: 60,
            iat_future: 10,
            public_origins: Vec::new(),
            stripped_path_prefix: String::new(),
            trust_forwarded_headers: false,
            nonce: None,
            replay: ReplayConfig {
                slots: DEFAULT_SLOTS,
                entries_per_slot: DEFAULT_ENTRIES_PER_SLOT,
            },
            cert_source: CertSource::Connection,
            replay_key: Vec::new(),
        })
    }
}

/// Upper bounds that keep the shared replay cache within a few tens of MB.
const MAX_SLOTS: u32 = 1 << 16;
const MAX_ENTRIES_PER_SLOT: u32 = 64;
const MAX_TOTAL_ENTRIES: u64 = 1 << 21;

impl DpopDoc {
    pub fn compile(&self) -> Result<DpopPolicy, PolicyError> {
        let mut algs = Vec::new();
        for (i, name) in self.allowed_algs.iter().enumerate() {
            // Checklist §2.4: asymmetric only; `none`/HMAC have no `Alg` and are refused here.
            let alg = Alg::parse(name).ok_or_else(|| {
                PolicyError::new(
                    format!("dpop.allowed_algs[{i}]"),
                    format!("`{name}` is not an allowed asymmetric JWS algorithm (use PS256, ES256, EdDSA/Ed25519, RS256, RS384, RS512, PS384, PS512, ES384 or ES512)"),
                )
            })?;
            if !algs.contains(&alg) {
                algs.push(alg);
            }
        }
        if algs.is_empty() {
            return Err(PolicyError::new("dpop.allowed_algs", "must not be empty"));
        }
        if self.iat_window_past_seconds == 0 || self.iat_window_past_seconds > 3600 {
            return Err(PolicyError::new(
                "dpop.iat_window_past_seconds",
                "must be between 1 and 3600",
            ));
        }
        if self.iat_window_future_seconds > 300 {
            return Err(PolicyError::new(
                "dpop.iat_window_future_seconds",
                "must be at most 300",
            ));
        }
        let mut public_origins = Vec::new();
        for (i, o) in self.public_origins.iter().enumerate() {
            let origin = Origin::parse_config(o)
                .map_err(|msg| PolicyError::new(format!("dpop.public_origins[{i}]"), msg))?;
            if !public_origins.contains(&origin) {
                public_origins.push(origin);
            }
        }
        let stripped_path_prefix = match &self.stripped_path_prefix {
            None => String::new(),
            Some(p) => super::htu::normalise_prefix(p)
                .map_err(|msg| PolicyError::new("dpop.stripped_path_prefix", msg))?,
        };
        let nonce = match &self.nonce {
            Some(n) if n.enabled => {
                let secret = crate::b64::decode(&n.secret).ok_or_else(|| {
                    PolicyError::new("dpop.nonce.secret", "must be base64url without padding")
                })?;
                if secret.len() < 32 {
                    return Err(PolicyError::new(
                        "dpop.nonce.secret",
                        "must decode to at least 32 bytes",
                    ));
                }
                if n.window_seconds < 10 || n.window_seconds > 86_400 {
                    return Err(PolicyError::new(
                        "dpop.nonce.window_seconds",
                        "must be between 10 and 86400",
                    ));
                }
                Some(NonceConfig {
                    secret,
                    window_seconds: n.window_seconds,
                })
            }
            _ => None,
        };
        let replay = match &self.replay_cache {
            None => ReplayConfig {
                slots: DEFAULT_SLOTS,
                entries_per_slot: DEFAULT_ENTRIES_PER_SLOT,
            },
            Some(r) => {
                if r.slots == 0 || r.slots > MAX_SLOTS {
                    return Err(PolicyError::new(
                        "dpop.replay_cache.slots",
                        format!("must be between 1 and {MAX_SLOTS}"),
                    ));
                }
                if r.entries_per_slot == 0 || r.entries_per_slot > MAX_ENTRIES_PER_SLOT {
                    return Err(PolicyError::new(
                        "dpop.replay_cache.entries_per_slot",
                        format!("must be between 1 and {MAX_ENTRIES_PER_SLOT}"),
                    ));
                }
                if u64::from(r.slots) * u64::from(r.entries_per_slot) > MAX_TOTAL_ENTRIES {
                    return Err(PolicyError::new(
                        "dpop.replay_cache",
                        format!("slots × entries_per_slot must be at most {MAX_TOTAL_ENTRIES}"),
                    ));
                }
                ReplayConfig {
                    slots: r.slots,
                    entries_per_slot: r.entries_per_slot,
                }
            }
        };
        let cert_source = match self.mtls.as_ref().map(|m| m.client_cert_source) {
            Some(CertSourceDoc::Xfcc) => CertSource::Xfcc,
            _ => CertSource::Connection,
        };
        let replay_key = nonce.as_ref().map(|n| n.secret.clone()).unwrap_or_default();
        Ok(DpopPolicy {
            required: self.required,
            algs,
            iat_past: self.iat_window_past_seconds as i64,
            iat_future: self.iat_window_future_seconds as i64,
            public_origins,
            stripped_path_prefix,
            trust_forwarded_headers: self.trust_forwarded_headers,
            nonce,
            replay,
            cert_source,
            replay_key,
        })
    }
}
