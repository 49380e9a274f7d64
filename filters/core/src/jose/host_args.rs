//! Encoding for Envoy's `verify_signature` foreign function (Envoy PR #32127):
//! the `VerifySignatureArguments` protobuf (hash function name, DER SubjectPublicKeyInfo,
//! signature, text), with the JWS → DER conversions it needs. Pure bytes, no host calls.
//!
//! Envoy `source/extensions/common/wasm/ext/verify_signature.proto`:
//! ```text
//! message VerifySignatureArguments {
//!   string hash_function = 1;   // "sha256"
//!   bytes public_key = 2;       // DER SubjectPublicKeyInfo
//!   bytes signature = 3;
//!   bytes text = 4;
//!   string public_key_pem = 5;  // newer Envoy only; not used here
//! }
//! message VerifySignatureResult { bool result = 1; string error = 2; }
//! ```
//! `foreign.cc` parses the arguments, imports the key (`EVP_parse_public_key`), runs
//! `EVP_DigestVerify` (BoringSSL) and returns `WasmResult::Ok` with a serialised
//! `VerifySignatureResult`, or `BadArgument` when the arguments do not parse.
//! Seen in Envoy 1.40 (probe filter): a valid signature returns `08 01`; a bad one returns
//! `result` unset with `error = "Failed to verify digest. Error code: 0"`; an unparsable key
//! or unknown hash also returns `Ok` with `result` unset (not `BadArgument`); a host without
//! the function returns `NotFound`.
//! BoringSSL verifies with whatever key it is given: callers must run
//! [`check_key_for_alg`](super::verify::check_key_for_alg) first ([`host_verify_args`] does).

use super::alg::Alg;
use super::public_key::PublicKey;
use super::verify::{check_key_for_alg, VerifyError};

/// The foreign function's name as Envoy registers it.
pub const VERIFY_SIGNATURE_FUNCTION: &str = "verify_signature";

/// Hash names the host takes (Envoy `foreign.cc` maps them to BoringSSL digests;
/// RFC 7518 §3.3, §3.4).
pub const HASH_SHA256: &str = "sha256";
pub const HASH_SHA384: &str = "sha384";
pub const HASH_SHA512: &str = "sha512";

/// Protobuf-encodes `VerifySignatureArguments` (fields 1–4; empty fields omitted, as proto3 does).
pub fn encode_verify_signature_args(
    hash_function: &str,
    public_key_der: &[u8],
    signature: &[u8],
    text: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        hash_function.len() + public_key_der.len() + signature.len() + text.len() + 24,
    );
    for (field, value) in [
        (1u64, hash_function.as_bytes()),
        (2, public_key_der),
        (3, signature),
        (4, text),
    ] {
        if !value.is_empty() {
            put_varint(&mut out, (field << 3) | WIRE_LEN);
            put_varint(&mut out, value.len() as u64);
            out.extend_from_slice(value);
        }
    }
    out
}

/// The arguments for verifying a JWS with the host, or `Ok(None)` when BoringSSL cannot do
/// `alg` (PS*: it checks PKCS#1 v1.5 padding for a plain RSA key; EdDSA: it takes no digest).
/// The host does ES256/ES384/ES512 and RS256/RS384/RS512.
/// Runs [`check_key_for_alg`] first; an ES* signature that is not 2×the curve's octets and an
/// RS* signature that is not |n| octets are refused here.
pub fn host_verify_args(
    alg: Alg,
    key: &PublicKey,
    signing_input: &[u8],
    signature: &[u8],
) -> Result<Option<Vec<u8>>, VerifyError> {
    check_key_for_alg(alg, key)?;
    let sig_der;
    let (hash, sig) = match (alg, key) {
        (Alg::ES256, PublicKey::EcP256 { .. })
        | (Alg::ES384, PublicKey::EcP384 { .. })
        | (Alg::ES512, PublicKey::EcP521 { .. }) => {
            // RFC 7518 §3.4: raw R‖S in the JWS; BoringSSL wants ECDSA-Sig-Value.
            sig_der = ecdsa_sig_to_der(signature, ec_coordinate_len(alg))
                .ok_or(VerifyError::BadSignature)?;
            (hash_of(alg), &sig_der[..])
        }
        (Alg::RS256 | Alg::RS384 | Alg::RS512, PublicKey::Rsa { n, .. }) => {
            if signature.len() != strip_zeros(n).len() {
                return Err(VerifyError::BadSignature);
            }
            (hash_of(alg), signature)
        }
        _ => return Ok(None),
    };
    Ok(Some(encode_verify_signature_args(
        hash,
        &spki_der(key),
        sig,
        signing_input,
    )))
}

