//! A policy in words, and lints for where it is deployed (`fapi-guard check`, the web page).
//! Works on a policy that already loaded with [`Policy::from_json`] (the filters' loader).

use serde::Serialize;

use crate::authz::{AuthzDoc, BindDoc, BindMatch, CondDoc, Mode};
use crate::policy::{KeySource, Policy, PolicyDoc};
use crate::routes::{Requirement, RouteDoc, Unmatched};

/// Where the filters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Envoy with a config from `envoy/render.py` (clusters `api` and each `jwks_cluster`).
    Envoy,
    /// An Istio sidecar with `WasmPlugin`s (`tools/gen_wasmplugins.py`).
    Istio,
}

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "envoy" => Some(Target::Envoy),
            "istio" => Some(Target::Istio),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Lint {
    /// `error`: will not work there; `warning`: works, but probably not as meant.
    pub level: &'static str,
    pub field: String,
    pub message: String,
}

/// Istio names outbound clusters `outbound|<port>|<subset>|<host>` (pilot `BuildSubsetKey`).
pub fn is_istio_outbound(cluster: &str) -> bool {
    let parts: Vec<&str> = cluster.split('|').collect();
    matches!(parts.as_slice(), ["outbound", port, _, host]
        if !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
            && !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'))
}

fn is_istio_inbound(cluster: &str) -> bool {
    let parts: Vec<&str> = cluster.split('|').collect();
    matches!(parts.as_slice(), ["inbound", port, _, _] if port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty())
}

/// Host and port of a `jwks_uri` (default port by scheme).
fn host_port(uri: &str, authority: &str) -> (String, u16) {
    let default = if uri.starts_with("http://") { 80 } else { 443 };
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => {
            (h.to_ascii_lowercase(), p.parse().unwrap_or(default))
        }
        _ => (authority.to_ascii_lowercase(), default),
    }
}

fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The one Istio cluster through which a sidecar's filter reaches `jwks_uri`, or why there is
/// none. The rule tools/gen_wasmplugins.py (`jwks_egress`) generates the mesh resources for
/// (tests/mesh/test_jwks_cluster_rule.py holds the two to the same answers):
/// - a Service in the cluster (`<svc>.<ns>.svc[.cluster.local]`): Istio's outbound cluster of
///   that port, `outbound|<port>||<host>`;
/// - an external host: https only; the generated ServiceEntry + DestinationRule give the
///   sidecar `outbound|80||<host>`, plain HTTP from the filter, TLS to the issuer.
pub fn istio_jwks_cluster(uri: &str, authority: &str) -> Result<String, String> {
    let (host, port) = host_port(uri, authority);
    if !is_dns_name(&host) {
        return Err(format!("`{uri}` has no DNS host name"));
    }
    if host.ends_with(".svc") || host.ends_with(".svc.cluster.local") {
        return Ok(format!("outbound|{port}||{host}"));
    }
    if !uri.starts_with("https://") {
        return Err(format!("`{uri}` is an external host: it must be https"));
    }
    Ok(format!("outbound|80||{host}"))
}

