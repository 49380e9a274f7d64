//! The policy's `dpop` section (docs/checks.md §2; RFC 9449, RFC 8705).
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
//!   "replay_cache": { "peak_proofs_per_second": 40000, "max_live_proofs": 4194304,
//!                     "max_live_proofs_per_key": 65536 },
//!   "mtls": { "client_cert_source": "connection" },
//!   "replay_scope": "api",
//!   "replay_store": { "cluster": "fapi_guard_replay_store", "kind": "etcd",
//!                     "key_prefix": "fapi-guard/dpop/", "timeout_ms": 250 }
//! }
//! ```

use serde::Deserialize;

use crate::error::PolicyError;
use crate::jose::Alg;
use crate::uri::{normalise_prefix, Origin};

/// The document as written. Unknown fields are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopDoc {
    /// Every token on a protected route must be DPoP-bound (`cnf.jkt`) and come with a proof.
    /// When false, the proof is still checked for every DPoP-bound token or `DPoP` scheme use.
    #[serde(default = "default_true")]
    pub required: bool,
    /// Proof `alg` allow-list (docs/checks.md §2.4). `Ed25519` may be written for EdDSA.
    #[serde(default = "default_algs")]
    pub allowed_algs: Vec<String>,
    /// How old a proof's `iat` may be (docs/checks.md §2.9).
    #[serde(default = "default_past")]
    pub iat_window_past_seconds: u64,
    /// How far in the future a proof's `iat` may be (clock skew).
    #[serde(default = "default_future")]
    pub iat_window_future_seconds: u64,
    /// Origins (`scheme://host[:port]`) clients use to reach this API (docs/checks.md §2.8).
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
    /// Where one proof is used once (docs/dpop.md, "Replay across replicas"): `replica`
    /// (this proxy's cache only), `api` (every replica, through `replay_store`) or
    /// `partitioned` (this proxy's cache, behind a layer that sends every use of a proof to
    /// one replica: the `fapi_guard:partition` step and a hashing load balancer).
    #[serde(default)]
    pub replay_scope: ReplayScopeDoc,
    /// The store all replicas claim proofs in; required with `replay_scope: api`.
    #[serde(default)]
    pub replay_store: Option<ReplayStoreDoc>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayScopeDoc {
    #[default]
    Replica,
    Api,
    /// The local cache, as `replica`; the partitioning layer in front does the rest.
    Partitioned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// etcd v3's HTTP/JSON gateway (`/v3/kv/txn`, `/v3/lease/grant`).
    Etcd,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayStoreDoc {
    /// The Envoy cluster that reaches the store.
    pub cluster: String,
    pub kind: StoreKind,
    /// Prefix of every key this API writes (one API per prefix).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// How long a claim may take; no answer in time refuses the request (fail closed).
    #[serde(default = "default_store_timeout")]
    pub timeout_ms: u64,
}

/// The compiled `replay_store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayStore {
    pub cluster: String,
    pub kind: StoreKind,
    pub key_prefix: String,
    pub timeout_ms: u64,
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

/// The replay cache (`docs/dpop.md`, "Replay cache"): sized from the `iat` window and the
/// peak proof rate, bounded by an explicit budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayCacheDoc {
    /// The most proofs per second (all worker threads together) the cache must record
    /// without refusing any.
    #[serde(default = "default_peak")]
    pub peak_proofs_per_second: u64,
    /// Memory budget, in live proofs (8 bytes each plus slot overhead): the cache sized for
    /// the peak must fit in it, else the policy is refused.
    #[serde(default = "default_max_live")]
    pub max_live_proofs: u64,
    /// Fairness: live proofs one proof key (`cnf.jkt`) may hold per worker thread.
    #[serde(default = "default_max_live_per_key")]
    pub max_live_proofs_per_key: u64,
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
fn default_peak() -> u64 {
    DEFAULT_PEAK_PROOFS_PER_SECOND
}
fn default_max_live() -> u64 {
    DEFAULT_MAX_LIVE_PROOFS
}
fn default_max_live_per_key() -> u64 {
    DEFAULT_MAX_LIVE_PROOFS_PER_KEY
}
fn default_key_prefix() -> String {
    "fapi-guard/dpop/".to_string()
}
fn default_store_timeout() -> u64 {
    250
}
fn default_cert_source() -> CertSourceDoc {
    CertSourceDoc::Connection
}

/// Default peak: above what one sidecar with two worker threads sustains for the full chain.
pub const DEFAULT_PEAK_PROOFS_PER_SECOND: u64 = 40_000;
/// Default budget: 2^22 live proofs, at most 32 MiB of entries (+ ~2 MiB slot headers/keys).
pub const DEFAULT_MAX_LIVE_PROOFS: u64 = 1 << 22;
/// Default per key and worker: ~936 proofs/s sustained per proof key with the default window.
pub const DEFAULT_MAX_LIVE_PROOFS_PER_KEY: u64 = 65_536;
/// Entries per slot: a slot value is at most 8 + 64 × 8 = 520 bytes (one copy per host call).
pub const ENTRIES_PER_SLOT: u32 = 64;
/// Slots tried in turn when one is full (linear probing within the bucket).
pub const MAX_PROBES: u32 = 8;
/// Slots are sized for the peak with this headroom (numerator/denominator): a load factor of
/// 0.8, where probing keeps full-slot refusals out of reach.
const HEADROOM: (u64, u64) = (5, 4);
/// Buckets per `iat` window: finer buckets waste less memory on partly expired buckets.
const BUCKETS_PER_WINDOW: u64 = 7;
const MAX_PEAK: u64 = 1_000_000;
const MAX_LIVE_PROOFS: u64 = 1 << 25;

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
            replay_scope: ReplayScopeDoc::Replica,
            replay_store: None,
        }
    }
}

