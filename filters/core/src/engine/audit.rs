//! The audit record (docs/audit.md): one per request a protected route sees, written once the
//! stream's decision is final (allowed, denied, or denied in dry run), for the driver to hand
//! to the proxy's access log. It names who (client, user, HPR number, organisations), on
//! whose behalf and which patient, what (API, route, method, canonical path, FHIR interaction)
//! and why (purpose of use), and the decision with its reason code. Never a token, a proof, a
//! body or a query string: only claims the token step verified, the token's `jti` and the
//! proof key's thumbprint (`cnf.jkt`).

use serde::Serialize;
use serde_json::Value;

use super::StepName;
use crate::claims::VerifiedToken;
use crate::denial::Reason;
use crate::fhir::interaction::{self, FhirRequest, Interaction};

/// HelseID claim names (NHN's claims reference; docs/audit.md "Fields").
const HPR_NUMBER: &str = "helseid://claims/hpr/hpr_number";
const SECURITY_LEVEL: &str = "helseid://claims/identity/security_level";
const ASSURANCE_LEVEL: &str = "helseid://claims/identity/assurance_level";
const PID_PSEUDONYM: &str = "helseid://claims/identity/pid_pseudonym";
const ORGNR_PARENT: &str = "helseid://claims/client/claims/orgnr_parent";
const ORGNR_CHILD: &str = "helseid://claims/client/claims/orgnr_child";
const ORGNR_SUPPLIER: &str = "helseid://claims/client/claims/orgnr_supplier";
/// RFC 9396 detail types whose fields are read (docs/audit.md "Purpose of use").
const TRUST_FRAMEWORK: [&str; 2] = [
    "nhn:tillitsrammeverk:parameters",
    "nhn:trust_framework:parameters",
];
const HELSEID_AUTHORIZATION: &str = "helseid_authorization";

/// What the guard decided about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
    /// Dry run (`mode: shadow`): would be refused, went on.
    ShadowDeny,
    /// The stream ended (client reset, upstream failure) before every step had decided.
    Undecided,
}

/// The FHIR request as `crate::fhir::interaction::classify` read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FhirFacts {
    pub interaction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// One audit record (serialised as one JSON object, field names in docs/audit.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Seconds since the epoch, the proxy clock, when the decision became final.
    pub time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub api: String,
    /// The matching `routes[]` pattern, `(unlisted)`, or `(refused)` before routing.
    pub route: String,
    pub method: String,
    /// The canonical path, without its query.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fhir: Option<FhirFacts>,
    pub decision: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<&'static str>,
    /// The claims below come from a token the token step verified.
    pub token_verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hpr_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assurance_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_pseudonym: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orgnr_parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orgnr_child: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orgnr_supplier: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authorization_details_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose_of_use: Option<String>,
    /// The token's patient claim (SMART launch context).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// Patients the request and response named (docs/audit.md "Patients").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub patients_named: Vec<String>,
    /// The bodies were read for patients: whether every one named is in `patients_named`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patients_complete: Option<bool>,
    /// Why not (`request_not_json`, `response_encoded`, `response_over_limit`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patients_unread: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl AuditRecord {
    /// The record as one JSON object. The buffer starts at a typical record's size (a user
    /// token's record is 500–900 bytes), so it is not grown and copied while writing.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }
}

/// The audit facts of one stream, gathered as the pipeline decides.
#[derive(Default)]
pub(super) struct Trail {
    /// A protected route (or a request refused before routing): it gets a record.
    pub protected: bool,
    pub request_id: Option<String>,
    pub traceparent: Option<String>,
    /// The first refusal: its step, reason, and whether it was a dry-run one.
    pub refusal: Option<(StepName, Reason, bool)>,
    /// `client_id` of a token that did not verify (a refused request's).
    pub unverified_client: Option<String>,
    /// The decision is final (a reply was sent, or the response went on).
    pub done: bool,
    /// The record was handed out.
    pub written: bool,
    /// The bodies are read for patients (`audit.patients_in_bodies`, the FHIR scope step).
    pub bodies: bool,
    /// Patients the bodies named.
    pub patients: Vec<String>,
    /// Why a body's patients are not all known (the first reason).
    pub unread: Option<&'static str>,
    /// A `_search` form body, read with the query's parameters (`audit_body::Reading::Form`).
    pub search_form: Option<String>,
}

impl Trail {
    pub fn unread(&mut self, why: &'static str) {
        self.unread.get_or_insert(why);
    }

