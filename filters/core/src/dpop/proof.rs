//! One DPoP proof at a resource server: RFC 9449 §4.3 and §7.1, docs/checks.md §2 items 1–13, 16.
//!
//! Cost per request: one JSON parse of the proof, one signature check (through whatever
//! [`SignatureVerifier`] the caller passes: the host's fast path in Envoy), one SHA-256 for the
//! JWK thumbprint. The access token is not touched: its `ath` value was computed once by the
//! token filter (`VerifiedToken::token_sha256`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::{Map, Value};

use super::htu::{htu_matches, RequestTarget};
use super::nonce;
use crate::denial::Reason;
use crate::jose::jwk::JwkError;
use crate::jose::verify::{check_key_for_alg, VerifyError};
use crate::jose::{Alg, CompactJws, Jwk, JwsError, PublicKey, SignatureVerifier, SoftwareVerifier};
use crate::policy::dpop::DpopPolicy;

/// The request as the DPoP check sees it.
#[derive(Debug, Clone, Default)]
pub struct ProofRequest<'a> {
    /// `:method`.
    pub method: &'a str,
    pub target: RequestTarget<'a>,
    /// Every `DPoP` request header value (names compared case-insensitively by the caller).
    pub dpop_headers: &'a [&'a str],
}

/// What the proof must be bound to (from the verified access token).
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// base64url(SHA-256(access token)) = the expected `ath`.
    pub ath: &'a str,
    /// The token's `cnf.jkt`.
    pub jkt: &'a str,
}

/// A proof that passed every check except the replay cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedProof {
    pub jti: String,
    pub iat: i64,
    /// RFC 7638 thumbprint of the proof key (= `cnf.jkt`).
    pub jkt: String,
    /// `replay::key_id(jkt)` (the per-key budget's key), computed once per proof key.
    pub key_id: u64,
}

/// JWK members that only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4;
/// RFC 8037 §2). RFC 9449 §4.3 step 7: the proof's `jwk` must not carry a private key.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn str_member<'m>(m: &'m Map<String, Value>, name: &str) -> Result<&'m str, Reason> {
    match m.get(name) {
        None | Some(Value::Null) => Err(Reason::DpopMissingMember),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(Reason::DpopMalformed),
    }
}

/// NumericDate (RFC 7519 §2): a JSON number, possibly non-integer; taken as whole seconds.
fn numeric_date(m: &Map<String, Value>, name: &str) -> Result<i64, Reason> {
    match m.get(name) {
        None | Some(Value::Null) => Err(Reason::DpopMissingMember),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(f.floor() as i64),
                    _ => Err(Reason::DpopMalformed),
                }
            }
        }
        Some(_) => Err(Reason::DpopMalformed),
    }
}

/// Maps a `CompactJws::parse` refusal to its reason. A missing `alg` is a missing member
/// (§2.2), any other `alg` problem is §2.4.
fn jws_error(compact: &str, e: JwsError) -> Reason {
    match e {
        JwsError::Malformed | JwsError::UnsupportedCrit => Reason::DpopMalformed,
        JwsError::BadAlg => {
            let header = compact
                .split('.')
                .next()
                .and_then(crate::b64::decode)
                .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok());
            match header {
                Some(h) if !h.contains_key("alg") => Reason::DpopMissingMember,
                Some(_) => Reason::DpopAlgNotAllowed,
                None => Reason::DpopMalformed,
            }
        }
    }
}

/// Largest RSA modulus a proof key may have (`docs/checks.md`, "DPoP proof keys"). Clients
/// make 2048- or 3072-bit keys; bigger ones only cost the verifier CPU. (Issuer keys in a
/// JWKS keep the general JOSE bound, `jose::jwk::RSA_MAX_BITS`.)
pub const PROOF_RSA_MAX_BITS: usize = 4096;
/// Largest RSA public exponent a proof key may have: below 2^32 (and odd, at least 3, as
/// for every RSA key). Clients use 65537; a huge exponent only makes verification slower.
pub const PROOF_RSA_MAX_EXPONENT_BYTES: usize = 4;

