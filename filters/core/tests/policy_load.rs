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

/// The committed policies: `policies/*.json` and `kind-cluster/policies/*.json`.
fn committed_policies() -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let kind = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kind-cluster/policies");
    let mut out = Vec::new();
    for dir in [policies_dir(), kind] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("json") {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out
}

#[test]
fn committed_policies_load() {
    let policies = committed_policies();
    for (path, bytes) in &policies {
        if let Err(e) = Policy::from_json(bytes) {
            panic!("{}: {e}", path.display());
        }
    }
    assert!(
        policies.len() >= 4,
        "expected the example policies, found {}",
        policies.len()
    );
}

/// A policy object written as a JSON array is refused at load, naming the field (serde's
/// derived struct parsing would read the array's items as the fields in declaration order:
/// `["a", "aud"]` as `{"name": "a", "audience": "aud"}`).
#[test]
fn objects_written_as_arrays_are_refused() {
    let table: Vec<(&str, Value, &str)> = vec![
        ("top level", json!(["a", []]), ""),
        ("api", json!({"api": ["a", "aud"]}), "api"),
        ("empty api", json!({"api": []}), "api"),
        ("token", json!({"token": [["DPoP"]]}), "token"),
        (
            "issuer entry",
            json!({"issuers": [["https://i"]]}),
            "issuers[0]",
        ),
        (
            "second issuer entry",
            json!({"issuers": [{"issuer": "https://i"}, ["https://j"]]}),
            "issuers[1]",
        ),
        ("route rule", json!({"routes": [["/x"]]}), "routes[0]"),
        (
            "authz",
            json!({"routes": [{"authz": [null]}]}),
            "routes[0].authz",
        ),
        (
            "authz scopes",
            json!({"routes": [{"authz": {"scopes": [["s"]]}}]}),
            "routes[0].authz.scopes",
        ),
        (
            "claim condition",
            json!({"routes": [{"authz": {"claims": [["sub"]]}}]}),
            "routes[0].authz.claims[0]",
        ),
        (
            "authorization_details condition",
            json!({"routes": [{"authz": {"authorization_details": [["t"]]}}]}),
            "routes[0].authz.authorization_details[0]",
        ),
        (
            "authorization_details field condition",
            json!({"routes": [{"authz": {"authorization_details": [{"fields": [[]]}]}}]}),
            "routes[0].authz.authorization_details[0].fields[0]",
        ),
        (
            "binding",
            json!({"routes": [{"authz": {"bind": [["id"]]}}]}),
            "routes[0].authz.bind[0]",
        ),
        (
            "binding's authorization_details",
            json!({"routes": [{"authz": {"bind": [{"authorization_details": ["t", "f"]}]}}]}),
            "routes[0].authz.bind[0].authorization_details",
        ),
        ("dpop", json!({"dpop": [true]}), "dpop"),
        (
            "dpop nonce",
            json!({"dpop": {"nonce": [true, "s"]}}),
            "dpop.nonce",
        ),
        (
            "dpop replay_cache",
            json!({"dpop": {"replay_cache": [1]}}),
            "dpop.replay_cache",
        ),
        (
            "dpop mtls",
            json!({"dpop": {"mtls": ["xfcc"]}}),
            "dpop.mtls",
        ),
        ("fhir", json!({"fhir": ["hapi"]}), "fhir"),
        (
            "fhir operation",
            json!({"fhir": {"operations": [["$everything"]]}}),
            "fhir.operations[0]",
        ),
        (
            "fhir compartment",
            json!({"fhir": {"compartment": ["patient"]}}),
            "fhir.compartment",
        ),
        (
            "fhir response_check",
            json!({"fhir": {"response_check": [1024]}}),
            "fhir.response_check",
        ),
        ("cors", json!({"cors": [["https://app.example"]]}), "cors"),
    ];
    for (name, doc, field) in table {
        let mut p = base();
        match doc {
            Value::Object(section) => p.as_object_mut().unwrap().extend(section),
            other => p = other,
        }
        match Policy::from_json(p.to_string().as_bytes()) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => {
                assert_eq!(e.field, field, "{name}: {e}");
                assert!(e.message.contains("must be an object"), "{name}: {e}");
            }
        }
    }
}

