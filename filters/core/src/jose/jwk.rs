//! JWK / JWKS parsing (RFC 7517), public-key-only: a JWK becomes a [`PublicKey`]
//! (`jose::public_key`, which also holds the RFC 7638 thumbprint).

use serde_json::Value;

use super::alg::Alg;
pub use super::public_key::PublicKey;
use crate::b64;

/// Largest RSA modulus accepted (bits): bigger keys only cost CPU (RSA "DoS" keys); the
/// verifier (`jose::rsa`) refuses them too.
pub const RSA_MAX_BITS: usize = super::rsa::RSA_MAX_BITS;
/// Largest RSA public exponent accepted: 2^33 − 1, the bound `ring` uses (`jose::rsa`).
const RSA_MAX_EXPONENT: u64 = super::rsa::RSA_MAX_EXPONENT;

/// Why a JWK was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwkError {
    /// Not a JSON object / missing or malformed member (member named).
    Malformed(&'static str),
    /// `kty`/`crv` the guard does not support.
    Unsupported,
    /// Carries private members (`d`, `p`, `q`, `dp`, `dq`, `qi`, `k`) (RFC 9449 §4.3 step 7).
    PrivateKey,
    /// EC point not on the curve, or otherwise invalid key material.
    InvalidKey,
}

/// One JWK of a JWKS with the selection members of RFC 7517 §4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    pub alg: Option<String>,
    pub use_: Option<String>,
    pub key: PublicKey,
}

/// Private / secret members of RFC 7518 §6.2.2, §6.3.2, §6.4.1 and RFC 8037 §2.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

impl Jwk {
    /// Parses one public JWK from a JSON value.
    ///
    /// Order of checks: not an object / no string `kty` -> `Malformed`; `kty: oct` (symmetric)
    /// -> `Unsupported`; any private member -> `PrivateKey`; then the key type's own members.
    pub fn from_json(v: &Value) -> Result<Jwk, JwkError> {
        let obj = v.as_object().ok_or(JwkError::Malformed("jwk"))?;
        let kty = obj
            .get("kty")
            .and_then(Value::as_str)
            .ok_or(JwkError::Malformed("kty"))?;
        // RFC 8725 §3.1–3.2: symmetric keys are never usable by the guard.
        if kty == "oct" {
            return Err(JwkError::Unsupported);
        }
        // RFC 9449 §4.3 step 7; RFC 7517 §9.2: a public JWK carries no private member
        // (`oth` is the RSA multi-prime private member, RFC 7518 §6.3.2.7).
        if PRIVATE_MEMBERS.iter().any(|m| obj.contains_key(*m)) {
            return Err(JwkError::PrivateKey);
        }
        let key = match kty {
            "EC" => parse_ec(obj)?,
            "RSA" => parse_rsa(obj)?,
            "OKP" => parse_okp(obj)?,
            _ => return Err(JwkError::Unsupported),
        };
        Ok(Jwk {
            kid: opt_str(obj, "kid")?,
            alg: opt_str(obj, "alg")?,
            use_: opt_str(obj, "use")?,
            key,
        })
    }
}

type Obj = serde_json::Map<String, Value>;

fn opt_str(obj: &Obj, name: &'static str) -> Result<Option<String>, JwkError> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(JwkError::Malformed(name)),
    }
}

fn req_b64(obj: &Obj, name: &'static str) -> Result<Vec<u8>, JwkError> {
    obj.get(name)
        .and_then(Value::as_str)
        .and_then(b64::decode)
        .ok_or(JwkError::Malformed(name))
}

fn req_32(obj: &Obj, name: &'static str) -> Result<[u8; 32], JwkError> {
    req_fixed(obj, name)
}

fn req_fixed<const N: usize>(obj: &Obj, name: &'static str) -> Result<[u8; N], JwkError> {
    req_b64(obj, name)?
        .try_into()
        .map_err(|_| JwkError::Malformed(name))
}

/// SEC1 uncompressed point `04 ‖ x ‖ y`.
fn sec1(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + x.len() + y.len());
    out.push(0x04);
    out.extend_from_slice(x);
    out.extend_from_slice(y);
    out
}

fn crv(obj: &Obj) -> Result<&str, JwkError> {
    obj.get("crv")
        .and_then(Value::as_str)
        .ok_or(JwkError::Malformed("crv"))
}