/// The hash the JWS alg signs with (RFC 7518 §3.1 table).
fn hash_of(alg: Alg) -> &'static str {
    match alg {
        Alg::ES384 | Alg::RS384 | Alg::PS384 => HASH_SHA384,
        Alg::ES512 | Alg::RS512 | Alg::PS512 => HASH_SHA512,
        _ => HASH_SHA256,
    }
}

/// Octets per ECDSA coordinate / signature half (RFC 7518 §3.4): 32, 48, 66.
fn ec_coordinate_len(alg: Alg) -> usize {
    match alg {
        Alg::ES384 => 48,
        Alg::ES512 => 66,
        _ => 32,
    }
}

/// `VerifySignatureResult` as the host returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifySignatureResult {
    /// True only when the signature verified.
    pub result: bool,
    /// BoringSSL's message when it did not (for debug logs; contains no request data).
    pub error: String,
}

/// Decodes a `VerifySignatureResult`. Empty input is the all-default message
/// (`result = false`). `None` when the bytes are not a well-formed message of that type.
pub fn decode_verify_signature_result(bytes: &[u8]) -> Option<VerifySignatureResult> {
    let mut out = VerifySignatureResult::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        let key = get_varint(&mut rest)?;
        let (field, wire) = (key >> 3, key & 7);
        match (field, wire) {
            (0, _) => return None,
            (1, WIRE_VARINT) => out.result = get_varint(&mut rest)? != 0,
            (2, WIRE_LEN) => {
                let s = get_len_delimited(&mut rest)?;
                out.error = String::from_utf8(s.to_vec()).ok()?;
            }
            (1 | 2, _) => return None,
            // Unknown fields: skip (protobuf forward compatibility).
            (_, WIRE_VARINT) => {
                get_varint(&mut rest)?;
            }
            (_, WIRE_I64) => rest = rest.get(8..)?,
            (_, WIRE_LEN) => {
                get_len_delimited(&mut rest)?;
            }
            (_, WIRE_I32) => rest = rest.get(4..)?,
            _ => return None,
        }
    }
    Some(out)
}

/// JWS ES256 R‖S (64 octets) → DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`
/// (RFC 3279 §2.2.3), minimal INTEGER encodings. `None` unless exactly 64 octets.
pub fn es256_sig_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    ecdsa_sig_to_der(raw, 32)
}

/// JWS ES* R‖S (2 × `half` octets) → DER `ECDSA-Sig-Value`; `None` on any other length.
pub fn ecdsa_sig_to_der(raw: &[u8], half: usize) -> Option<Vec<u8>> {
    if raw.len() != 2 * half {
        return None;
    }
    let (r, s) = raw.split_at(half);
    let mut body = der_uint(r);
    body.extend_from_slice(&der_uint(s));
    Some(der_tlv(TAG_SEQUENCE, &body))
}

