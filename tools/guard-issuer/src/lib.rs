//! guard-issuer: keys (private JWK files), JWKS, RFC 9068 access tokens and RFC 9449 DPoP proofs
//! for tests and the demo. Deliberately independent of `fapi-guard-core`: it signs with the
//! RustCrypto crates directly, so the filters are tested against a separate token source.
//! Native only; for wasm32 targets the crate compiles to an empty library (see main.rs).
#![cfg(not(target_arch = "wasm32"))]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BoxedUint, PrivateKey};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use signature::{RandomizedSigner, SignatureEncoding, Signer};

use rsa::signature;

pub type Res<T> = Result<T, String>;

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64d(s: &str, what: &str) -> Res<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| format!("JWK member {what} is not base64url"))
}

pub fn random_bytes(n: usize) -> Res<Vec<u8>> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| format!("system RNG failed: {e}"))?;
    Ok(buf)
}

/// A random identifier (jti): 16 bytes, base64url.
pub fn random_id() -> Res<String> {
    Ok(b64(&random_bytes(16)?))
}

/// RFC 9449 §4.2: ath = base64url(SHA-256(ASCII(access token))).
pub fn ath(token: &str) -> String {
    b64(&Sha256::digest(token.as_bytes()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Es256,
    Ps256,
    Rs256,
    EdDsa,
}

impl Alg {
    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "ES256" => Some(Alg::Es256),
            "PS256" => Some(Alg::Ps256),
            "RS256" => Some(Alg::Rs256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Ps256 => "PS256",
            Alg::Rs256 => "RS256",
            Alg::EdDsa => "EdDSA",
        }
    }
}

enum KeyMaterial {
    Ec(p256::ecdsa::SigningKey),
    Rsa(Box<PrivateKey>),
    Ed(ed25519_dalek::SigningKey),
}

/// A private signing key as stored in a private JWK file.
pub struct SigningJwk {
    key: KeyMaterial,
    pub alg: Alg,
    pub kid: Option<String>,
}

fn uint_b64(u: &BoxedUint) -> String {
    b64(&u.to_be_bytes_trimmed_vartime())
}

fn member<'a>(jwk: &'a Value, name: &str) -> Res<&'a str> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("JWK member {name} missing or not a string"))
}

fn uint_member(jwk: &Value, name: &str) -> Res<BoxedUint> {
    Ok(BoxedUint::from_be_slice_vartime(&b64d(
        member(jwk, name)?,
        name,
    )?))
}