/// Free JSON checked by its own code (not a struct): replaced, not looked into.
const CHECKED_AS_JSON: [&str; 3] = ["jwks", "cors", "params"];
/// Values that may be any JSON, an array too (`authz` claim conditions).
const ANY_JSON: [&str; 3] = ["equals", "contains", "one_of"];

/// Every object in `v` (at `path`) that the policy reads as a struct or checks as an object.
fn object_paths(v: &Value, path: &str, out: &mut Vec<String>) {
    let key = path.rsplit(['.', ']']).next().unwrap_or_default();
    match v {
        Value::Object(o) if !ANY_JSON.contains(&key) => {
            out.push(path.to_string());
            if CHECKED_AS_JSON.contains(&key) {
                return;
            }
            for (k, x) in o {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                object_paths(x, &sub, out);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                object_paths(x, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The node at `path` (as `object_paths` writes it).
fn node_at<'a>(v: &'a mut Value, path: &str) -> &'a mut Value {
    let mut node = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        let k = pieces.next().unwrap();
        if !k.is_empty() {
            node = &mut node[k];
        }
        for index in pieces {
            node = &mut node[index.trim_end_matches(']').parse::<usize>().unwrap()];
        }
    }
    node
}

/// Each object of every committed policy, written as the array of its values, is refused
/// and named.
#[test]
fn committed_policies_refuse_each_object_as_an_array() {
    let mut checked = 0;
    for (file, bytes) in committed_policies() {
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        let mut paths = Vec::new();
        object_paths(&doc, "", &mut paths);
        for path in paths {
            let mut p = doc.clone();
            let node = node_at(&mut p, &path);
            let values: Vec<Value> = node.as_object().unwrap().values().cloned().collect();
            *node = Value::Array(values);
            match Policy::from_json(p.to_string().as_bytes()) {
                Ok(_) => panic!("{}: `{path}` as an array accepted", file.display()),
                Err(e) => assert_eq!(e.field, path, "{}: {e}", file.display()),
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 30,
        "only {checked} objects in the committed policies"
    );
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
        (
            "replay_scope api without a store",
            Box::new(|p| p["dpop"] = json!({"replay_scope": "api"})),
            "dpop.replay_store",
        ),
        (
            "replay_store without replay_scope api",
            Box::new(|p| p["dpop"] = json!({"replay_store": {"cluster": "etcd", "kind": "etcd"}})),
            "dpop.replay_store",
        ),
        (
            "replay_store with replay_scope partitioned",
            Box::new(|p| {
                p["dpop"] = json!({"replay_scope": "partitioned",
                    "replay_store": {"cluster": "etcd", "kind": "etcd"}})
            }),
            "dpop.replay_store",
        ),
        (
            "replay_scope unknown",
            Box::new(|p| p["dpop"] = json!({"replay_scope": "cluster"})),
            "dpop.replay_scope",
        ),
        (
            "replay_store zero timeout",
            Box::new(|p| {
                p["dpop"] = json!({"replay_scope": "api",
                    "replay_store": {"cluster": "etcd", "kind": "etcd", "timeout_ms": 0}})
            }),
            "dpop.replay_store.timeout_ms",
        ),
        (
            "replay_store cluster with a space",
            Box::new(|p| {
                p["dpop"] = json!({"replay_scope": "api",
                    "replay_store": {"cluster": "my etcd", "kind": "etcd"}})
            }),
            "dpop.replay_store.cluster",
        ),
        (
            "replay_store kind redis",
            Box::new(|p| {
                p["dpop"] = json!({"replay_scope": "api",
                    "replay_store": {"cluster": "etcd", "kind": "redis"}})
            }),
            "dpop.replay_store.kind",
        ),
        (
            "replay_store unknown field",
            Box::new(|p| {
                p["dpop"] = json!({"replay_scope": "api",
                    "replay_store": {"cluster": "etcd", "kind": "etcd", "ttl": 5}})
            }),
            "dpop.replay_store.ttl",
        ),
    ];
    let mut ok = base();
    ok["dpop"] = json!({"replay_scope": "api",
        "replay_store": {"cluster": "etcd", "kind": "etcd"}});
    assert!(Policy::from_json(ok.to_string().as_bytes()).is_ok());
    let mut partitioned = base();
    partitioned["dpop"] = json!({"replay_scope": "partitioned"});
    let loaded = Policy::from_json(partitioned.to_string().as_bytes()).unwrap();
    assert!(loaded.dpop.unwrap().replay_store.is_none());
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
