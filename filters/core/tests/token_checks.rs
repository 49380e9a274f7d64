//! docs/checks.md §1 as a table: each case mutates a known-good token (header, claims, scheme,
//! clock) and names the expected outcome. Tokens are signed here with `p256` (ES256);
//! the decoded content of the base token is in `base_claims` below.
#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

use fapi_guard_core::b64;
use fapi_guard_core::cache::{CachedToken, TokenCache};
use fapi_guard_core::denial::{Reason, Scheme};
use fapi_guard_core::jose::SoftwareVerifier;
use fapi_guard_core::jwks_store::KeyRing;
use fapi_guard_core::policy::Policy;
use fapi_guard_core::token::{self, Presented};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Map, Value};

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://issuer.test";
const AUD: &str = "api-1";

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32].into()).unwrap()
}

fn public_jwk(kid: &str) -> Value {
    let point = signing_key().verifying_key().to_sec1_point(false);
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
           "x": b64::encode(point.x().unwrap()), "y": b64::encode(point.y().unwrap())})
}

fn policy(extra: Value) -> Policy {
    let mut p = json!({
        "api": {"name": "t", "audience": AUD},
        "issuers": [{"issuer": ISS, "jwks": {"keys": [public_jwk("k1")]}}],
        "token": {"schemes": ["DPoP", "Bearer"]},
    });
    merge(&mut p, extra);
    Policy::from_json(p.to_string().as_bytes()).unwrap()
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// `{"iss": ISS, "sub": "user-1", "aud": AUD, "client_id": "c1", "iat": NOW-10, "exp": NOW+300,
///   "jti": "j1", "scope": "patient/*.rs openid"}`
fn base_claims() -> Map<String, Value> {
    json!({"iss": ISS, "sub": "user-1", "aud": AUD, "client_id": "c1", "iat": NOW - 10,
           "exp": NOW + 300, "jti": "j1", "scope": "patient/*.rs openid"})
    .as_object()
    .cloned()
    .unwrap()
}

fn sign(header: &Value, claims: &Map<String, Value>) -> String {
    let input = format!(
        "{}.{}",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(Value::Object(claims.clone()).to_string().as_bytes())
    );
    let sig: Signature = signing_key().sign(input.as_bytes());
    format!("{input}.{}", b64::encode(&sig.to_bytes()))
}

struct Case {
    name: &'static str,
    header: Value,
    claims: Value,
    remove: &'static [&'static str],
    scheme: Scheme,
    want: Result<(), Reason>,
}

fn case(name: &'static str, header: Value, claims: Value, want: Result<(), Reason>) -> Case {
    Case {
        name,
        header,
        claims,
        remove: &[],
        scheme: Scheme::Dpop,
        want,
    }
}

