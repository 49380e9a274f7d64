//! docs/checks.md §2.8 `htu` matching behind gateways (public origins, stripped prefix, forwarded
//! headers only when trusted) and the `dpop` policy section (defaults, errors naming fields).
#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[path = "support/dpop.rs"]
mod support;

use fapi_guard_core::dpop::htu::htu_matches;
use fapi_guard_core::dpop::policy::CertSource;
use fapi_guard_core::dpop::RequestTarget;
use fapi_guard_core::jose::Alg;
use fapi_guard_core::policy::Policy;
use serde_json::{json, Value};

/// The sidecar sees `http://api.ns.svc:8080/Patient/1?q`.
fn internal(path: &'static str) -> RequestTarget<'static> {
    RequestTarget {
        scheme: "http",
        authority: "api.ns.svc:8080",
        path,
        ..Default::default()
    }
}

#[test]
fn htu_against_the_origin_the_proxy_sees() {
    let (_, d) = support::policy(json!({}));
    let cases = [
        ("exact", "http://api.ns.svc:8080/Patient/1", true),
        (
            "query ignored",
            "http://api.ns.svc:8080/Patient/1?a=b",
            true,
        ),
        (
            "fragment ignored",
            "http://api.ns.svc:8080/Patient/1#x",
            true,
        ),
        ("host case", "http://API.ns.SVC:8080/Patient/1", true),
        (
            "percent-encoded unreserved",
            "http://api.ns.svc:8080/%50atient/%31",
            true,
        ),
        (
            "dot segments",
            "http://api.ns.svc:8080/x/../Patient/./1",
            true,
        ),
        (
            "path case differs",
            "http://api.ns.svc:8080/patient/1",
            false,
        ),
        ("port differs", "http://api.ns.svc:8081/Patient/1", false),
        (
            "port missing (80 is not 8080)",
            "http://api.ns.svc/Patient/1",
            false,
        ),
        (
            "trailing slash differs",
            "http://api.ns.svc:8080/Patient/1/",
            false,
        ),
        (
            "encoded slash is not a slash",
            "http://api.ns.svc:8080/Patient%2F1",
            false,
        ),
        ("userinfo", "http://u@api.ns.svc:8080/Patient/1", false),
        (
            "public origin not configured",
            "https://api.example.org/Patient/1",
            false,
        ),
    ];
    for (name, htu, want) in cases {
        assert_eq!(
            htu_matches(&d, &internal("/Patient/1?_format=json"), htu),
            want,
            "{name}"
        );
    }
}

#[test]
fn htu_with_gateway_public_origins_and_stripped_prefix() {
    let (_, d) = support::policy(json!({
        "public_origins": ["https://api.example.org", "https://API.example.net:443/"],
        "stripped_path_prefix": "/fhir/"
    }));
    let cases = [
        (
            "public origin + prefix",
            "https://api.example.org/fhir/Patient/1",
            true,
        ),
        (
            "second public origin (normalised)",
            "https://api.example.net/fhir/Patient/1",
            true,
        ),
        ("prefix missing", "https://api.example.org/Patient/1", false),
        (
            "other prefix",
            "https://api.example.org/r4/Patient/1",
            false,
        ),
        (
            "internal origin no longer accepted",
            "http://api.ns.svc:8080/fhir/Patient/1",
            false,
        ),
        (
            "unlisted origin",
            "https://evil.example.org/fhir/Patient/1",
            false,
        ),
        (
            "http for a https origin",
            "http://api.example.org/fhir/Patient/1",
            false,
        ),
    ];
    for (name, htu, want) in cases {
        assert_eq!(
            htu_matches(&d, &internal("/Patient/1"), htu),
            want,
            "{name}"
        );
    }
    // `/fhir` stripped to `/`: both `/fhir` and `/fhir/` name it.
    assert!(htu_matches(
        &d,
        &internal("/"),
        "https://api.example.org/fhir"
    ));
    assert!(htu_matches(
        &d,
        &internal("/"),
        "https://api.example.org/fhir/"
    ));
}

#[test]
fn forwarded_headers_only_when_trusted() {
    let fwd = |path: &'static str| RequestTarget {
        scheme: "http",
        authority: "api.ns.svc:8080",
        path,
        forwarded_proto: Some("https"),
        forwarded_host: Some("public.example.org, inner.proxy"),
        forwarded_prefix: Some("/api"),
    };
    let public_htu = "https://public.example.org/api/Patient/1";
    // Not trusted: headers ignored, only the internal origin works.
    let (_, untrusted) = support::policy(json!({}));
    assert!(!htu_matches(&untrusted, &fwd("/Patient/1"), public_htu));
    assert!(htu_matches(
        &untrusted,
        &fwd("/Patient/1"),
        "http://api.ns.svc:8080/Patient/1"
    ));
    // Trusted: the forwarded origin and prefix are the public URI.
    let (_, trusted) = support::policy(json!({"trust_forwarded_headers": true}));
    assert!(htu_matches(&trusted, &fwd("/Patient/1"), public_htu));
    assert!(!htu_matches(
        &trusted,
        &fwd("/Patient/1"),
        "http://api.ns.svc:8080/Patient/1"
    ));
    // Trusted + allow-list: the forwarded origin must also be listed.
    let (_, listed) = support::policy(
        json!({"trust_forwarded_headers": true, "public_origins": ["https://other.example.org"]}),
    );
    assert!(!htu_matches(&listed, &fwd("/Patient/1"), public_htu));
    assert!(!htu_matches(
        &listed,
        &fwd("/Patient/1"),
        "https://other.example.org/api/Patient/1"
    ));
    let (_, listed_ok) = support::policy(
        json!({"trust_forwarded_headers": true, "public_origins": ["https://public.example.org"]}),
    );
    assert!(htu_matches(&listed_ok, &fwd("/Patient/1"), public_htu));
    // Trusted but absent: falls back to what the proxy sees.
    let plain = internal("/Patient/1");
    assert!(htu_matches(
        &trusted,
        &plain,
        "http://api.ns.svc:8080/Patient/1"
    ));
}