/// The proof key caps (`docs/checks.md`): RSA modulus ≤ 4096 bits, exponent < 2^32.
fn check_proof_key_size(key: &PublicKey) -> Result<(), Reason> {
    match key {
        // `e` has no leading zero octets (jose::jwk), so 4 octets means e < 2^32.
        PublicKey::Rsa { e, .. } => {
            if key.rsa_bits() > PROOF_RSA_MAX_BITS || e.len() > PROOF_RSA_MAX_EXPONENT_BYTES {
                return Err(Reason::DpopBadJwk);
            }
            Ok(())
        }
        PublicKey::EcP256 { .. }
        | PublicKey::EcP384 { .. }
        | PublicKey::EcP521 { .. }
        | PublicKey::Ed25519 { .. } => Ok(()),
    }
}

/// What a proof's protected header decides once it has passed every header check
/// (RFC 9449 §4.3 steps 2–5 and 7, the proof key caps): the header bytes alone decide them,
/// so [`ProofKeyCache`] keeps the result per distinct header and the next proof of the same
/// client skips the header's base64url decoding, JSON parse, JWK parse (point validation)
/// and thumbprint. Nothing else is cached: every per-request check runs on every proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofKey {
    pub alg: Alg,
    pub key: PublicKey,
    /// RFC 7638 thumbprint of `key` (compared with `cnf.jkt`).
    pub jkt: String,
    /// `replay::key_id(jkt)`, the per-key budget's key.
    pub key_id: u64,
}

/// Per worker: proof headers that passed every header check, by their base64url text (the
/// exact bytes the signature covers). Bounded: at `max` distinct headers it starts over, so
/// a client sending many keys costs what an uncached proof costs, never more memory.
#[derive(Debug, Default)]
pub struct ProofKeyCache {
    max: usize,
    entries: RefCell<HashMap<String, Rc<ProofKey>>>,
}

/// Distinct proof headers one worker remembers (a few hundred bytes each).
pub const PROOF_KEY_CACHE_ENTRIES: usize = 256;

impl ProofKeyCache {
    /// A cache of at most `max` headers (0: caches nothing).
    pub fn new(max: usize) -> Self {
        ProofKeyCache {
            max,
            entries: RefCell::new(HashMap::new()),
        }
    }

    fn get(&self, header_b64: &str) -> Option<Rc<ProofKey>> {
        self.entries.borrow().get(header_b64).cloned()
    }

