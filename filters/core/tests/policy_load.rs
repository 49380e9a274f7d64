//! Every committed policy loads; broken ones are refused with the field named.
#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

use fapi_guard_core::policy::Policy;
use serde_json::{json, Value};

fn policies_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

#[test]
fn committed_policies_load() {
    let mut n = 0;
    for entry in std::fs::read_dir(policies_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            let bytes = std::fs::read(&path).unwrap();
            if let Err(e) = Policy::from_json(&bytes) {
                panic!("{}: {e}", path.display());
            }
            n += 1;
        }
    }
    assert!(n >= 3, "expected the example policies, found {n}");
}

fn base() -> Value {
    json!({
        "api": {"name": "a", "audience": "aud"},
        "issuers": [{"issuer": "https://i", "jwks_uri": "https://i/jwks", "jwks_cluster": "c"}],
    })
}

#[test]
fn bad_policies_name_the_field() {
    let table: Vec<(&str, Box<dyn Fn(&mut Value)>, &str)> = vec![
        (
            "unknown top-level",
            Box::new(|p| p["extra"] = json!(1)),
            "extra",
        ),
        (
            "unknown api field",
            Box::new(|p| p["api"]["audiences"] = json!([])),
            "api.audiences",
        ),
        (
            "empty audience",
            Box::new(|p| p["api"]["audience"] = json!("")),
            "api.audience",
        ),
        (
            "no issuers",
            Box::new(|p| p["issuers"] = json!([])),
            "issuers",
        ),
        (
            "jwks and jwks_uri",
            Box::new(|p| p["issuers"][0]["jwks"] = json!({"keys": []})),
            "issuers[0].jwks",
        ),
        (
            "jwks_uri without cluster",
            Box::new(|p| {
                p["issuers"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("jwks_cluster");
            }),
            "issuers[0].jwks_cluster",
        ),
        (
            "jwks_uri not http",
            Box::new(|p| p["issuers"][0]["jwks_uri"] = json!("file:///x")),
            "issuers[0].jwks_uri",
        ),
        (
            "refresh zero",
            Box::new(|p| p["issuers"][0]["jwks_refresh_seconds"] = json!(0)),
            "issuers[0].jwks_refresh_seconds",
        ),
        (
            "refresh negative",
            Box::new(|p| p["issuers"][0]["jwks_refresh_seconds"] = json!(-1)),
            "issuers[0].jwks_refresh_seconds",
        ),
        (
            "duplicate issuer",
            Box::new(|p| {
                let i = p["issuers"][0].clone();
                p["issuers"].as_array_mut().unwrap().push(i);
            }),
            "issuers[1].issuer",
        ),
        (
            "HS256 allowed",
            Box::new(|p| p["token"] = json!({"allowed_algs": ["ES256", "HS256"]})),
            "token.allowed_algs[1]",
        ),
        (
            "none allowed",
            Box::new(|p| p["token"] = json!({"allowed_algs": ["none"]})),
            "token.allowed_algs[0]",
        ),
        (
            "no schemes",
            Box::new(|p| p["token"] = json!({"schemes": []})),
            "token.schemes",
        ),
        (
            "scheme typo",
            Box::new(|p| p["token"] = json!({"schemes": ["Dpop"]})),
            "token.schemes[0]",
        ),
        (
            "huge skew",
            Box::new(|p| p["token"] = json!({"clock_skew_seconds": 3600})),
            "token.clock_skew_seconds",
        ),
        (
            "jwks_refresh_seconds that would wrap negative (2^63)",
            Box::new(|p| {
                p["issuers"] = json!([{"issuer": "i", "jwks_uri": "https://i/jwks",
                    "jwks_cluster": "c", "jwks_refresh_seconds": 9_223_372_036_854_775_808u64}])
            }),
            "issuers[0].jwks_refresh_seconds",
        ),
        (
            "jwks_refresh_seconds over a week",
            Box::new(|p| {
                p["issuers"] = json!([{"issuer": "i", "jwks_uri": "https://i/jwks",
                    "jwks_cluster": "c", "jwks_refresh_seconds": 604_801}])
            }),
            "issuers[0].jwks_refresh_seconds",
        ),
        (
            "jwks_min_refetch_seconds unbounded",
            Box::new(|p| {
                p["issuers"] = json!([{"issuer": "i", "jwks_uri": "https://i/jwks",
                    "jwks_cluster": "c", "jwks_min_refetch_seconds": u64::MAX}])
            }),
            "issuers[0].jwks_min_refetch_seconds",
        ),
        (
            "jwks_fetch_timeout_ms unbounded",
            Box::new(|p| {
                p["issuers"] = json!([{"issuer": "i", "jwks_uri": "https://i/jwks",
                    "jwks_cluster": "c", "jwks_fetch_timeout_ms": 60_001}])
            }),
            "issuers[0].jwks_fetch_timeout_ms",
        ),
        (
            "jwks_max_bytes 1048577",
            Box::new(|p| {
                p["issuers"] = json!([{"issuer": "i", "jwks_uri": "https://i/jwks",
                    "jwks_cluster": "c", "jwks_max_bytes": 1048577}])
            }),
            "issuers[0].jwks_max_bytes",
        ),
        (
            "jwks_max_bytes 1023",
            Box::new(|p| {
                p["issuers"] = json!([{"issuer": "i", "jwks_uri": "https://i/jwks",
                    "jwks_cluster": "c", "jwks_max_bytes": 1023}])
            }),
            "issuers[0].jwks_max_bytes",
        ),
        (
            "jwks_max_keys 1001",
            Box::new(|p| {
                p["issuers"] = json!([{"issuer": "i", "jwks_uri": "https://i/jwks",
                    "jwks_cluster": "c", "jwks_max_keys": 1001}])
            }),
            "issuers[0].jwks_max_keys",
        ),
        (
            "jwks_max_keys 0",
            Box::new(|p| {
                p["issuers"] = json!([{"issuer": "i", "jwks_uri": "https://i/jwks",
                    "jwks_cluster": "c", "jwks_max_keys": 0}])
            }),
            "issuers[0].jwks_max_keys",
        ),
        (
            "route without slash",
            Box::new(|p| p["routes"] = json!([{"path_prefix": "x", "require": "none"}])),
            "routes[0].path_prefix",
        ),
        (
            "route require typo",
            Box::new(|p| p["routes"] = json!([{"path_prefix": "/x", "require": "public"}])),
            "routes[0].require",
        ),
        (
            "inline jwks not a jwks",
            Box::new(|p| p["issuers"] = json!([{"issuer": "i", "jwks": {"keys": "no"}}])),
            "issuers[0].jwks",
        ),
        (
            "inline jwks with only a private HMAC key",
            Box::new(|p| {
                p["issuers"] =
                    json!([{"issuer": "i", "jwks": {"keys": [{"kty": "oct", "k": "AAAA"}]}}])
            }),
            "issuers[0].jwks",
        ),
    ];
    for (name, mutate, field) in table {
        let mut p = base();
        mutate(&mut p);
        match Policy::from_json(p.to_string().as_bytes()) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => assert_eq!(e.field, field, "{name}: {e}"),
        }
    }
    assert!(Policy::from_json(b"not json").is_err());
    assert!(Policy::from_json(base().to_string().as_bytes()).is_ok());
}