impl SigningJwk {
    /// Generates a fresh key. `bits` applies to RSA only (the caller validates it).
    pub fn generate(alg: Alg, bits: usize, kid: Option<String>) -> Res<SigningJwk> {
        let key = match alg {
            Alg::Es256 => loop {
                // A uniformly random 32-byte string is a valid scalar except with ~2^-32 odds.
                if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&random_bytes(32)?) {
                    break KeyMaterial::Ec(k);
                }
            },
            Alg::EdDsa => {
                let mut seed = [0u8; 32];
                seed.copy_from_slice(&random_bytes(32)?);
                KeyMaterial::Ed(ed25519_dalek::SigningKey::from_bytes(&seed))
            }
            Alg::Ps256 | Alg::Rs256 => {
                let k = PrivateKey::new(&mut getrandom::SysRng, bits)
                    .map_err(|e| format!("RSA key generation failed: {e}"))?;
                KeyMaterial::Rsa(Box::new(k))
            }
        };
        let mut k = SigningJwk { key, alg, kid };
        if k.kid.is_none() {
            k.kid = Some(thumbprint(&k.public_members())?);
        }
        Ok(k)
    }

    /// Loads a private JWK (EC P-256, RSA, OKP Ed25519). `alg` defaults from the key type.
    pub fn from_json(jwk: &Value) -> Res<SigningJwk> {
        let kty = member(jwk, "kty")?;
        let alg = match jwk.get("alg").and_then(Value::as_str) {
            Some(a) => Alg::parse(a).ok_or_else(|| format!("unsupported JWK alg {a}"))?,
            None => match kty {
                "EC" => Alg::Es256,
                "OKP" => Alg::EdDsa,
                _ => Alg::Ps256,
            },
        };
        let d = b64d(
            member(jwk, "d").map_err(|_| "not a private JWK (no d)")?,
            "d",
        )?;
        let key = match (kty, alg) {
            ("EC", Alg::Es256) => {
                if member(jwk, "crv")? != "P-256" {
                    return Err("EC key must use crv P-256".into());
                }
                let k = p256::ecdsa::SigningKey::from_slice(&d)
                    .map_err(|_| "invalid P-256 private key")?;
                KeyMaterial::Ec(k)
            }
            ("OKP", Alg::EdDsa) => {
                if member(jwk, "crv")? != "Ed25519" {
                    return Err("OKP key must use crv Ed25519".into());
                }
                let seed: [u8; 32] = d.try_into().map_err(|_| "Ed25519 d must be 32 bytes")?;
                KeyMaterial::Ed(ed25519_dalek::SigningKey::from_bytes(&seed))
            }
            ("RSA", Alg::Ps256 | Alg::Rs256) => {
                let primes = match (jwk.get("p"), jwk.get("q")) {
                    (Some(_), Some(_)) => vec![uint_member(jwk, "p")?, uint_member(jwk, "q")?],
                    _ => Vec::new(),
                };
                let k = PrivateKey::from_components(
                    uint_member(jwk, "n")?,
                    uint_member(jwk, "e")?,
                    BoxedUint::from_be_slice_vartime(&d),
                    primes,
                )
                .map_err(|e| format!("invalid RSA private key: {e}"))?;
                KeyMaterial::Rsa(Box::new(k))
            }
            _ => {
                return Err(format!(
                    "key type {kty} cannot be used with alg {}",
                    alg.name()
                ))
            }
        };
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
        Ok(SigningJwk { key, alg, kid })
    }

    /// RFC 7517 public members only (what goes into a DPoP `jwk` header, RFC 9449 §4.2).
    pub fn public_members(&self) -> Value {
        match &self.key {
            KeyMaterial::Ec(k) => {
                let point = k.verifying_key().to_sec1_point(false);
                let bytes = point.as_bytes();
                // Uncompressed SEC1: 0x04 || x (32) || y (32).
                let (x, y) = bytes.get(1..33).zip(bytes.get(33..65)).unwrap_or_default();
                json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)})
            }
            KeyMaterial::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.verifying_key().as_bytes())})
            }
            KeyMaterial::Rsa(k) => {
                json!({"kty": "RSA", "n": b64(&k.n_bytes()), "e": b64(&k.e_bytes())})
            }
        }
    }

    /// Public JWK for a JWKS: public members plus kid, alg, use=sig.
    pub fn public_jwk(&self) -> Value {
        let mut v = self.public_members();
        if let Some(obj) = v.as_object_mut() {
            if let Some(kid) = &self.kid {
                obj.insert("kid".into(), json!(kid));
            }
            obj.insert("alg".into(), json!(self.alg.name()));
            obj.insert("use".into(), json!("sig"));
        }
        v
    }

    /// The private JWK file content.
    pub fn private_jwk(&self) -> Value {
        let mut v = self.public_jwk();
        let Some(obj) = v.as_object_mut() else {
            return v;
        };
        match &self.key {
            KeyMaterial::Ec(k) => {
                obj.insert("d".into(), json!(b64(&k.to_bytes())));
            }
            KeyMaterial::Ed(k) => {
                obj.insert("d".into(), json!(b64(k.as_bytes())));
            }
            KeyMaterial::Rsa(k) => {
                obj.insert("d".into(), json!(uint_b64(k.d())));
                if let [p, q] = k.primes() {
                    obj.insert("p".into(), json!(uint_b64(p)));
                    obj.insert("q".into(), json!(uint_b64(q)));
                }
                if let (Some(dp), Some(dq), Some(qi)) = (k.dp(), k.dq(), k.qinv()) {
                    obj.insert("dp".into(), json!(uint_b64(dp)));
                    obj.insert("dq".into(), json!(uint_b64(dq)));
                    obj.insert("qi".into(), json!(uint_b64(&qi.retrieve())));
                }
            }
        }
        v
    }

    /// Signs a JWS signing input with this key's alg (RFC 7518 §3).
    pub fn sign(&self, input: &[u8]) -> Res<Vec<u8>> {
        let err = |e: signature::Error| format!("signing failed: {e}");
        match (&self.key, self.alg) {
            // RFC 7518 §3.4: ES256 signature is the raw 64-byte R || S, not DER.
            (KeyMaterial::Ec(k), _) => {
                let sig: p256::ecdsa::Signature = k.try_sign(input).map_err(err)?;
                Ok(sig.to_bytes().to_vec())
            }
            (KeyMaterial::Ed(k), _) => Ok(k.try_sign(input).map_err(err)?.to_bytes().to_vec()),
            // RFC 7518 §3.5: PS256 uses MGF1 with SHA-256 and a 32-byte salt.
            (KeyMaterial::Rsa(k), Alg::Ps256) => {
                let sk = rsa::pss::SigningKey::<Sha256>::new_with_salt_len((**k).clone(), 32);
                Ok(sk
                    .try_sign_with_rng(&mut getrandom::SysRng, input)
                    .map_err(err)?
                    .to_vec())
            }
            (KeyMaterial::Rsa(k), _) => {
                let sk = rsa::pkcs1v15::SigningKey::<Sha256>::new((**k).clone());
                Ok(sk.try_sign(input).map_err(err)?.to_vec())
            }
        }
    }
}

/// Strips private members from any JWK (for JWKS output of already-public keys too).
pub fn public_of(jwk: &Value) -> Res<Value> {
    let obj = jwk.as_object().ok_or("JWK is not a JSON object")?;
    let private = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
    let out: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| !private.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Value::Object(out))
}

/// RFC 7638 §3: SHA-256 over the required members in lexicographic order, no whitespace.
pub fn thumbprint(jwk: &Value) -> Res<String> {
    let names: &[&str] = match member(jwk, "kty")? {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        other => return Err(format!("unsupported kty {other} for thumbprint")),
    };
    let mut canon = String::from("{");
    for (i, name) in names.iter().enumerate() {
        let v = member(jwk, name)?;
        if i > 0 {
            canon.push(',');
        }
        canon.push_str(&format!("{}:{}", json!(name), json!(v)));
    }
    canon.push('}');
    Ok(b64(&Sha256::digest(canon.as_bytes())))
}

/// JWS Compact Serialization (RFC 7515 §7.1).
pub fn compact_jws(
    header: &Map<String, Value>,
    claims: &Map<String, Value>,
    key: &SigningJwk,
) -> Res<String> {
    let enc = |m: &Map<String, Value>| serde_json::to_vec(m).map(|b| b64(&b));
    let input = format!(
        "{}.{}",
        enc(header).map_err(|e| e.to_string())?,
        enc(claims).map_err(|e| e.to_string())?
    );
    let sig = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64(&sig)))
}