/// RFC 7518 §6.2.1: `x`/`y` are the full-length coordinates of the curve (32, 48, 66
/// octets); the point must be on the curve (invalid-curve attacks, RFC 8725 §3.4).
fn parse_ec(obj: &Obj) -> Result<PublicKey, JwkError> {
    match crv(obj)? {
        "P-256" => {
            let (x, y) = (req_fixed::<32>(obj, "x")?, req_fixed::<32>(obj, "y")?);
            p256::PublicKey::from_sec1_bytes(&sec1(&x, &y)).map_err(|_| JwkError::InvalidKey)?;
            Ok(PublicKey::EcP256 { x, y })
        }
        "P-384" => {
            let (x, y) = (req_fixed::<48>(obj, "x")?, req_fixed::<48>(obj, "y")?);
            if !fapi_guard_ec_p384_p521::p384_point_valid(&x, &y) {
                return Err(JwkError::InvalidKey);
            }
            Ok(PublicKey::EcP384 { x, y })
        }
        "P-521" => {
            let (x, y) = (req_fixed::<66>(obj, "x")?, req_fixed::<66>(obj, "y")?);
            if !fapi_guard_ec_p384_p521::p521_point_valid(&x, &y) {
                return Err(JwkError::InvalidKey);
            }
            Ok(PublicKey::EcP521 { x, y })
        }
        _ => Err(JwkError::Unsupported),
    }
}

/// RFC 7518 §6.3.1: `n` and `e` are unsigned big-endian with no leading zero octets.
fn parse_rsa(obj: &Obj) -> Result<PublicKey, JwkError> {
    let n = req_b64(obj, "n")?;
    let e = req_b64(obj, "e")?;
    if n.first().is_none_or(|b| *b == 0) {
        return Err(JwkError::Malformed("n"));
    }
    if e.first().is_none_or(|b| *b == 0) || e.len() > 8 {
        return Err(JwkError::Malformed("e"));
    }
    let e_val = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    // e odd and 3 <= e <= 2^33-1 (e = 1 makes every "signature" verify: Wycheproof
    // rejectsPublicExponent1); n odd and not oversized.
    if e_val < 3 || e_val % 2 == 0 || e_val > RSA_MAX_EXPONENT {
        return Err(JwkError::InvalidKey);
    }
    // n has no leading zero octet (checked above), so its bit length is exact.
    let n_bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
    if n.last().is_none_or(|b| b % 2 == 0) || n_bits > RSA_MAX_BITS || roca_fingerprint(&n) {
        return Err(JwkError::InvalidKey);
    }
    Ok(PublicKey::Rsa { n, e })
}

/// ROCA (CVE-2017-15361, Nemec et al., CCS 2017): Infineon RSALib moduli are products of
/// primes 65537^a mod M, so n mod r lies in the subgroup generated by 65537 mod r for every
/// small prime r of M. A random modulus passes this for all 38 primes below with negligible
/// probability; such keys' private keys can be factored (Wycheproof `rejectsKeyWithRocaVulnerability`).
fn roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&r| {
        let residue = n
            .iter()
            .fold(0u32, |acc, b| (acc * 256 + u32::from(*b)) % r);
        // Walk the cyclic subgroup <65537 mod r>.
        let g = 65537 % r;
        let mut x = 1u32;
        loop {
            if x == residue {
                return true;
            }
            x = x * g % r;
            if x == 1 {
                return false;
            }
        }
    })
}

/// RFC 8037 §2: `crv: Ed25519`, `x` the 32-octet public key. Keys that do not decode to a
/// curve point or are of small order ("weak") are refused.
fn parse_okp(obj: &Obj) -> Result<PublicKey, JwkError> {
    if crv(obj)? != "Ed25519" {
        return Err(JwkError::Unsupported);
    }
    let x = req_32(obj, "x")?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| JwkError::InvalidKey)?;
    if vk.is_weak() {
        return Err(JwkError::InvalidKey);
    }
    Ok(PublicKey::Ed25519 { x })
}