/// Target-specific problems of a loaded policy.
pub fn lint(policy: &Policy, target: Target) -> Vec<Lint> {
    let mut out = Vec::new();
    let mut push = |level, field: String, message: String| {
        out.push(Lint {
            level,
            field,
            message,
        })
    };
    for (i, iss) in policy.issuers.iter().enumerate() {
        if let KeySource::Remote(r) = &iss.keys {
            match target {
                Target::Istio => match istio_jwks_cluster(&r.uri, &r.authority) {
                    Err(why) => push("error", format!("issuers[{i}].jwks_uri"), format!(
                        "{why}: tools/gen_wasmplugins.py refuses it (no cluster would reach the keys)"
                    )),
                    Ok(want) if want != r.cluster => push("error", format!("issuers[{i}].jwks_cluster"), format!(
                        "must be `{want}`, not `{}`: in Istio that is the cluster tools/gen_wasmplugins.py gives the sidecar for this jwks_uri (an external host: plain HTTP from the filter, TLS to the issuer); any other answers 503 jwks_unavailable",
                        r.cluster
                    )),
                    Ok(_) => {}
                },
                Target::Envoy => {
                    if r.uri.starts_with("http://") {
                        push(
                            "warning",
                            format!("issuers[{i}].jwks_uri"),
                            "plain http: keys can be changed on the way; use https outside a test"
                                .into(),
                        );
                    }
                }
            }
        }
    }
    if let Some(f) = &policy.fhir {
        if target == Target::Istio {
            if f.hold_headers_while_buffering {
                push("error", "fhir.hold_headers_while_buffering".into(),
                    "must be false in Istio: a WasmPlugin cannot set `allow_on_headers_stop_iteration`, so the filter would wait for a body the host never delivers".into());
            }
            if !is_istio_inbound(&f.read_before_write_cluster)
                && !is_istio_outbound(&f.read_before_write_cluster)
            {
                push("error", "fhir.read_before_write_cluster".into(), format!(
                    "`{}` is not a cluster Istio defines; use the API's own `inbound|<port>||` cluster (writes by id under patient grants answer 503 stored_read_failed otherwise)",
                    f.read_before_write_cluster
                ));
            }
        } else if f.read_before_write_cluster != "api" {
            push(
                "warning",
                "fhir.read_before_write_cluster".into(),
                format!(
                    "`{}`: envoy/render.py defines the cluster `api` and the jwks clusters only",
                    f.read_before_write_cluster
                ),
            );
        }
    }
    for (i, prefix) in policy.routes.public_prefixes_covering_deeper_paths() {
        push("warning", format!("routes[{i}].path_prefix"), format!(
            "public prefix: every path below `{prefix}` is public too (`{}/...`), whatever `unmatched` says; use `path` for one exact path",
            prefix.trim_end_matches('/')
        ));
    }
    if policy.token.allow_bearer && !policy.token.allow_dpop {
        push(
            "warning",
            "token.schemes".into(),
            "Bearer only: tokens are not sender-constrained (FAPI 2.0 §5.3.3 wants DPoP or mTLS)"
                .into(),
        );
    }
    out
}