    /// A refusal (only the first counts; an enforced one ends the stream).
    pub fn refused(&mut self, step: StepName, reason: Reason, shadow: bool, client: Option<&str>) {
        if self.refusal.is_none() {
            self.refusal = Some((step, reason, shadow));
            self.unverified_client = client.map(str::to_string);
        }
        if !shadow {
            self.done = true;
        }
    }
}

/// What the record reads besides the trail.
pub(super) struct Seen<'a> {
    pub now: i64,
    pub api: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    /// The canonical path with the query (`None`: refused before routing, the raw path).
    pub path_with_query: Option<&'a str>,
    pub raw_path: &'a str,
    pub decided: bool,
    pub token: Option<&'a VerifiedToken>,
    /// `fhir.base_path` and `fhir.patient_claim` (no FHIR policy: `None`).
    pub fhir: Option<(&'a str, &'a str)>,
    /// The patient a REST route's `audit` parameter names.
    pub route_patient: Option<String>,
}

fn claim(t: &VerifiedToken, name: &str) -> Option<String> {
    match t.claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The patients a FHIR request names: `Patient/{id}` (and its compartment), and the
/// `patient`/`subject` search parameters (FHIR R4 search.html §3.1.1.3 references,
/// `Patient/{id}` or a bare id).
fn patients_named(r: &FhirRequest) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    // `classify` reads only the Patient compartment.
    out.extend(r.compartment_id.clone());
    if r.resource_type.as_deref() == Some("Patient") {
        out.extend(r.id.clone());
        if r.interaction == Interaction::SearchType {
            for p in r.params.iter().filter(|p| p.name == "_id") {
                out.extend(p.value.split(',').map(str::to_string));
            }
        }
    }
    for p in &r.params {
        let name = p.name.split(':').next().unwrap_or_default();
        if name == "patient" || name == "subject" {
            for v in p.value.split(',') {
                let v = v.strip_prefix("Patient/").unwrap_or(v);
                if !v.is_empty() && !v.contains('/') {
                    out.push(v.to_string());
                }
            }
        }
    }
    // Sorted, without repeats or empty ids, with the other patients, in `record`.
    out
}