fn run(p: &Policy, c: &Case) -> Result<fapi_guard_core::claims::VerifiedToken, Reason> {
    let mut header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"});
    merge(&mut header, c.header.clone());
    let header = Value::Object(
        header
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    let mut claims = base_claims();
    for (k, v) in c.claims.as_object().unwrap() {
        claims.insert(k.clone(), v.clone());
    }
    for r in c.remove {
        claims.remove(*r);
    }
    let tok = sign(&header, &claims);
    let ring = KeyRing::new(p);
    token::validate(
        p,
        &ring,
        &SoftwareVerifier,
        Presented {
            scheme: c.scheme,
            token: &tok,
        },
        NOW,
    )
}

#[test]
fn token_checks_table() {
    use Reason::*;
    let p = policy(json!({}));
    let cases = vec![
        case("valid", json!({}), json!({}), Ok(())),
        case(
            "typ application/at+jwt",
            json!({"typ": "application/at+jwt"}),
            json!({}),
            Ok(()),
        ),
        case(
            "typ JWT refused by default",
            json!({"typ": "JWT"}),
            json!({}),
            Err(BadTyp),
        ),
        case("typ missing", json!({"typ": null}), json!({}), Err(BadTyp)),
        case(
            "alg PS256 with an EC key: header lies",
            json!({"alg": "PS256"}),
            json!({}),
            Err(UnknownKey),
        ),
        case(
            "alg RS256 not on the list",
            json!({"alg": "RS256"}),
            json!({}),
            Err(AlgNotAllowed),
        ),
        case(
            "alg HS256",
            json!({"alg": "HS256"}),
            json!({}),
            Err(AlgNotAllowed),
        ),
        case(
            "alg none",
            json!({"alg": "none"}),
            json!({}),
            Err(AlgNotAllowed),
        ),
        case(
            "crit unknown",
            json!({"crit": ["x"], "x": 1}),
            json!({}),
            Err(UnsupportedCrit),
        ),
        case(
            "kid unknown",
            json!({"kid": "k2"}),
            json!({}),
            Err(UnknownKey),
        ),
        case(
            "no kid, one key fits",
            json!({"kid": null}),
            json!({}),
            Ok(()),
        ),
        case(
            "jwk header ignored",
            json!({"jwk": {"kty": "EC"}, "jku": "http://evil"}),
            json!({}),
            Ok(()),
        ),
        case(
            "iss other",
            json!({}),
            json!({"iss": "https://evil"}),
            Err(UnknownIssuer),
        ),
        case(
            "aud other",
            json!({}),
            json!({"aud": "api-2"}),
            Err(WrongAudience),
        ),
        case("aud array", json!({}), json!({"aud": ["x", AUD]}), Ok(())),
        case(
            "aud array of non-strings",
            json!({}),
            json!({"aud": [1]}),
            Err(MissingClaim),
        ),
        case(
            "expired beyond skew",
            json!({}),
            json!({"exp": NOW - 11}),
            Err(Expired),
        ),
        case(
            "expired within skew",
            json!({}),
            json!({"exp": NOW - 9}),
            Ok(()),
        ),
        case(
            "exp exactly now+skew boundary",
            json!({}),
            json!({"exp": NOW - 10}),
            Err(Expired),
        ),
        case(
            "nbf future beyond skew",
            json!({}),
            json!({"nbf": NOW + 11}),
            Err(NotYetValid),
        ),
        case(
            "nbf within skew",
            json!({}),
            json!({"nbf": NOW + 10}),
            Ok(()),
        ),
        case(
            "nbf not a number",
            json!({}),
            json!({"nbf": "soon"}),
            Err(MissingClaim),
        ),
        case(
            "iat future beyond skew",
            json!({}),
            json!({"iat": NOW + 11}),
            Err(IssuedInFuture),
        ),
        case(
            "exp string",
            json!({}),
            json!({"exp": "tomorrow"}),
            Err(MissingClaim),
        ),
        case(
            "bearer with cnf.jkt",
            json!({}),
            json!({"cnf": {"jkt": "abc"}}),
            Ok(()),
        ),
    ];
    for c in &cases {
        assert_eq!(run(&p, c).map(|_| ()), c.want, "{}", c.name);
    }
    for claim in ["iss", "exp", "aud", "sub", "client_id", "iat", "jti"] {
        let c = Case {
            name: "missing",
            header: json!({}),
            claims: json!({}),
            remove: &[],
            scheme: Scheme::Dpop,
            want: Err(MissingClaim),
        };
        let c = Case {
            remove: Box::leak(Box::new([claim])),
            ..c
        };
        assert_eq!(run(&p, &c).map(|_| ()), c.want, "missing {claim}");
    }
    let downgrade = Case {
        scheme: Scheme::Bearer,
        ..case(
            "downgrade",
            json!({}),
            json!({"cnf": {"jkt": "abc"}}),
            Err(BearerDowngrade),
        )
    };
    assert_eq!(run(&p, &downgrade).map(|_| ()), downgrade.want);
}

#[test]
fn policy_options_change_outcomes() {
    use Reason::*;
    let jwt = case("typ JWT", json!({"typ": "JWT"}), json!({}), Ok(()));
    assert_eq!(
        run(&policy(json!({"token": {"allow_typ_jwt": true}})), &jwt).map(|_| ()),
        Ok(())
    );
    let extra_aud = case(
        "second aud",
        json!({}),
        json!({"aud": [AUD, "other"]}),
        Err(AudienceNotSole),
    );
    assert_eq!(
        run(&policy(json!({"api": {"sole_audience": true}})), &extra_aud).map(|_| ()),
        extra_aud.want
    );
    let late = case("exp 20 s ago", json!({}), json!({"exp": NOW - 20}), Ok(()));
    assert_eq!(
        run(&policy(json!({"token": {"clock_skew_seconds": 30}})), &late).map(|_| ()),
        Ok(())
    );
    let es = case(
        "ES256 not allowed",
        json!({}),
        json!({}),
        Err(AlgNotAllowed),
    );
    assert_eq!(
        run(&policy(json!({"token": {"allowed_algs": ["PS256"]}})), &es).map(|_| ()),
        es.want
    );
}

#[test]
fn verified_token_carries_scopes_cnf_and_digest() {
    let p = policy(json!({}));
    let c = case(
        "cnf",
        json!({}),
        json!({"cnf": {"jkt": "J", "x5t#S256": "X"}, "patient": "pat-1"}),
        Ok(()),
    );
    let v = run(&p, &c).unwrap();
    assert_eq!(v.scopes, vec!["patient/*.rs", "openid"]);
    assert_eq!(v.cnf_jkt.as_deref(), Some("J"));
    assert_eq!(v.cnf_x5t_s256.as_deref(), Some("X"));
    assert_eq!(v.claim_str("patient"), Some("pat-1"));
    assert_eq!(v.scheme, fapi_guard_core::scheme::Scheme::Dpop);
    let scp = case(
        "scp",
        json!({}),
        json!({"scope": null, "scp": ["a", "b"]}),
        Ok(()),
    );
    let mut claims_scp = run(&p, &scp).unwrap();
    assert_eq!(claims_scp.scopes, vec!["a", "b"]);
    claims_scp.claims.clear();
    assert_eq!(v.token_sha256.len(), 43);
}

#[test]
fn tampered_signature_and_payload_refused() {
    let p = policy(json!({}));
    let tok = sign(
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}),
        &base_claims(),
    );
    let ring = KeyRing::new(&p);
    let (head, rest) = tok.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let mut other = base_claims();
    other.insert("sub".into(), json!("mallory"));
    let forged = format!(
        "{head}.{}.{sig}",
        b64::encode(Value::Object(other).to_string().as_bytes())
    );
    let got = token::validate(
        &p,
        &ring,
        &SoftwareVerifier,
        Presented {
            scheme: Scheme::Dpop,
            token: &forged,
        },
        NOW,
    );
    assert_eq!(got.err(), Some(Reason::BadSignature));
}