/// What the policy means, in short sentences (for `fapi-guard check` and the web page).
pub fn describe(policy: &Policy, doc: Option<&PolicyDoc>) -> Vec<String> {
    let mut out = Vec::new();
    out.push(format!(
        "API `{}`: tokens must carry the audience `{}`{}.",
        policy.api_name,
        policy.audience,
        if policy.sole_audience {
            " and no other"
        } else {
            ""
        }
    ));
    for iss in &policy.issuers {
        match &iss.keys {
            KeySource::Inline(_) => out.push(format!("Issuer `{}`: keys inline in the policy.", iss.issuer)),
            KeySource::Remote(r) => out.push(format!(
                "Issuer `{}`: keys fetched from {} through the Envoy cluster `{}`, every {} s and on an unknown kid (at most every {} s).",
                iss.issuer, r.uri, r.cluster, r.refresh_seconds, r.min_refetch_seconds
            )),
        }
    }
    let mut schemes = Vec::new();
    if policy.token.allow_dpop {
        schemes.push("DPoP");
    }
    if policy.token.allow_bearer {
        schemes.push("Bearer");
    }
    let algs: Vec<&str> = policy.token.algs.iter().map(|a| a.name()).collect();
    // RFC 9068 §2.2 lists `sub`; `token.require_sub: false` accepts tokens without it.
    let claims = if policy.token.require_sub {
        "iss, sub, client_id, jti, exp, iat, aud (RFC 9068 §2.2)"
    } else {
        "iss, client_id, jti, exp, iat, aud (RFC 9068 §2.2 without `sub`: `token.require_sub: false`)"
    };
    out.push(format!(
        "Token: `Authorization: {}`, a JWT access token (typ at+jwt{}) signed with {}, with the claims {claims}, clock skew {} s.",
        schemes.join("` or `"),
        if policy.token.allow_typ_jwt { " or JWT" } else { "" },
        algs.join(", "),
        policy.token.skew_seconds
    ));
    if policy.mode == Mode::Shadow {
        out.push(DRY_RUN_POLICY.into());
    }
    let routes = doc.and_then(|d| d.routes.as_deref()).unwrap_or_default();
    for (i, r) in routes.iter().enumerate() {
        out.push(describe_route(i, r, policy.mode));
    }
    out.push(unmatched(policy.unmatched, policy.mode).into());
    let dp = policy.dpop.clone().unwrap_or_default();
    if dp.required {
        out.push(format!(
            "DPoP: required on every protected request: a fresh proof (algs {}) bound to the token's cnf.jkt, iat within {} s before / {} s after the proxy clock, each jti once.",
            dp.algs.iter().map(|a| a.name()).collect::<Vec<_>>().join(", "), dp.iat_past, dp.iat_future
        ));
    } else {
        out.push(
            "DPoP: checked for DPoP-bound tokens; unbound Bearer tokens pass without a proof."
                .into(),
        );
    }
    if !dp.public_origins.is_empty() || !dp.stripped_path_prefix.is_empty() {
        out.push(format!(
            "DPoP htu: public origin {} with the prefix `{}` a gateway strips.",
            dp.public_origins
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            dp.stripped_path_prefix
        ));
    }
    if dp.nonce.is_some() {
        out.push("DPoP nonces: on (401 use_dpop_nonce with a DPoP-Nonce header until the proof carries a current one).".into());
    }
    out.push(replay_scope(&dp, doc));
    out.push(audit_record(policy));
    match &policy.fhir {
        None => out.push("Filters: token -> DPoP (a plain REST API: no `fhir` section, so no FHIR scope step and no SMART scope or compartment checks).".into()),
        Some(f) => {
            out.push("Filters: token -> DPoP -> FHIR scope (the `fhir` section adds the FHIR step).".into());
            out.push(format!(
                "FHIR API under `{}` serving {}.",
                f.base_path,
                f.resource_types.join(", ")
            ));
            out.push(format!(
                "SMART scope contexts accepted: {}; the patient in context comes from the claim `{}`.",
                f.contexts.iter().map(|c| c.name()).collect::<Vec<_>>().join(", "),
                f.patient_claim
            ));
            out.push(format!(
                "Scopes needed: SMART v1/v2 `<context>/<Type>.<permissions>` for the interaction (read/search need r/s, create c, update u, delete d; `{}/*.rs` reads everything in the patient's compartment).",
                f.contexts.first().map(|c| c.name()).unwrap_or("patient")
            ));
            out.push("patient/ grants: only the patient's own compartment; reads by id the request cannot decide are checked on the response body; writes by id read the stored resource first.".into());
            if !f.patient_shared_types.is_empty() {
                out.push(format!("Shared with every patient: {}.", f.patient_shared_types.join(", ")));
            }
            for o in &f.operations {
                out.push(format!("Operation `${}` needs `{}`{}.", o.name.trim_start_matches('$'), o.perms.letters(), if o.all_types { " on every type" } else { "" }));
            }
            if f.operations.is_empty() {
                out.push("No $operations allowed.".into());
            }
            out.push(format!(
                "A foreign resource is answered {}.",
                if f.hide_foreign_as_not_found { "404 (hidden)" } else { "403" }
            ));
        }
    }
    out
}

const DRY_RUN_POLICY: &str = "Mode: DRY RUN (`mode: shadow`) for every route without its own `mode`: each check still decides, a refusal is counted (`fapi_guard.<filter>.shadow_denied.<reason>`) and logged, and the request passes (a non-canonical path is refused in every mode).";

/// What a path no `routes[]` rule matches gets, in the mode it runs in.
fn unmatched(u: Unmatched, mode: Mode) -> &'static str {
    match (u, mode) {
        (Unmatched::TokenOnly, Mode::Enforce) => "Every other path needs a valid token (first matching route wins; no match = token; `unmatched: deny` refuses it instead).",
        (Unmatched::TokenOnly, Mode::Shadow) => "Every other path needs a valid token (first matching route wins); dry run: a request without one is counted and passes.",
        (Unmatched::Deny, Mode::Enforce) => "Every other path is refused (`unmatched: deny`: 403 `route_not_listed`, before the token is read).",
        (Unmatched::Deny, Mode::Shadow) => "Every other path would be refused (`unmatched: deny`, `route_not_listed`); dry run: it is counted and passes.",
    }
}

/// One `routes[]` rule as it is enforced: matcher, methods, requirement, mode.
fn describe_route(i: usize, r: &RouteDoc, policy_mode: Mode) -> String {
    let methods = if r.methods.is_empty() {
        "any method".to_string()
    } else {
        r.methods.join(", ")
    };
    let what = match (r.require, &r.authz) {
        (Requirement::None, _) => "public (no token, no checks)".to_string(),
        (Requirement::Token, None) => "a valid token".to_string(),
        (Requirement::Token, Some(a)) => format!("a valid token{}", requirements(a)),
    };
    let mode = match (r.mode, policy_mode, r.require) {
        (_, _, Requirement::None) => "",
        (Some(Mode::Shadow), _, _) => {
            "; DRY RUN (route `mode: shadow`): a refusal is counted and logged, the request passes"
        }
        (None, Mode::Shadow, _) => "; DRY RUN (policy `mode: shadow`)",
        (Some(Mode::Enforce), Mode::Shadow, _) => "; enforced (route `mode: enforce`)",
        _ => "; enforced",
    };
    format!(
        "Route {i}: {} ({methods}): {what}{mode}.",
        r.describe_matcher()
    )
}