/// DER `SubjectPublicKeyInfo` (RFC 5280 §4.1.2.7) for a JWK public key:
/// P-256 as `id-ecPublicKey` + `prime256v1` with the uncompressed point (RFC 5480 §2);
/// RSA as `rsaEncryption` (NULL parameters) with `RSAPublicKey` (RFC 3279 §2.3.1);
/// Ed25519 as `id-Ed25519` with the raw key (RFC 8410 §4).
pub fn spki_der(key: &PublicKey) -> Vec<u8> {
    let (alg_id, key_bits) = match key {
        PublicKey::EcP256 { x, y } => {
            let mut alg_id = der_tlv(TAG_OID, OID_EC_PUBLIC_KEY);
            alg_id.extend_from_slice(&der_tlv(TAG_OID, OID_PRIME256V1));
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(x);
            point.extend_from_slice(y);
            (alg_id, point)
        }
        PublicKey::EcP384 { x, y } => ec_alg_id_and_point(OID_SECP384R1, x, y),
        PublicKey::EcP521 { x, y } => ec_alg_id_and_point(OID_SECP521R1, x, y),
        PublicKey::Rsa { n, e } => {
            let mut alg_id = der_tlv(TAG_OID, OID_RSA_ENCRYPTION);
            alg_id.extend_from_slice(&[TAG_NULL, 0x00]);
            let mut rsa_key = der_uint(n);
            rsa_key.extend_from_slice(&der_uint(e));
            (alg_id, der_tlv(TAG_SEQUENCE, &rsa_key))
        }
        PublicKey::Ed25519 { x } => (der_tlv(TAG_OID, OID_ED25519), x.to_vec()),
    };
    let mut bit_string = Vec::with_capacity(key_bits.len() + 1);
    bit_string.push(0x00); // no unused bits
    bit_string.extend_from_slice(&key_bits);
    let mut spki = der_tlv(TAG_SEQUENCE, &alg_id);
    spki.extend_from_slice(&der_tlv(TAG_BIT_STRING, &bit_string));
    der_tlv(TAG_SEQUENCE, &spki)
}

// --- DER ---

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
/// 1.2.840.10045.2.1
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// 1.2.840.10045.3.1.7
const OID_PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// 1.3.132.0.34 (RFC 5480 §2.1.1.1)
const OID_SECP384R1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// 1.3.132.0.35 (RFC 5480 §2.1.1.1)
const OID_SECP521R1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
/// 1.2.840.113549.1.1.1
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// 1.3.101.112
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// `id-ecPublicKey` + the named curve, and the uncompressed point (RFC 5480 §2).
fn ec_alg_id_and_point(curve: &[u8], x: &[u8], y: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut alg_id = der_tlv(TAG_OID, OID_EC_PUBLIC_KEY);
    alg_id.extend_from_slice(&der_tlv(TAG_OID, curve));
    let mut point = Vec::with_capacity(1 + x.len() + y.len());
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    (alg_id, point)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let be = (len as u64).to_be_bytes();
        let bytes = strip_zeros(&be);
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A non-negative INTEGER from big-endian magnitude: minimal octets, a 0x00 in front when the
/// top bit is set (X.690 §8.3.2), zero as one 0x00 octet.
fn der_uint(magnitude: &[u8]) -> Vec<u8> {
    let m = strip_zeros(magnitude);
    let mut content = Vec::with_capacity(m.len() + 1);
    if m.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0x00);
    }
    content.extend_from_slice(m);
    der_tlv(TAG_INTEGER, &content)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or_default()
}

// --- protobuf wire format ---