/// `authorization_details` (RFC 9396 §2): every type, the trust framework's purpose of use
/// (`care_relationship.purpose_of_use.code`), and `NO:ORGNR:<parent>:<child>` from
/// `helseid_authorization` (HELSEID.md "Trust framework").
fn details(t: &VerifiedToken) -> (Vec<String>, Option<String>, Option<(String, String)>) {
    let mut types = Vec::new();
    let mut purpose = None;
    let mut orgs = None;
    let items = match t.claims.get("authorization_details") {
        Some(Value::Array(a)) => a.as_slice(),
        Some(v @ Value::Object(_)) => std::slice::from_ref(v),
        _ => &[],
    };
    for d in items {
        let Some(ty) = d.get("type").and_then(Value::as_str) else {
            continue;
        };
        types.push(ty.to_string());
        if TRUST_FRAMEWORK.contains(&ty) && purpose.is_none() {
            purpose = d
                .pointer("/care_relationship/purpose_of_use/code")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if ty == HELSEID_AUTHORIZATION && orgs.is_none() {
            let v = d
                .pointer("/practitioner_role/organization/identifier/value")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut parts = v.strip_prefix("NO:ORGNR:").unwrap_or_default().split(':');
            if let (Some(p), c) = (parts.next().filter(|p| !p.is_empty()), parts.next()) {
                orgs = Some((p.to_string(), c.unwrap_or_default().to_string()));
            }
        }
    }
    (types, purpose, orgs)
}

pub(super) fn record(trail: &Trail, s: &Seen<'_>) -> AuditRecord {
    let decision = match trail.refusal {
        Some((_, _, false)) => Verdict::Deny,
        Some((_, _, true)) => Verdict::ShadowDeny,
        None if s.decided => Verdict::Allow,
        None => Verdict::Undecided,
    };
    let path = match s.path_with_query {
        Some(p) => p.split('?').next().unwrap_or_default(),
        None => s.raw_path.split('?').next().unwrap_or_default(),
    };
    let mut classified = match (s.fhir, s.path_with_query) {
        (Some((base, _)), Some(pq)) => interaction::classify(base, s.method, pq).ok(),
        _ => None,
    };
    // A `_search` form body's parameters are the search's (FHIR R4 http.html#search).
    let mut form_unread = None;
    if let (Some(c), Some(form)) = (classified.as_mut(), &trail.search_form) {
        if c.via_post {
            match crate::fhir::query::parse(form) {
                Some(params) => c.params.extend(params),
                None => form_unread = Some("request_unparsed"),
            }
        }
    }
    let unread = trail.unread.or(form_unread);
    let mut r = AuditRecord {
        time: s.now,
        request_id: trail.request_id.clone(),
        traceparent: trail.traceparent.clone(),
        api: s.api.to_string(),
        route: s.route.to_string(),
        method: s.method.to_string(),
        path: path.to_string(),
        fhir: classified.as_ref().map(|c| FhirFacts {
            interaction: c.interaction.name(),
            resource_type: c.resource_type.clone(),
            id: c.id.clone(),
        }),
        decision,
        reason: trail.refusal.map(|(_, r, _)| r.code()),
        step: trail.refusal.map(|(s, _, _)| s.as_str()),
        token_verified: s.token.is_some(),
        client_id: trail.unverified_client.clone(),
        sub: None,
        hpr_number: None,
        security_level: None,
        assurance_level: None,
        pid_pseudonym: None,
        orgnr_parent: None,
        orgnr_child: None,
        orgnr_supplier: None,
        authorization_details_types: Vec::new(),
        purpose_of_use: None,
        patient: None,
        patients_named: classified.as_ref().map(patients_named).unwrap_or_default(),
        patients_complete: trail.bodies.then_some(unread.is_none()),
        patients_unread: unread,
        jkt: None,
        jti: None,
    };
    r.patients_named.extend(trail.patients.iter().cloned());
    r.patients_named.extend(s.route_patient.clone());
    r.patients_named.retain(|v| !v.is_empty());
    r.patients_named.sort();
    r.patients_named.dedup();
    if let Some(t) = s.token {
        let (types, purpose, orgs) = details(t);
        r.client_id = Some(t.client_id.clone()).filter(|c| !c.is_empty());
        r.sub = Some(t.sub.clone()).filter(|c| !c.is_empty());
        r.hpr_number = claim(t, HPR_NUMBER);
        r.security_level = claim(t, SECURITY_LEVEL);
        r.assurance_level = claim(t, ASSURANCE_LEVEL);
        r.pid_pseudonym = claim(t, PID_PSEUDONYM);
        r.orgnr_parent = claim(t, ORGNR_PARENT).or_else(|| orgs.clone().map(|o| o.0));
        r.orgnr_child =
            claim(t, ORGNR_CHILD).or_else(|| orgs.map(|o| o.1).filter(|c| !c.is_empty()));
        r.orgnr_supplier = claim(t, ORGNR_SUPPLIER);
        r.authorization_details_types = types;
        r.purpose_of_use = purpose;
        r.patient = claim(t, s.fhir.map_or("patient", |f| f.1));
        r.jkt = t.cnf_jkt.clone();
        r.jti = claim(t, "jti");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::Scheme;
    use serde_json::json;

    fn token(claims: Value) -> VerifiedToken {
        let Value::Object(claims) = claims else {
            unreachable!()
        };
        VerifiedToken {
            scheme: Scheme::Dpop,
            token_sha256: "ath-of-the-token".into(),
            iss: "https://helseid-sts.test.nhn.no".into(),
            sub: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            client_id: "client-1".into(),
            exp: 0,
            scopes: vec![],
            cnf_jkt: Some("jkt-1".into()),
            cnf_x5t_s256: None,
            claims,
        }
    }

    fn seen<'a>(pq: &'a str, t: Option<&'a VerifiedToken>) -> Seen<'a> {
        Seen {
            now: 7,
            api: "api",
            route: "/fhir",
            method: "GET",
            path_with_query: Some(pq),
            raw_path: pq,
            decided: true,
            token: t,
            fhir: Some(("/fhir", "patient")),
            route_patient: None,
        }
    }

    #[test]
    fn user_token_fields_and_patients_named() {
        let t = token(json!({
            "sub": "s-1", "jti": "J1", "patient": "p-ctx",
            "helseid://claims/hpr/hpr_number": "565501872",
            "helseid://claims/identity/security_level": "4",
            "helseid://claims/identity/pid": "12345678901",
            "authorization_details": [
                {"type": "nhn:tillitsrammeverk:parameters",
                 "care_relationship": {"purpose_of_use": {"code": "TREAT"}}},
                {"type": "helseid_authorization", "practitioner_role": {"organization":
                    {"identifier": {"value": "NO:ORGNR:999977775:999988887"}}}}
            ]
        }));
        let trail = Trail::default();
        let r = record(
            &trail,
            &seen(
                "/fhir/Observation?subject=Patient/p-1&patient=p-2,p-1&code=x",
                Some(&t),
            ),
        );
        assert_eq!(r.decision, Verdict::Allow);
        assert_eq!(r.path, "/fhir/Observation");
        assert_eq!(r.patients_named, ["p-1", "p-2"]);
        assert_eq!(r.patient.as_deref(), Some("p-ctx"));
        assert_eq!(r.hpr_number.as_deref(), Some("565501872"));
        assert_eq!(r.security_level.as_deref(), Some("4"));
        assert_eq!(r.purpose_of_use.as_deref(), Some("TREAT"));
        assert_eq!(r.orgnr_parent.as_deref(), Some("999977775"));
        assert_eq!(r.orgnr_child.as_deref(), Some("999988887"));
        assert_eq!(r.jti.as_deref(), Some("J1"));
        assert_eq!(r.jkt.as_deref(), Some("jkt-1"));
        let v: Value = serde_json::from_slice(&r.to_json()).unwrap_or_default();
        assert_eq!(v.get("decision"), Some(&json!("allow")));
        assert_eq!(
            v.get("fhir"),
            Some(&json!({"interaction": "search-type", "resource_type": "Observation"}))
        );
        assert_eq!(v.get("patients_named"), Some(&json!(["p-1", "p-2"])));
        assert_eq!(v.get("token_verified"), Some(&json!(true)));
        // Absent facts are left out, not null.
        assert!(v.get("reason").is_none() && v.get("request_id").is_none());
        let text = v.to_string();
        // Never the national identity number, the token hash, or the query's other values.
        for absent in ["12345678901", "ath-of-the-token", "code"] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
    }

    #[test]
    fn patient_compartment_and_read() {
        let r = record(
            &Trail::default(),
            &seen("/fhir/Patient/p-9/Observation", None),
        );
        assert_eq!(r.patients_named, ["p-9"]);
        assert_eq!(r.fhir.map(|f| f.interaction), Some("search-compartment"));
        let r = record(&Trail::default(), &seen("/fhir/Patient?_id=a,b", None));
        assert_eq!(r.patients_named, ["a", "b"]);
        assert!(!r.token_verified && r.client_id.is_none());
    }

    #[test]
    fn first_refusal_decides_and_enforce_ends() {
        let mut trail = Trail::default();
        trail.refused(StepName::Token, Reason::MissingToken, true, Some("c"));
        assert!(!trail.done);
        trail.refused(StepName::FhirScope, Reason::InsufficientScope, true, None);
        let r = record(&trail, &seen("/fhir/Observation", None));
        assert_eq!(r.decision, Verdict::ShadowDeny);
        assert_eq!((r.step, r.reason), (Some("token"), Some("missing_token")));
        assert_eq!(r.client_id.as_deref(), Some("c"));
        let mut trail = Trail::default();
        trail.refused(StepName::Dpop, Reason::MissingToken, false, None);
        assert!(trail.done);
        let mut s = seen("/x", None);
        s.decided = false;
        assert_eq!(record(&trail, &s).decision, Verdict::Deny);
        assert_eq!(record(&Trail::default(), &s).decision, Verdict::Undecided);
    }

    #[test]
    fn a_search_form_body_names_its_patients() {
        let mut trail = Trail {
            bodies: true,
            search_form: Some("patient=p-7&code=x".into()),
            ..Trail::default()
        };
        let mut s = seen("/fhir/Observation/_search?subject=Patient/p-1", None);
        s.method = "POST";
        let r = record(&trail, &s);
        assert_eq!(r.patients_named, ["p-1", "p-7"]);
        assert_eq!(r.patients_complete, Some(true));
        // A GET's query is the search; a form body only counts for `POST _search`.
        let r = record(&trail, &seen("/fhir/Observation?code=y", None));
        assert!(r.patients_named.is_empty());
        trail.search_form = Some("patient=%zz".into());
        let r = record(&trail, &s);
        assert_eq!(r.patients_unread, Some("request_unparsed"));
        assert_eq!(r.patients_complete, Some(false));
    }
}