/// A route's `authz` in words: scopes, claims, `authorization_details`, bindings.
fn requirements(a: &AuthzDoc) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &a.scopes {
        if !s.all_of.is_empty() {
            parts.push(format!("scopes all of {}", quoted(&s.all_of)));
        }
        if !s.any_of.is_empty() {
            parts.push(format!("a scope of {}", quoted(&s.any_of)));
        }
    }
    for c in &a.claims {
        parts.push(format!("claim {}", cond(c)));
    }
    for d in &a.authorization_details {
        let fields: Vec<String> = d.fields.iter().map(cond).collect();
        parts.push(format!(
            "an `authorization_details` entry of type `{}`{}",
            d.type_,
            if fields.is_empty() {
                String::new()
            } else {
                format!(" with {}", fields.join(" and "))
            }
        ));
    }
    for b in &a.bind {
        parts.push(bind(b));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" with {}", parts.join("; "))
    }
}

fn quoted(v: &[String]) -> String {
    v.iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One condition (`crate::authz::CondDoc`) in words.
fn cond(c: &CondDoc) -> String {
    let subject = c.claim.as_deref().or(c.field.as_deref()).unwrap_or("?");
    let mut tests = Vec::new();
    if let Some(v) = &c.equals {
        tests.push(format!("= {v}"));
    }
    if let Some(v) = &c.one_of {
        let v: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        tests.push(format!("one of {}", v.join(", ")));
    }
    if let Some(p) = &c.prefix {
        tests.push(format!("starts with \"{p}\""));
    }
    match c.present {
        Some(true) => tests.push("present".into()),
        Some(false) => tests.push("absent".into()),
        None => {}
    }
    if let Some(n) = c.gte {
        tests.push(format!(">= {n}"));
    }
    if let Some(n) = c.lte {
        tests.push(format!("<= {n}"));
    }
    if let Some(v) = &c.contains {
        tests.push(format!("contains {v}"));
    }
    format!("`{subject}` {}", tests.join(" and "))
}

/// One binding (`crate::authz::BindDoc`) in words.
fn bind(b: &BindDoc) -> String {
    let request = match (&b.path_param, &b.header) {
        (Some(p), _) => format!("path parameter `{{{p}}}`"),
        (None, Some(h)) => format!("header `{h}`"),
        (None, None) => "?".into(),
    };
    let token = match (&b.claim, &b.authorization_details) {
        (Some(c), _) => format!("claim `{c}`"),
        (None, Some(d)) => format!(
            "`authorization_details` type `{}` field `{}`",
            d.type_, d.field
        ),
        (None, None) => "?".into(),
    };
    match b.match_ {
        BindMatch::Equals => format!("{request} equal to the token's {token}"),
        BindMatch::ColonSuffix => {
            format!("{request} equal to the token's {token} after its last `:`")
        }
    }
}

/// What `dpop.replay_scope` guarantees (docs/dpop.md, "Replay across replicas").
fn replay_scope(dp: &crate::policy::dpop::DpopPolicy, doc: Option<&PolicyDoc>) -> String {
    use crate::policy::dpop::ReplayScopeDoc;
    let scope = doc
        .and_then(|d| d.dpop.as_ref())
        .map_or(ReplayScopeDoc::Replica, |d| d.replay_scope);
    match (scope, &dp.replay_store) {
        (_, Some(s)) => format!(
            "DPoP replay (`replay_scope: api`): each proof is claimed once across every replica in the etcd store behind the Envoy cluster `{}` (keys under `{}`, an answer within {} ms); when the store cannot answer, requests with a proof are refused with 503 dpop_replay_store_unavailable.",
            s.cluster, s.key_prefix, s.timeout_ms
        ),
        (ReplayScopeDoc::Partitioned, None) => "DPoP replay (`replay_scope: partitioned`): each proof once per replica; once across the replicas only if every call comes through a layer running `fapi_guard:partition` whose balancer hashes `x-fapi-guard-partition` (ring_hash or maglev), and then at most once more per proof when the replica set changes or a replica restarts.".into(),
        _ => "DPoP replay (`replay_scope: replica`): each proof once per proxy; an API with N replicas accepts a captured proof up to N times within its iat window (`api` or `partitioned` close that gap).".into(),
    }
}

/// Whether the audit record is written, and which patients it names (docs/audit.md).
fn audit_record(policy: &Policy) -> String {
    if !policy.audit.record {
        return "Audit record: off (`audit.record: false`): the guard records no decision, no caller and no patient; the API must log who accessed which patient itself.".into();
    }
    let patients = if policy.fhir.is_none() {
        if policy.routes.names_patients() {
            "the patient named by the route's `audit` parameter"
        } else {
            "no patient (no route names one with `routes[].audit`)"
        }
    } else if policy.audit.patients_in_bodies {
        "the patients from the path and query, and from JSON request and response bodies (observed, never held)"
    } else {
        "the patients from the path and query"
    };
    format!(
        "Audit record: one per request a protected route sees, as filter state `wasm.fapi_guard.audit` for the access log to write (docs/audit.md); it names the caller, the decision and {patients}."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_jwks_cluster_follows_the_generators_rule() {
        let ext = "https://sts.example.org/jwks";
        assert_eq!(
            istio_jwks_cluster(ext, "sts.example.org"),
            Ok("outbound|80||sts.example.org".into())
        );
        assert_eq!(
            istio_jwks_cluster(ext, "STS.example.org:8443"),
            Ok("outbound|80||sts.example.org".into())
        );
        let svc = "http://idp.auth.svc.cluster.local:8080/jwks";
        assert_eq!(
            istio_jwks_cluster(svc, "idp.auth.svc.cluster.local:8080"),
            Ok("outbound|8080||idp.auth.svc.cluster.local".into())
        );
        assert!(istio_jwks_cluster("http://sts.example.org/jwks", "sts.example.org").is_err());
        assert!(istio_jwks_cluster("https://a_b.example/jwks", "a_b.example").is_err());
    }

    fn said(policy: serde_json::Value) -> Vec<String> {
        let bytes = serde_json::to_vec(&policy).unwrap_or_default();
        let (Ok(p), Ok(doc)) = (
            Policy::from_json(&bytes),
            serde_json::from_slice::<PolicyDoc>(&bytes),
        ) else {
            unreachable!("the test policy loads")
        };
        describe(&p, Some(&doc))
    }

    fn base(dpop: serde_json::Value, more: serde_json::Value) -> serde_json::Value {
        let mut p = serde_json::json!({
            "api": {"name": "a", "audience": "a"},
            "issuers": [{"issuer": "https://i", "jwks_uri": "https://i/jwks", "jwks_cluster": "c"}],
            "dpop": dpop
        });
        if let (Some(p), serde_json::Value::Object(m)) = (p.as_object_mut(), more) {
            p.extend(m);
        }
        p
    }

    #[test]
    fn says_what_each_replay_scope_and_the_audit_record_do() {
        let line = |v: &[String], prefix: &str| {
            v.iter()
                .find(|l| l.starts_with(prefix))
                .cloned()
                .unwrap_or_default()
        };
        let none = serde_json::json!({});
        let r = said(base(serde_json::json!({}), none.clone()));
        assert!(line(&r, "DPoP replay").contains("up to N times"), "{r:?}");
        assert!(line(&r, "Audit record").contains("no patient"), "{r:?}");
        let r = said(base(
            serde_json::json!({"replay_scope": "partitioned"}),
            none.clone(),
        ));
        assert!(
            line(&r, "DPoP replay").contains("fapi_guard:partition"),
            "{r:?}"
        );
        let r = said(base(
            serde_json::json!({"replay_scope": "api", "replay_store":
                {"cluster": "store", "kind": "etcd"}}),
            none,
        ));
        assert!(line(&r, "DPoP replay").contains("`store`"), "{r:?}");
        assert!(line(&r, "DPoP replay").contains("503"), "{r:?}");
        let r = said(base(
            serde_json::json!({}),
            serde_json::json!({"audit": {"record": false}}),
        ));
        assert!(line(&r, "Audit record").contains("off"), "{r:?}");
    }
}