/// A JWKS. Keys the guard cannot use (unsupported kty, `use` = `enc`, private keys) are
/// skipped on parse, not fatal, so one odd key does not take out an issuer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWKS document (`{"keys":[...]}`); an error only when it is not one at all.
    pub fn parse(bytes: &[u8]) -> Result<Jwks, JwkError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| JwkError::Malformed("jwks"))?;
        let keys = doc
            .as_object()
            .ok_or(JwkError::Malformed("jwks"))?
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwkError::Malformed("keys"))?;
        let keys = keys
            .iter()
            .filter(|v| usable_for_verify(v))
            .filter_map(|v| Jwk::from_json(v).ok())
            .filter(|k| k.use_.as_deref().is_none_or(|u| u == "sig"))
            .collect();
        Ok(Jwks { keys })
    }
    /// RFC 8725 §3.10 / docs/checks.md §1.4: the key for a JWS header: by `kid` (when the JWS has one),
    /// then only keys that `fits(alg)` and whose `alg`/`use` (when present) agree.
    ///
    /// With a `kid`, the first such key with that `kid`. Without one, the single key that fits;
    /// `None` when several fit (ambiguous: the guard does not try keys in turn).
    pub fn select(&self, kid: Option<&str>, alg: Alg) -> Option<&Jwk> {
        let mut candidates = self.keys.iter().filter(|k| {
            kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
                && k.key.fits(alg)
                // RFC 7517 §4.4: a key's own `alg` names the one algorithm it is for.
                && k.alg.as_deref().is_none_or(|a| Alg::parse(a) == Some(alg))
                // RFC 7517 §4.2.
                && k.use_.as_deref().is_none_or(|u| u == "sig")
        });
        let first = candidates.next()?;
        if kid.is_none() && candidates.next().is_some() {
            return None;
        }
        Some(first)
    }
}

/// RFC 7517 §4.3: a key whose `key_ops` is present must list `verify` to be used for it;
/// a malformed `key_ops` makes the key unusable.
fn usable_for_verify(v: &Value) -> bool {
    match v.get("key_ops") {
        None => true,
        Some(Value::Array(ops)) => ops.iter().any(|op| op.as_str() == Some("verify")),
        Some(_) => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap
)]
mod tests {
    use super::*;
    use serde_json::json;

    // RFC 7515 A.3 P-256 key.
    const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    // RFC 8037 A.2 Ed25519 key.
    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    // RFC 7515 A.2 RSA modulus (2048 bits).
    const RSA_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";

    fn ec() -> Value {
        json!({"kty":"EC","crv":"P-256","x":EC_X,"y":EC_Y})
    }
    fn rsa() -> Value {
        json!({"kty":"RSA","n":RSA_N,"e":"AQAB"})
    }
    fn ed() -> Value {
        json!({"kty":"OKP","crv":"Ed25519","x":ED_X})
    }
    fn with(mut v: Value, k: &str, val: Value) -> Value {
        v.as_object_mut().unwrap().insert(k.to_owned(), val);
        v
    }
    fn without(mut v: Value, k: &str) -> Value {
        v.as_object_mut().unwrap().remove(k);
        v
    }