// ---------- compiled ----------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceConfig {
    pub secret: Vec<u8>,
    pub window_seconds: u64,
}

/// The compiled replay cache layout (`replay.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    /// Length of one time bucket (of `iat + iat_window_past_seconds`).
    pub bucket_seconds: i64,
    /// Ring positions: `ceil((past + future) / bucket_seconds) + 1`.
    pub buckets: u32,
    /// Shared-data keys per bucket.
    pub slots: u32,
    pub entries_per_slot: u32,
    pub max_probes: u32,
    /// Entries one proof key may add to one bucket on one worker (0: no limit).
    pub per_key_per_bucket: u32,
    /// The policy's `iat_window_past_seconds` (for `Retry-After`).
    pub iat_past: i64,
}

impl ReplayConfig {
    /// The layout for an `iat` window and a peak rate: buckets of about a seventh of the
    /// window, `slots` so that a bucket's expected entries (`peak × bucket_seconds`) fill
    /// 80 % of it.
    pub fn sized(past: u64, future: u64, peak: u64, max_live_per_key: u64) -> ReplayConfig {
        let span = past.saturating_add(future).max(1);
        let w = span.div_ceil(BUCKETS_PER_WINDOW).max(1);
        let buckets = span.div_ceil(w) + 1;
        let per_bucket = peak.saturating_mul(w).saturating_mul(HEADROOM.0) / HEADROOM.1;
        let slots = per_bucket.div_ceil(u64::from(ENTRIES_PER_SLOT)).max(1);
        // A key spreads its proofs over the live buckets: buckets − 1 of them hold entries
        // at any time on average.
        let per_key = max_live_per_key.div_ceil(buckets - 1).max(1);
        ReplayConfig {
            bucket_seconds: i64::try_from(w).unwrap_or(i64::MAX),
            buckets: u32::try_from(buckets).unwrap_or(u32::MAX),
            slots: u32::try_from(slots).unwrap_or(u32::MAX),
            entries_per_slot: ENTRIES_PER_SLOT,
            max_probes: MAX_PROBES,
            per_key_per_bucket: u32::try_from(per_key).unwrap_or(u32::MAX),
            iat_past: i64::try_from(past).unwrap_or(i64::MAX),
        }
    }
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
    /// `replay_scope: api`: the store every replica claims proofs in (else `None`).
    pub replay_store: Option<ReplayStore>,
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
            replay: ReplayConfig::sized(
                60,
                10,
                DEFAULT_PEAK_PROOFS_PER_SECOND,
                DEFAULT_MAX_LIVE_PROOFS_PER_KEY,
            ),
            cert_source: CertSource::Connection,
            replay_key: Vec::new(),
            replay_store: None,
        })
    }
}