const WIRE_VARINT: u64 = 0;
const WIRE_I64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_I32: u64 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn get_len_delimited<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(get_varint(rest)?).ok()?;
    if len > rest.len() {
        return None;
    }
    let (value, tail) = rest.split_at(len);
    *rest = tail;
    Some(value)
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
    use crate::b64;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
    fn b32(s: &str) -> [u8; 32] {
        b64::decode(s).unwrap().try_into().unwrap()
    }

    // RFC 7515 A.3 key and signature.
    const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const A3_SIG: &str =
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

    #[test]
    fn spki_ec_rfc7515_a3() {
        // Expected bytes produced with python `cryptography` 50.0.2 (/tmp/probe-venv):
        //   ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        //     .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo).hex()
        let want = hex(
            "3059301306072a8648ce3d020106082a8648ce3d030107034200047fcdce2770f6c45d4183cbee6fdb4b7b\
             580733357be9ef13bacf6e3c7bd15445c7f144cd1bbd9b7e872cdfedb9eeb9f4b3695d6ea90b24ad8a4623\
             288588e5ad",
        );
        let key = PublicKey::EcP256 {
            x: b32(A3_X),
            y: b32(A3_Y),
        };
        assert_eq!(spki_der(&key), want);
    }

    #[test]
    fn spki_rsa_rfc7515_a2() {
        // Produced with python `cryptography`: rsa.RSAPublicNumbers(e, n).public_key()
        //   .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo).hex()
        let n = b64::decode("ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ").unwrap();
        let key = PublicKey::Rsa {
            n,
            e: vec![1, 0, 1],
        };
        assert_eq!(spki_der(&key), hex(RSA_A2_SPKI_HEX));
    }

    #[test]
    fn spki_ed25519_rfc8037() {
        // Produced with python `cryptography`: Ed25519PublicKey.from_public_bytes(x)
        //   .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo).hex()
        let key = PublicKey::Ed25519 {
            x: b32("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
        };
        assert_eq!(
            spki_der(&key),
            hex("302a300506032b6570032100d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
    }

    #[test]
    fn es256_der_cases() {
        let sig = b64::decode(A3_SIG).unwrap();
        // Produced with python `cryptography`:
        //   utils.encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:])).hex()
        assert_eq!(es256_sig_to_der(&sig).unwrap(), hex(A3_SIG_DER_HEX));

        let mut high = [0u8; 64];
        high[0] = 0x80; // r needs a 0x00 pad
        high[63] = 0x01; // s = 1 (leading zeros stripped)
        assert_eq!(
            es256_sig_to_der(&high).unwrap(),
            [
                &[0x30, 0x26, 0x02, 0x21, 0x00, 0x80][..],
                &[0u8; 31][..],
                &[0x02, 0x01, 0x01][..]
            ]
            .concat()
        );
        let zero = [0u8; 64];
        assert_eq!(
            es256_sig_to_der(&zero).unwrap(),
            vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]
        );
        assert!(es256_sig_to_der(&[0u8; 63]).is_none());
        assert!(es256_sig_to_der(&[0u8; 65]).is_none());
    }

    #[test]
    fn der_long_lengths() {
        assert_eq!(der_tlv(0x04, &[0; 0x7f])[..2], [0x04, 0x7f]);
        assert_eq!(der_tlv(0x04, &[0; 0x80])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(der_tlv(0x04, &[0; 0x100])[..4], [0x04, 0x82, 0x01, 0x00]);
    }

    #[test]
    fn args_encoding() {
        // Protobuf wire format by hand: key = field << 3 | 2, varint length, bytes.
        let got = encode_verify_signature_args("sha256", &[0xaa; 3], &[0xbb; 200], b"t");
        let mut want = vec![0x0a, 6];
        want.extend_from_slice(b"sha256");
        want.extend_from_slice(&[0x12, 3, 0xaa, 0xaa, 0xaa]);
        want.extend_from_slice(&[0x1a, 0xc8, 0x01]);
        want.extend_from_slice(&[0xbb; 200]);
        want.extend_from_slice(&[0x22, 1, b't']);
        assert_eq!(got, want);
    }

    #[test]
    fn host_args_per_alg() {
        let ec = PublicKey::EcP256 {
            x: b32(A3_X),
            y: b32(A3_Y),
        };
        let sig = b64::decode(A3_SIG).unwrap();
        let args = host_verify_args(Alg::ES256, &ec, b"in", &sig)
            .unwrap()
            .unwrap();
        let want =
            encode_verify_signature_args("sha256", &spki_der(&ec), &hex(A3_SIG_DER_HEX), b"in");
        assert_eq!(args, want);
        // Wrong length ES256 signature (e.g. DER already) is refused before the host.
        let der = hex(A3_SIG_DER_HEX);
        assert_eq!(
            host_verify_args(Alg::ES256, &ec, b"in", &der),
            Err(VerifyError::BadSignature)
        );
        // Algorithm confusion is refused before the host.
        assert_eq!(
            host_verify_args(Alg::RS256, &ec, b"in", &sig),
            Err(VerifyError::KeyMismatch)
        );
        let ed = PublicKey::Ed25519 { x: [1; 32] };
        assert_eq!(host_verify_args(Alg::EdDSA, &ed, b"in", &sig), Ok(None));
        let mut n = vec![0xff; 256];
        n[0] = 0xc0;
        let rsa = PublicKey::Rsa {
            n,
            e: vec![1, 0, 1],
        };
        assert_eq!(
            host_verify_args(Alg::PS256, &rsa, b"in", &[0; 256]),
            Ok(None)
        );
        assert!(host_verify_args(Alg::RS256, &rsa, b"in", &[0; 256])
            .unwrap()
            .is_some());
        assert_eq!(
            host_verify_args(Alg::RS256, &rsa, b"in", &[0; 255]),
            Err(VerifyError::BadSignature)
        );
        let small = PublicKey::Rsa {
            n: vec![0xc1; 128],
            e: vec![3],
        };
        assert_eq!(
            host_verify_args(Alg::RS256, &small, b"in", &[0; 128]),
            Err(VerifyError::KeyMismatch)
        );
    }

    #[test]
    fn result_decoding() {
        let ok = |result: bool, error: &str| {
            Some(VerifySignatureResult {
                result,
                error: error.to_owned(),
            })
        };
        let mut with_error = vec![0x12, 30];
        with_error.extend_from_slice(b"Failed to verify digest. Err 0");
        let cases: Vec<(&str, Vec<u8>, Option<VerifySignatureResult>)> = vec![
            ("true", vec![0x08, 0x01], ok(true, "")),
            ("empty = default false", vec![], ok(false, "")),
            ("explicit false", vec![0x08, 0x00], ok(false, "")),
            (
                "false + error",
                with_error,
                ok(false, "Failed to verify digest. Err 0"),
            ),
            (
                "error then true",
                vec![0x12, 0x01, b'x', 0x08, 0x01],
                ok(true, "x"),
            ),
            (
                "unknown varint field skipped",
                vec![0x18, 0x05, 0x08, 0x01],
                ok(true, ""),
            ),
            (
                "unknown len field skipped",
                vec![0x22, 0x02, 1, 2, 0x08, 0x01],
                ok(true, ""),
            ),
            (
                "unknown i32 skipped",
                vec![0x2d, 1, 2, 3, 4, 0x08, 0x01],
                ok(true, ""),
            ),
            (
                "unknown i64 skipped",
                vec![0x31, 1, 2, 3, 4, 5, 6, 7, 8, 0x08, 0x01],
                ok(true, ""),
            ),
            (
                "multi-byte varint true",
                vec![0x08, 0x81, 0x00],
                ok(true, ""),
            ),
            ("truncated varint", vec![0x08], None),
            ("truncated string", vec![0x12, 0x05, b'a'], None),
            ("result as len", vec![0x0a, 0x01, 0x01], None),
            ("field 0", vec![0x00, 0x01], None),
            ("group wire type", vec![0x0b], None),
            ("i64 truncated", vec![0x31, 1, 2], None),
            (
                "overlong varint",
                vec![
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                None,
            ),
            ("error not utf8", vec![0x12, 0x01, 0xff], None),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(decode_verify_signature_result(&bytes), want, "case {name}");
        }
    }

    /// DER of the RFC 7515 A.3 signature (python `cryptography` 50.0.2, `encode_dss_signature`).
    const A3_SIG_DER_HEX: &str =
        "304502200ed1215379636c483c2f7f155807d402a3b228033af97c7e17819ac3169ea66502\
         2100c50a07d38c3c70e5d8f12daf084a5480a66590c5f293509a8f3f7f8a83a354d5";
    /// SPKI of the RFC 7515 A.2 RSA key (python `cryptography` 50.0.2, see `spki_rsa_rfc7515_a2`).
    const RSA_A2_SPKI_HEX: &str =
        "30820122300d06092a864886f70d01010105000382010f003082010a0282010100a1f8160ae2e3c9b465ce8d\
         2d656263362b927dbe29e1f02477fc1625cc90a136e38bd93497c5b6ea63dd7711e67c7429f956b0fb8a8f08\
         9adc4b69893cc1333f53edd019b87784252fec914fe4857769594bea4280d32c0f55bf62944f130396bc6e9b\
         df6ebdd2bda3678eeca0c668f701b38dbffb38c8342ce2fe6d27fade4a5a4874979dd4b9cf9adec4c75b0585\
         2c2c0f5ef8a5c1750392f944e8ed64c110c6b647609aa4783aeb9c6c9ad755313050638b83665c6f6f7a82a3\
         96702a1f641b82d3ebf2392219491fb686872c5716f50af8358d9a8b9d17c340728f7f87d89a18d8fcab67ad\
         84590c2ecf759339363c07034d6f606f9e21e05456cae5e9a10203010001";
}