    #[test]
    fn jwk_cases() {
        let mut bad_y = b64::decode(EC_Y).unwrap();
        bad_y[31] ^= 1;
        let cases: Vec<(&str, Value, Result<(), JwkError>)> = vec![
            ("ec ok", ec(), Ok(())),
            ("rsa ok", rsa(), Ok(())),
            ("ed ok", ed(), Ok(())),
            ("not object", json!("x"), Err(JwkError::Malformed("jwk"))),
            (
                "no kty",
                without(ec(), "kty"),
                Err(JwkError::Malformed("kty")),
            ),
            (
                "oct",
                json!({"kty":"oct","k":"AAAA"}),
                Err(JwkError::Unsupported),
            ),
            (
                "ec d",
                with(ec(), "d", json!("AAAA")),
                Err(JwkError::PrivateKey),
            ),
            (
                "rsa p",
                with(rsa(), "p", json!("AAAA")),
                Err(JwkError::PrivateKey),
            ),
            (
                "rsa qi",
                with(rsa(), "qi", json!("AAAA")),
                Err(JwkError::PrivateKey),
            ),
            (
                "ed d",
                with(ed(), "d", json!("AAAA")),
                Err(JwkError::PrivateKey),
            ),
            (
                "ec k",
                with(ec(), "k", json!("AAAA")),
                Err(JwkError::PrivateKey),
            ),
            (
                // A P-256 key labelled P-384: wrong coordinate length.
                "p-384 label on p-256 key",
                with(ec(), "crv", json!("P-384")),
                Err(JwkError::Malformed("x")),
            ),
            (
                "secp256k1",
                with(ec(), "crv", json!("secp256k1")),
                Err(JwkError::Unsupported),
            ),
            (
                "x25519",
                with(ed(), "crv", json!("X25519")),
                Err(JwkError::Unsupported),
            ),
            (
                "no crv",
                without(ec(), "crv"),
                Err(JwkError::Malformed("crv")),
            ),
            (
                "kty foo",
                with(ec(), "kty", json!("foo")),
                Err(JwkError::Unsupported),
            ),
            (
                "ec off curve",
                with(ec(), "y", json!(b64::encode(&bad_y))),
                Err(JwkError::InvalidKey),
            ),
            (
                "ec x short",
                with(ec(), "x", json!("AAAA")),
                Err(JwkError::Malformed("x")),
            ),
            (
                "ec x padded",
                with(ec(), "x", json!(format!("{EC_X}="))),
                Err(JwkError::Malformed("x")),
            ),
            ("ec no y", without(ec(), "y"), Err(JwkError::Malformed("y"))),
            (
                "rsa e=1",
                with(rsa(), "e", json!("AQ")),
                Err(JwkError::InvalidKey),
            ),
            (
                "rsa e even",
                with(rsa(), "e", json!("AQAA")),
                Err(JwkError::InvalidKey),
            ),
            (
                "rsa e leading zero",
                with(rsa(), "e", json!("AAEAAQ")),
                Err(JwkError::Malformed("e")),
            ),
            (
                "rsa n leading zero",
                with(rsa(), "n", json!(format!("AA{RSA_N}"))),
                Err(JwkError::Malformed("n")),
            ),
            (
                "rsa n even",
                with(rsa(), "n", json!("AQAC")),
                Err(JwkError::InvalidKey),
            ),
            (
                "rsa no n",
                without(rsa(), "n"),
                Err(JwkError::Malformed("n")),
            ),
            (
                "ed x short",
                with(ed(), "x", json!("AAAA")),
                Err(JwkError::Malformed("x")),
            ),
            (
                // The identity point (small order): a "weak" key.
                "ed weak",
                with(
                    ed(),
                    "x",
                    json!(b64::encode(&{
                        let mut b = [0u8; 32];
                        b[0] = 1;
                        b
                    })),
                ),
                Err(JwkError::InvalidKey),
            ),
            (
                "kid number",
                with(ec(), "kid", json!(1)),
                Err(JwkError::Malformed("kid")),
            ),
        ];
        for (name, v, want) in cases {
            assert_eq!(Jwk::from_json(&v).map(|_| ()), want, "case {name}");
        }
    }

    #[test]
    fn rsa_bits_and_fits() {
        let k = Jwk::from_json(&rsa()).unwrap().key;
        assert_eq!(k.rsa_bits(), 2048);
        assert!(k.fits(Alg::PS256) && k.fits(Alg::RS256));
        assert!(!k.fits(Alg::ES256) && !k.fits(Alg::EdDSA));
        let e = Jwk::from_json(&ec()).unwrap().key;
        assert_eq!(e.rsa_bits(), 0);
        assert!(e.fits(Alg::ES256) && !e.fits(Alg::PS256) && !e.fits(Alg::EdDSA));
        let d = Jwk::from_json(&ed()).unwrap().key;
        assert!(d.fits(Alg::EdDSA) && !d.fits(Alg::ES256) && !d.fits(Alg::RS256));
        let small = PublicKey::Rsa {
            n: vec![0x01, 0xff],
            e: vec![3],
        };
        assert_eq!(small.rsa_bits(), 9);
    }

    fn named(v: Value, kid: Option<&str>, alg: Option<&str>, use_: Option<&str>) -> Value {
        let mut v = v;
        if let Some(k) = kid {
            v = with(v, "kid", json!(k));
        }
        if let Some(a) = alg {
            v = with(v, "alg", json!(a));
        }
        if let Some(u) = use_ {
            v = with(v, "use", json!(u));
        }
        v
    }