impl DpopDoc {
    pub fn compile(&self) -> Result<DpopPolicy, PolicyError> {
        let mut algs = Vec::new();
        for (i, name) in self.allowed_algs.iter().enumerate() {
            // docs/checks.md §2.4: asymmetric only; `none`/HMAC have no `Alg` and are refused here.
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
            Some(p) => normalise_prefix(p)
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
        let replay = self.compile_replay()?;
        let cert_source = match self.mtls.as_ref().map(|m| m.client_cert_source) {
            Some(CertSourceDoc::Xfcc) => CertSource::Xfcc,
            _ => CertSource::Connection,
        };
        let replay_key = nonce.as_ref().map(|n| n.secret.clone()).unwrap_or_default();
        let replay_store = self.compile_store()?;
        Ok(DpopPolicy {
            required: self.required,
            algs,
            // Bounded above (≤ 3600 and ≤ 300 s), so these never saturate.
            iat_past: i64::try_from(self.iat_window_past_seconds).unwrap_or(i64::MAX),
            iat_future: i64::try_from(self.iat_window_future_seconds).unwrap_or(i64::MAX),
            public_origins,
            stripped_path_prefix,
            trust_forwarded_headers: self.trust_forwarded_headers,
            nonce,
            replay,
            cert_source,
            replay_key,
            replay_store,
        })
    }

    fn compile_store(&self) -> Result<Option<ReplayStore>, PolicyError> {
        let doc = match (self.replay_scope, &self.replay_store) {
            (ReplayScopeDoc::Replica | ReplayScopeDoc::Partitioned, None) => return Ok(None),
            // `partitioned` replicas keep their own cache, as `replica` ones do.
            (ReplayScopeDoc::Replica | ReplayScopeDoc::Partitioned, Some(_)) => {
                return Err(PolicyError::new(
                    "dpop.replay_store",
                    "is only used with `replay_scope: api`",
                ))
            }
            (ReplayScopeDoc::Api, None) => {
                return Err(PolicyError::new(
                    "dpop.replay_store",
                    "is required with `replay_scope: api`",
                ))
            }
            (ReplayScopeDoc::Api, Some(d)) => d,
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 200
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-|:/".contains(&b))
        };
        if !name_ok(&doc.cluster) {
            return Err(PolicyError::new(
                "dpop.replay_store.cluster",
                "must be an Envoy cluster name (letters, digits, `._-|:/`)",
            ));
        }
        if !name_ok(&doc.key_prefix) {
            return Err(PolicyError::new(
                "dpop.replay_store.key_prefix",
                "must be 1 to 200 characters of letters, digits, `._-|:/`",
            ));
        }
        if doc.timeout_ms == 0 || doc.timeout_ms > 5_000 {
            return Err(PolicyError::new(
                "dpop.replay_store.timeout_ms",
                "must be between 1 and 5000",
            ));
        }
        Ok(Some(ReplayStore {
            cluster: doc.cluster.clone(),
            kind: doc.kind,
            key_prefix: doc.key_prefix.clone(),
            timeout_ms: doc.timeout_ms,
        }))
    }

    fn compile_replay(&self) -> Result<ReplayConfig, PolicyError> {
        let doc = self.replay_cache.clone().unwrap_or(ReplayCacheDoc {
            peak_proofs_per_second: DEFAULT_PEAK_PROOFS_PER_SECOND,
            max_live_proofs: DEFAULT_MAX_LIVE_PROOFS,
            max_live_proofs_per_key: DEFAULT_MAX_LIVE_PROOFS_PER_KEY,
        });
        if doc.peak_proofs_per_second == 0 || doc.peak_proofs_per_second > MAX_PEAK {
            return Err(PolicyError::new(
                "dpop.replay_cache.peak_proofs_per_second",
                format!("must be between 1 and {MAX_PEAK}"),
            ));
        }
        if doc.max_live_proofs < u64::from(ENTRIES_PER_SLOT)
            || doc.max_live_proofs > MAX_LIVE_PROOFS
        {
            return Err(PolicyError::new(
                "dpop.replay_cache.max_live_proofs",
                format!("must be between {ENTRIES_PER_SLOT} and {MAX_LIVE_PROOFS}"),
            ));
        }
        if doc.max_live_proofs_per_key == 0 || doc.max_live_proofs_per_key > doc.max_live_proofs {
            return Err(PolicyError::new(
                "dpop.replay_cache.max_live_proofs_per_key",
                "must be between 1 and max_live_proofs",
            ));
        }
        let cfg = ReplayConfig::sized(
            self.iat_window_past_seconds,
            self.iat_window_future_seconds,
            doc.peak_proofs_per_second,
            doc.max_live_proofs_per_key,
        );
        if cfg.capacity() > doc.max_live_proofs {
            return Err(PolicyError::new(
                "dpop.replay_cache.max_live_proofs",
                format!(
                    "{} live proofs ({} MiB) are needed for peak_proofs_per_second {} over the iat window ({} s past + {} s future, {} buckets of {} s, 25 % headroom): raise max_live_proofs or lower the peak",
                    cfg.capacity(),
                    cfg.max_value_bytes().div_ceil(1 << 20),
                    doc.peak_proofs_per_second,
                    self.iat_window_past_seconds,
                    self.iat_window_future_seconds,
                    cfg.buckets,
                    cfg.bucket_seconds
                ),
            ));
        }
        Ok(cfg)
    }
}