fn compile_err(dpop: Value) -> (String, String) {
    let doc = support::policy_json(dpop, None);
    let e = Policy::from_json(doc.to_string().as_bytes()).expect_err("must be refused");
    (e.field, e.message)
}

#[test]
fn policy_defaults() {
    let (_, d) = support::policy(json!({}));
    assert!(d.required);
    assert_eq!(d.algs, vec![Alg::PS256, Alg::ES256, Alg::EdDSA]);
    assert_eq!((d.iat_past, d.iat_future), (60, 10));
    assert!(
        d.public_origins.is_empty()
            && d.stripped_path_prefix.is_empty()
            && !d.trust_forwarded_headers
    );
    assert_eq!(d.nonce, None);
    // Sized for 40,000 proofs/s over the 70 s window: 8 buckets of 10 s x 7,813 slots x 64.
    assert_eq!(
        (d.replay.bucket_seconds, d.replay.buckets, d.replay.slots),
        (10, 8, 7_813)
    );
    assert_eq!(d.replay.capacity(), 4_000_256);
    assert_eq!(d.cert_source, CertSource::Connection);
    // `Ed25519` is a spelling of EdDSA and is deduplicated.
    let (_, d) = support::policy(json!({"allowed_algs": ["Ed25519", "EdDSA", "ES256"]}));
    assert_eq!(d.algs, vec![Alg::EdDSA, Alg::ES256]);
}

#[test]
fn policy_errors_name_the_field() {
    let secret = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";
    let cases = [
        (
            json!({"allowed_algs": ["ES256", "HS256"]}),
            "dpop.allowed_algs[1]",
        ),
        (json!({"allowed_algs": ["none"]}), "dpop.allowed_algs[0]"),
        (json!({"allowed_algs": []}), "dpop.allowed_algs"),
        (
            json!({"iat_window_past_seconds": 0}),
            "dpop.iat_window_past_seconds",
        ),
        (
            json!({"iat_window_future_seconds": 301}),
            "dpop.iat_window_future_seconds",
        ),
        (
            json!({"public_origins": ["https://ok.example", "ftp://x"]}),
            "dpop.public_origins[1]",
        ),
        (
            json!({"public_origins": ["https://x.example/path"]}),
            "dpop.public_origins[0]",
        ),
        (
            json!({"stripped_path_prefix": "fhir"}),
            "dpop.stripped_path_prefix",
        ),
        (json!({"nonce": {"secret": "c2hvcnQ"}}), "dpop.nonce.secret"),
        (
            json!({"nonce": {"secret": "not base64 !"}}),
            "dpop.nonce.secret",
        ),
        (
            json!({"nonce": {"secret": secret, "window_seconds": 1}}),
            "dpop.nonce.window_seconds",
        ),
        // A missing field is named with its object (`dpop.nonce` before it was named itself).
        (json!({"nonce": {"enabled": true}}), "dpop.nonce.secret"),
        (
            json!({"replay_cache": {"peak_proofs_per_second": 0}}),
            "dpop.replay_cache.peak_proofs_per_second",
        ),
        (
            json!({"replay_cache": {"peak_proofs_per_second": 1_000_001}}),
            "dpop.replay_cache.peak_proofs_per_second",
        ),
        (
            json!({"replay_cache": {"max_live_proofs": 10}}),
            "dpop.replay_cache.max_live_proofs",
        ),
        (
            json!({"replay_cache": {"max_live_proofs_per_key": 0}}),
            "dpop.replay_cache.max_live_proofs_per_key",
        ),
        (
            json!({"replay_cache": {"max_live_proofs": 1000, "max_live_proofs_per_key": 1001}}),
            "dpop.replay_cache.max_live_proofs_per_key",
        ),
        // The budget must hold the cache the peak needs: 100,000/s needs ~10 M live proofs.
        (
            json!({"replay_cache": {"peak_proofs_per_second": 100_000}}),
            "dpop.replay_cache.max_live_proofs",
        ),
        // So must a longer window at the default peak.
        (
            json!({"iat_window_past_seconds": 300}),
            "dpop.replay_cache.max_live_proofs",
        ),
        (
            json!({"replay_cache": {"slots": 4096}}),
            "dpop.replay_cache.slots",
        ),
        (
            json!({"mtls": {"client_cert_source": "header"}}),
            "dpop.mtls.client_cert_source",
        ),
        (json!({"unknown_field": 1}), "dpop.unknown_field"),
        (
            json!({"nonce": {"secret": secret, "extra": 1}}),
            "dpop.nonce.extra",
        ),
    ];
    for (doc, want) in cases {
        let (field, msg) = compile_err(doc.clone());
        assert_eq!(field, want, "{doc} -> {msg}");
    }
}