    #[test]
    fn jwks_parse_skips_unusable() {
        let doc = json!({"keys":[
            {"kty":"oct","k":"AAAA","kid":"hmac"},
            named(ec(), Some("enc"), None, Some("enc")),
            with(named(ec(), Some("ops-enc"), None, None), "key_ops", json!(["encrypt"])),
            with(named(ec(), Some("ops-verify"), None, None), "key_ops", json!(["verify"])),
            with(named(rsa(), Some("priv"), None, None), "d", json!("AAAA")),
            named(json!({"kty":"EC","crv":"P-521","x":"AA","y":"AA"}), Some("p521"), None, None),
            named(ed(), Some("ed"), None, Some("sig")),
            "not a key",
        ]});
        let jwks = Jwks::parse(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = jwks
            .keys
            .iter()
            .map(|k| k.kid.as_deref().unwrap())
            .collect();
        assert_eq!(kids, ["ops-verify", "ed"]);

        for (name, bytes) in [
            ("array", &b"[]"[..]),
            ("no keys", b"{}"),
            ("keys object", br#"{"keys":{}}"#),
            ("not json", b"keys"),
        ] {
            assert!(Jwks::parse(bytes).is_err(), "case {name}");
        }
        assert_eq!(Jwks::parse(br#"{"keys":[]}"#).unwrap().keys.len(), 0);
    }

    #[test]
    fn select_cases() {
        let doc = json!({"keys":[
            named(ec(), Some("a"), Some("ES256"), Some("sig")),
            named(rsa(), Some("a"), Some("RS256"), None),
            named(rsa(), Some("r"), Some("PS256"), None),
            named(rsa(), Some("r2"), None, None),
            named(ed(), Some("e"), Some("EdDSA"), None),
            named(ed(), Some("e-nouse"), None, None),
        ]});
        let jwks = Jwks::parse(doc.to_string().as_bytes()).unwrap();
        let pick = |kid: Option<&str>, alg| jwks.select(kid, alg).and_then(|k| k.kid.clone());
        let cases: &[(&str, Option<&str>, Alg, Option<&str>)] = &[
            ("kid+ES256", Some("a"), Alg::ES256, Some("a")),
            (
                "shared kid, RS256 picks rsa key",
                Some("a"),
                Alg::RS256,
                Some("a"),
            ),
            (
                "kid a has no PS256 key (alg RS256 pinned)",
                Some("a"),
                Alg::PS256,
                None,
            ),
            ("kid r PS256", Some("r"), Alg::PS256, Some("r")),
            (
                "kid r pinned PS256 refuses RS256",
                Some("r"),
                Alg::RS256,
                None,
            ),
            ("kid r2 (no alg) RS256", Some("r2"), Alg::RS256, Some("r2")),
            ("unknown kid", Some("zz"), Alg::ES256, None),
            ("kid of wrong kty", Some("e"), Alg::ES256, None),
            ("no kid, one ES256 key", None, Alg::ES256, Some("a")),
            ("no kid, two EdDSA keys: ambiguous", None, Alg::EdDSA, None),
            (
                "no kid, two PS256 candidates: ambiguous",
                None,
                Alg::PS256,
                None,
            ),
        ];
        for (name, kid, alg, want) in cases {
            assert_eq!(pick(*kid, *alg).as_deref(), *want, "case {name}");
        }
        // Repeated kid: the first fitting key wins.
        let doc = json!({"keys":[
            named(ec(), Some("dup"), None, None),
            named(json!({"kty":"EC","crv":"P-256",
                "x":"04N0xi21hshyvBp7I167sbE_bXqyqkAPfefdklMO7wY",
                "y":"UI8exy-C06a7DUnjIdENkxeFtHM4-l_41LqEw9nVgmw"}), Some("dup"), None, None),
        ]});
        let jwks = Jwks::parse(doc.to_string().as_bytes()).unwrap();
        let got = jwks.select(Some("dup"), Alg::ES256).unwrap();
        assert_eq!(got.key, Jwk::from_json(&ec()).unwrap().key);
        // A hand-built Jwk with use=enc is never selected.
        let jwks = Jwks {
            keys: vec![Jwk {
                kid: None,
                alg: None,
                use_: Some("enc".into()),
                key: Jwk::from_json(&ec()).unwrap().key,
            }],
        };
        assert!(jwks.select(None, Alg::ES256).is_none());
    }

    #[test]
    fn thumbprint_rfc7638_example() {
        // RFC 7638 §3.1 (alg/kid must be ignored).
        let v = json!({"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"});
        let k = Jwk::from_json(&v).unwrap().key;
        assert_eq!(
            k.thumbprint_s256(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