#[test]
fn extraction_rules() {
    use Reason::*;
    let dpop_only = policy(json!({"token": {"schemes": ["DPoP"]}}));
    let table: Vec<(&str, Vec<&str>, &str, Result<Scheme, Reason>)> = vec![
        ("no header", vec![], "/x", Err(MissingToken)),
        ("dpop", vec!["DPoP a.b.c"], "/x", Ok(Scheme::Dpop)),
        (
            "scheme case-insensitive",
            vec!["dpop a.b.c"],
            "/x",
            Ok(Scheme::Dpop),
        ),
        (
            "bearer on dpop-only",
            vec!["Bearer a.b.c"],
            "/x",
            Err(SchemeNotAllowed),
        ),
        ("basic", vec!["Basic dXNlcg=="], "/x", Err(MissingToken)),
        (
            "two headers",
            vec!["DPoP a.b.c", "DPoP a.b.c"],
            "/x",
            Err(MultipleAuthorization),
        ),
        (
            "folded by proxy",
            vec!["DPoP a.b.c,DPoP a.b.c"],
            "/x",
            Err(MultipleAuthorization),
        ),
        (
            "token in query",
            vec!["DPoP a.b.c"],
            "/x?a=1&access_token=z",
            Err(TokenInQuery),
        ),
        (
            "query without token",
            vec!["DPoP a.b.c"],
            "/x?access_tokens=1",
            Ok(Scheme::Dpop),
        ),
        ("empty token", vec!["DPoP "], "/x", Err(MalformedToken)),
        (
            "junk characters",
            vec!["DPoP a.b.c;drop"],
            "/x",
            Err(MalformedToken),
        ),
    ];
    for (name, headers, path, want) in table {
        let headers: Vec<String> = headers.into_iter().map(String::from).collect();
        let got = token::extract(&dpop_only, &headers, path).map(|p| p.scheme);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn cache_respects_expiry_capacity_and_key_changes() {
    let p = policy(json!({}));
    let v = run(&p, &case("v", json!({}), json!({}), Ok(()))).unwrap();
    let mut cache = TokenCache::new(2);
    cache.insert("a".into(), CachedToken::new(v.clone()), NOW, 10);
    assert!(cache.get("a", NOW, 10).is_some());
    assert!(cache.get("a", NOW + 309, 10).is_some());
    assert!(
        cache.get("a", NOW + 310, 10).is_none(),
        "expired entries are not served"
    );
    cache.insert("b".into(), CachedToken::new(v.clone()), NOW, 10);
    cache.insert("c".into(), CachedToken::new(v.clone()), NOW, 10);
    assert_eq!(cache.len(), 2, "bounded");
    assert!(cache.get("a", NOW, 10).is_none(), "oldest evicted first");
    cache.sync_keys_generation(7);
    assert!(cache.is_empty(), "a key change drops the cache");
}