/// Shared-data keys are namespaced per API (Istio: one shared-data namespace per proxy), so a
/// remote key source carries the API name (docs/platform-guide.md, "Memory and shared data").
#[test]
fn remote_jwks_carries_the_api_name_for_shared_data_keys() {
    let doc = r#"{"api":{"name":"api-one","audience":"a"},
        "issuers":[{"issuer":"https://i.test","jwks_uri":"https://i.test/jwks","jwks_cluster":"c"}]}"#;
    let policy = Policy::from_json(doc.as_bytes()).unwrap();
    match &policy.issuers[0].keys {
        fapi_guard_core::policy::KeySource::Remote(r) => assert_eq!(r.api, "api-one"),
        other => panic!("remote keys expected: {other:?}"),
    }
}

/// `unmatched` (docs/checks.md §4): `token_only` by default, `deny` marks unlisted requests;
/// any other value is refused naming the field.
#[test]
fn unmatched_routes_option() {
    let mut p = base();
    p["routes"] = json!([{"path_prefix": "/open", "require": "none"},
                         {"path_prefix": "/api", "methods": ["GET"], "require": "token"}]);
    let load = |p: &Value| Policy::from_json(p.to_string().as_bytes());
    let default = load(&p).unwrap();
    assert!(!default.route("GET", "/other", &|_| false).unwrap().unlisted);
    p["unmatched"] = json!("deny");
    let deny = load(&p).unwrap();
    for (m, path, unlisted) in [
        ("GET", "/other", true),
        ("POST", "/api/x", true),
        ("GET", "/api/x", false),
        ("GET", "/open", false),
        ("POST", "/open/x", false),
    ] {
        assert_eq!(
            deny.route(m, path, &|_| false).unwrap().unlisted,
            unlisted,
            "{m} {path}"
        );
    }
    p["unmatched"] = json!("allow");
    assert_eq!(
        load(&p).err().map(|e| e.field).as_deref(),
        Some("unmatched")
    );
}