    fn insert(&self, header_b64: &str, key: Rc<ProofKey>) {
        if self.max == 0 {
            return;
        }
        let mut e = self.entries.borrow_mut();
        if e.len() >= self.max {
            e.clear();
        }
        e.insert(header_b64.to_string(), key);
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks one DPoP proof (everything but `jti` replay). `Err` carries the stable reason.
pub fn check_proof(
    policy: &DpopPolicy,
    req: &ProofRequest<'_>,
    binding: Binding<'_>,
    verifier: &dyn SignatureVerifier,
    now: i64,
) -> Result<CheckedProof, Reason> {
    check_proof_cached(policy, req, binding, verifier, now, &ProofKeyCache::new(0))
}

/// [`check_proof`] with a worker's [`ProofKeyCache`]: same checks, same reasons, in the same
/// order (a cached header is one that passed all header checks, so only the per-request
/// checks can fail after it; `tests/dpop_checks.rs` runs every case both ways).
pub fn check_proof_cached(
    policy: &DpopPolicy,
    req: &ProofRequest<'_>,
    binding: Binding<'_>,
    verifier: &dyn SignatureVerifier,
    now: i64,
    keys: &ProofKeyCache,
) -> Result<CheckedProof, Reason> {
    // §2.1 / RFC 9449 §4.3 step 1: exactly one DPoP header.
    let compact = match req.dpop_headers {
        [] => return Err(Reason::DpopMissing),
        [one] => one.trim(),
        _ => return Err(Reason::DpopMultiple),
    };
    if compact.is_empty() {
        return Err(Reason::DpopMissing);
    }
    let header_b64 = compact.split('.').next().unwrap_or_default();
    if let Some(key) = keys.get(header_b64) {
        // The header passed every header check before; the rest of §2.1 (three parts,
        // strict base64url, payload a JSON object without duplicates, a signature).
        let (signing_input, payload, signature) =
            parse_after_known_header(compact).ok_or(Reason::DpopMalformed)?;
        let claims = Claims::read(&payload)?;
        return finish(
            policy,
            req,
            binding,
            verifier,
            now,
            &key,
            Ok(()),
            &claims,
            &payload,
            signing_input.as_bytes(),
            &signature,
        );
    }
    // §2.1 / step 2: a well-formed JWS (refuses `none`, HMAC, unknown `crit`).
    let jws = CompactJws::parse(compact).map_err(|e| jws_error(compact, e))?;

    // §2.2 / step 3: required header members and claims (presence and type).
    let typ = str_member(&jws.header, "typ")?;
    let jwk_value = match jws.header.get("jwk") {
        None | Some(Value::Null) => return Err(Reason::DpopMissingMember),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(Reason::DpopBadJwk),
    };
    let claims = Claims::read(&jws.payload)?;

    // §2.3 / step 4: `typ` exactly `dpop+jwt`.
    if typ != "dpop+jwt" {
        return Err(Reason::DpopBadTyp);
    }
    // §2.4 / step 5: asymmetric and on the allow-list (`Ed25519` = EdDSA, already mapped).
    if !policy.algs.contains(&jws.alg) {
        return Err(Reason::DpopAlgNotAllowed);
    }
    // §2.5 / step 7: a public key only.
    if let Value::Object(o) = jwk_value {
        if PRIVATE_MEMBERS.iter().any(|m| o.contains_key(*m)) {
            return Err(Reason::DpopPrivateKey);
        }
    }
    let jwk = Jwk::from_json(jwk_value).map_err(|e| match e {
        JwkError::PrivateKey => Reason::DpopPrivateKey,
        _ => Reason::DpopBadJwk,
    })?;
    if let Some(a) = jwk.alg.as_deref() {
        if Alg::parse(a) != Some(jws.alg) {
            return Err(Reason::DpopBadJwk);
        }
    }
    // §2.5: the key fits `alg` (RSA >= 2048 bits) and is within the proof key caps. Decided
    // here, reported in its place below (after the binding, `htm`, `htu`, `iat`, `ath`).
    let key_checks = check_key_for_alg(jws.alg, &jwk.key)
        .map_err(|_| Reason::DpopBadJwk)
        .and_then(|()| check_proof_key_size(&jwk.key));
    let jkt = jwk.key.thumbprint_s256();
    let key = Rc::new(ProofKey {
        alg: jws.alg,
        key_id: super::replay::key_id(&jkt),
        key: jwk.key,
        jkt,
    });
    if key_checks.is_ok() {
        keys.insert(header_b64, key.clone());
    }
    finish(
        policy,
        req,
        binding,
        verifier,
        now,
        &key,
        key_checks,
        &claims,
        &jws.payload,
        jws.signing_input.as_bytes(),
        &jws.signature,
    )
}

/// The claims §2.2 requires, read with their types checked.
struct Claims<'p> {
    jti: &'p str,
    htm: &'p str,
    htu: &'p str,
    iat: i64,
    ath: &'p str,
}

impl<'p> Claims<'p> {
    fn read(payload: &'p Map<String, Value>) -> Result<Claims<'p>, Reason> {
        Ok(Claims {
            jti: str_member(payload, "jti")?,
            htm: str_member(payload, "htm")?,
            htu: str_member(payload, "htu")?,
            iat: numeric_date(payload, "iat")?,
            // RFC 9449 §7.1 / §4.3 step 12: `ath` is required at a resource server.
            ath: str_member(payload, "ath")?,
        })
    }
}

/// `h.p.s` when `h` is a header already known good: the signing input, the payload (a JSON
/// object, no duplicate names) and the signature (non-empty), as `CompactJws::parse` wants.
fn parse_after_known_header(compact: &str) -> Option<(&str, Map<String, Value>, Vec<u8>)> {
    let mut parts = compact.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let signing_input = compact.get(..h.len() + 1 + p.len())?;
    let payload = crate::b64::decode(p)?;
    let signature = crate::b64::decode(s)?;
    if signature.is_empty() {
        return None;
    }
    let payload = crate::jose::jws::parse_strict_object(&payload)?;
    Some((signing_input, payload, signature))
}

/// Every check after the header ones, in the order of [`check_proof`].
#[allow(clippy::too_many_arguments)]
fn finish(
    policy: &DpopPolicy,
    req: &ProofRequest<'_>,
    binding: Binding<'_>,
    verifier: &dyn SignatureVerifier,
    now: i64,
    key: &ProofKey,
    key_checks: Result<(), Reason>,
    claims: &Claims<'_>,
    payload: &Map<String, Value>,
    signing_input: &[u8],
    signature: &[u8],
) -> Result<CheckedProof, Reason> {
    // Cheap checks before the expensive one (RFC 9449 §4.3 lists the checks, not their
    // order; all of them run): the binding, `htm`, `htu`, `iat`, `ath` and the key's size
    // are decided before any signature is verified, so a proof that fails one of them costs
    // no public-key operation (`docs/checks.md`, "DPoP proof keys").
    // §2.12 / step 12.2 and §6.1: the proof key is the one the token is bound to.
    if key.jkt != binding.jkt {
        return Err(Reason::DpopJktMismatch);
    }
    // §2.7 / step 8: `htm` equals the method (case-sensitive, RFC 9110 §9.1).
    if claims.htm != req.method {
        return Err(Reason::DpopHtmMismatch);
    }
    // §2.8 / step 9: `htu` names this request (normalised; query/fragment ignored).
    if !htu_matches(policy, &req.target, claims.htu) {
        return Err(Reason::DpopHtuMismatch);
    }
    // §2.9 / step 11: `iat` within the acceptance window.
    let iat = claims.iat;
    if iat < now.saturating_sub(policy.iat_past) || iat > now.saturating_add(policy.iat_future) {
        return Err(Reason::DpopIatOutOfWindow);
    }
    // §2.11 / step 12.1: `ath` is the hash of the presented token.
    if claims.ath != binding.ath {
        return Err(Reason::DpopAthMismatch);
    }
    // §2.5: the key fits `alg` (RSA >= 2048 bits) and is within the proof key caps.
    key_checks?;

    // §2.6 / step 6: the signature verifies with that key.
    let verified = match verifier.verify(key.alg, &key.key, signing_input, signature) {
        Err(VerifyError::Unsupported) => {
            SoftwareVerifier.verify(key.alg, &key.key, signing_input, signature)
        }
        other => other,
    };
    match verified {
        Ok(()) => {}
        Err(VerifyError::KeyMismatch) => return Err(Reason::DpopBadJwk),
        Err(_) => return Err(Reason::DpopBadSignature),
    }

    // §2.13 / step 10 and §9: a current server nonce, where the policy turns nonces on.
    // Checked last, so `use_dpop_nonce` means "only the nonce was missing".
    if let Some(cfg) = &policy.nonce {
        let ok = match payload.get("nonce") {
            Some(Value::String(n)) => nonce::verify(cfg, n, now),
            _ => false,
        };
        if !ok {
            return Err(Reason::DpopNonceRequired);
        }
    }
    // §2.16: every other header member and claim is ignored.
    Ok(CheckedProof {
        jti: claims.jti.to_string(),
        iat,
        jkt: key.jkt.clone(),
        key_id: key.key_id,
    })
}
