//! FHIR R4 `CompartmentDefinition/patient` as data: for each resource type, the search
//! parameters that put a resource in a patient's compartment, and the element paths those
//! parameters search (from the R4 `SearchParameter` expressions). Plus the checks that read
//! a resource body: "is this resource in patient X's compartment", "does it match `p=v`".

use serde_json::Value;

use super::query::{split_or, Param};

/// (resource type, [(search parameter, element path)]). Element paths are dot-separated
/// and walk through arrays. Source: http://hl7.org/fhir/R4/compartmentdefinition-patient.html
/// Types whose membership expression needs `resolve()` on a polymorphic target (AuditEvent)
/// are left out: the guard cannot decide them safely.
pub const PATIENT_COMPARTMENT: &[(&str, &[(&str, &str)])] = &[
    ("Account", &[("subject", "subject")]),
    ("AdverseEvent", &[("subject", "subject")]),
    (
        "AllergyIntolerance",
        &[
            ("patient", "patient"),
            ("recorder", "recorder"),
            ("asserter", "asserter"),
        ],
    ),
    ("Appointment", &[("actor", "participant.actor")]),
    ("AppointmentResponse", &[("actor", "actor")]),
    ("Basic", &[("patient", "subject"), ("author", "author")]),
    // Not in R4's CompartmentDefinition: a Binary's link to a patient is its
    // `securityContext` (R4 binary.html "Security"); only `Patient/<pid>` itself is proven.
    ("Binary", &[("securityContext", "securityContext")]),
    ("BodyStructure", &[("patient", "patient")]),
    (
        "CarePlan",
        &[
            ("patient", "subject"),
            ("performer", "activity.detail.performer"),
        ],
    ),
    (
        "CareTeam",
        &[
            ("patient", "subject"),
            ("participant", "participant.member"),
        ],
    ),
    ("ChargeItem", &[("subject", "subject")]),
    ("Claim", &[("patient", "patient"), ("payee", "payee.party")]),
    ("ClaimResponse", &[("patient", "patient")]),
    ("ClinicalImpression", &[("subject", "subject")]),
    (
        "Communication",
        &[
            ("subject", "subject"),
            ("sender", "sender"),
            ("recipient", "recipient"),
        ],
    ),
    (
        "CommunicationRequest",
        &[
            ("subject", "subject"),
            ("sender", "sender"),
            ("recipient", "recipient"),
            ("requester", "requester"),
        ],
    ),
    (
        "Composition",
        &[
            ("subject", "subject"),
            ("author", "author"),
            ("attester", "attester.party"),
        ],
    ),
    (
        "Condition",
        &[("patient", "subject"), ("asserter", "asserter")],
    ),
    ("Consent", &[("patient", "patient")]),
    (
        "Coverage",
        &[
            ("policy-holder", "policyHolder"),
            ("subscriber", "subscriber"),
            ("beneficiary", "beneficiary"),
            ("payor", "payor"),
        ],
    ),
    ("CoverageEligibilityRequest", &[("patient", "patient")]),
    ("CoverageEligibilityResponse", &[("patient", "patient")]),
    ("DetectedIssue", &[("patient", "patient")]),
    (
        "DeviceRequest",
        &[("subject", "subject"), ("performer", "performer")],
    ),
    ("DeviceUseStatement", &[("subject", "subject")]),
    ("DiagnosticReport", &[("subject", "subject")]),
    (
        "DocumentManifest",
        &[
            ("subject", "subject"),
            ("author", "author"),
            ("recipient", "recipient"),
        ],
    ),
    (
        "DocumentReference",
        &[("subject", "subject"), ("author", "author")],
    ),
    ("Encounter", &[("patient", "subject")]),
    ("EnrollmentRequest", &[("subject", "candidate")]),
    ("EpisodeOfCare", &[("patient", "patient")]),
    (
        "ExplanationOfBenefit",
        &[("patient", "patient"), ("payee", "payee.party")],
    ),
    ("FamilyMemberHistory", &[("patient", "patient")]),
    ("Flag", &[("patient", "subject")]),
    ("Goal", &[("patient", "subject")]),
    ("Group", &[("member", "member.entity")]),
    ("ImagingStudy", &[("patient", "subject")]),
    ("Immunization", &[("patient", "patient")]),
    ("ImmunizationEvaluation", &[("patient", "patient")]),
    ("ImmunizationRecommendation", &[("patient", "patient")]),
    (
        "Invoice",
        &[
            ("subject", "subject"),
            ("patient", "subject"),
            ("recipient", "recipient"),
        ],
    ),
    ("List", &[("subject", "subject"), ("source", "source")]),
    ("MeasureReport", &[("patient", "subject")]),
    ("Media", &[("subject", "subject")]),
    (
        "MedicationAdministration",
        &[
            ("patient", "subject"),
            ("performer", "performer.actor"),
            ("subject", "subject"),
        ],
    ),
    (
        "MedicationDispense",
        &[
            ("subject", "subject"),
            ("patient", "subject"),
            ("receiver", "receiver"),
        ],
    ),
    ("MedicationRequest", &[("subject", "subject")]),
    ("MedicationStatement", &[("subject", "subject")]),
    ("MolecularSequence", &[("patient", "patient")]),
    ("NutritionOrder", &[("patient", "patient")]),
    (
        "Observation",
        &[("subject", "subject"), ("performer", "performer")],
    ),
    // The Patient resource is in its own compartment by id (see `resource_in_compartment`).
    ("Patient", &[("link", "link.other")]),
    ("Person", &[("patient", "link.target")]),
    (
        "Procedure",
        &[("patient", "subject"), ("performer", "performer.actor")],
    ),
    ("Provenance", &[("patient", "target")]),
    (
        "QuestionnaireResponse",
        &[("subject", "subject"), ("author", "author")],
    ),
    ("RelatedPerson", &[("patient", "patient")]),
    (
        "RequestGroup",
        &[
            ("subject", "subject"),
            ("participant", "action.participant"),
        ],
    ),
    ("ResearchSubject", &[("individual", "individual")]),
    ("RiskAssessment", &[("subject", "subject")]),
    ("Schedule", &[("actor", "actor")]),
    (
        "ServiceRequest",
        &[("subject", "subject"), ("performer", "performer")],
    ),
    ("Specimen", &[("subject", "subject")]),
    ("SupplyDelivery", &[("patient", "patient")]),
    ("SupplyRequest", &[("subject", "deliverTo")]),
    ("VisionPrescription", &[("patient", "patient")]),
];

/// Compartment parameters that `fhir.compartment.preset: "subject_only"` keeps: the ones naming
/// the record's own patient (`subject`, `patient`, ...), not the actors around it (`performer`,
/// `author`, `member`, `actor`, ...). Patient keeps `link` and Binary its `securityContext`.
pub const SUBJECT_ONLY: &[&str] = &[
    "subject",
    "patient",
    "beneficiary",
    "individual",
    "link",
    "securityContext",
];

/// One type's compartment parameters: (search parameter, element path).
pub type Params = Vec<(&'static str, &'static str)>;

/// The patient compartment the policy decides with (`fhir.compartment`): the R4 table
/// ([`PATIENT_COMPARTMENT`], the default) or a narrower one, per type the parameters that count.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Compartment {
    /// `None`: the R4 table as it is. Otherwise every type in the compartment with its
    /// parameters (a type with none is left out).
    table: Option<Vec<(&'static str, Params)>>,
}

impl Compartment {
    /// The R4 table narrowed: `keep(type, param)` says which parameters count.
    pub fn narrowed(keep: impl Fn(&str, &str) -> bool) -> Compartment {
        let table = PATIENT_COMPARTMENT
            .iter()
            .map(|(t, ps)| {
                let kept: Params = ps.iter().copied().filter(|(n, _)| keep(t, n)).collect();
                (*t, kept)
            })
            .filter(|(_, ps)| !ps.is_empty())
            .collect();
        Compartment { table: Some(table) }
    }

    /// The compartment parameters of `resource_type`, if it is in the patient compartment.
    pub fn params(&self, resource_type: &str) -> Option<&[(&'static str, &'static str)]> {
        match &self.table {
            None => PATIENT_COMPARTMENT
                .iter()
                .find(|(t, _)| *t == resource_type)
                .map(|(_, p)| *p),
            Some(table) => table
                .iter()
                .find(|(t, _)| *t == resource_type)
                .map(|(_, p)| p.as_slice()),
        }
    }

    pub fn contains(&self, resource_type: &str) -> bool {
        self.params(resource_type).is_some()
    }

    /// Search parameters that pin a search on `resource_type` to one patient: the compartment
    /// parameters, plus `patient` where the type has it as "`subject`/`patient` where it is a
    /// Patient" (R4 clinical types, e.g. `Observation.patient`); for Patient itself `_id`.
    pub fn pin_params(&self, resource_type: &str) -> Vec<&'static str> {
        if resource_type == "Patient" {
            return vec!["_id"];
        }
        let Some(params) = self.params(resource_type) else {
            return Vec::new();
        };
        let mut out: Vec<&'static str> = params.iter().map(|(n, _)| *n).collect();
        if !out.contains(&"patient")
            && params
                .iter()
                .any(|(_, p)| *p == "subject" || *p == "patient")
        {
            out.push("patient");
        }
        out
    }

    /// Patient references (`Patient/...`) found in the resource's compartment elements.
    fn patient_refs(&self, resource: &Value, resource_type: &str) -> Vec<String> {
        let Some(params) = self.params(resource_type) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (_, path) in params {
            for v in values_at(resource, path) {
                if let Some(r) = v.get("reference").and_then(Value::as_str) {
                    out.push(r.to_string());
                } else if v.get("identifier").is_some() {
                    // A logical reference (identifier only) to a patient cannot be checked: it
                    // counts as foreign.
                    let t = v.get("type").and_then(Value::as_str);
                    if t.is_none() || t == Some("Patient") {
                        out.push(String::new());
                    }
                }
            }
        }
        out
    }

    /// Read rule: the resource is in patient `pid`'s compartment (FHIR R4: any compartment
    /// parameter refers to the patient; the Patient resource itself by id).
    pub fn resource_in(&self, resource: &Value, pid: &str) -> bool {
        let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else {
            return false;
        };
        if rt == "Patient" {
            return resource.get("id").and_then(Value::as_str) == Some(pid);
        }
        self.patient_refs(resource, rt)
            .iter()
            .any(|r| is_patient_ref(r, pid))
    }

    /// Write rule (stricter): at least one compartment element refers to `Patient/{pid}` and
    /// every patient reference in compartment elements is that patient (nothing is moved into,
    /// or shared with, another patient's compartment).
    pub fn written_for(&self, resource: &Value, pid: &str) -> bool {
        let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else {
            return false;
        };
        let refs = self.patient_refs(resource, rt);
        let mine = refs.iter().filter(|r| is_patient_ref(r, pid)).count();
        let foreign = refs
            .iter()
            .filter(|r| r.is_empty() || (r.contains("Patient/") && !is_patient_ref(r, pid)))
            .count();
        if rt == "Patient" {
            // The Patient resource is the patient's by id; its `link.other` (R4 compartment
            // parameter `link`) must not name another patient.
            return resource.get("id").and_then(Value::as_str) == Some(pid) && foreign == 0;
        }
        mine > 0 && foreign == 0
    }

    /// Top-level element names of `resource_type`'s compartment paths (`subject`, `performer`).
    pub fn elements(&self, resource_type: &str) -> Vec<&'static str> {
        self.params(resource_type)
            .unwrap_or_default()
            .iter()
            .filter_map(|(_, path)| path.split('.').next())
            .collect()
    }
}

/// Every value found at a dot-separated element path, walking through arrays.
fn values_at<'a>(v: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut cur: Vec<&Value> = vec![v];
    for part in path.split('.') {
        let mut next = Vec::new();
        for c in cur {
            match c.get(part) {
                Some(Value::Array(a)) => next.extend(a.iter()),
                Some(x) => next.push(x),
                None => {}
            }
        }
        cur = next;
    }
    cur
}

/// Is `reference` a literal relative reference to `Patient/{pid}` (optionally versioned)?
/// Absolute URLs are not accepted: another server's `Patient/{pid}` is another patient.
pub fn is_patient_ref(reference: &str, pid: &str) -> bool {
    match reference.strip_prefix("Patient/") {
        Some(rest) => match rest.split_once("/_history/") {
            Some((id, _)) => id == pid,
            None => rest == pid,
        },
        None => false,
    }
}

/// The patient id a reference string names (`Patient/<id>`, versioned, or an absolute URL
/// ending so); `Some("")` for a conditional `Patient?...` reference (cannot be resolved).
fn referenced_patient(reference: &str) -> Option<&str> {
    if reference.contains("Patient?") {
        return Some("");
    }
    let segs: Vec<&str> = reference.split('/').collect();
    let n = segs.len();
    let (t, id) = match segs.get(n.checked_sub(2)?) {
        // `.../Patient/<id>/_history/<vid>`
        Some(&"_history") => (segs.get(n.checked_sub(4)?)?, segs.get(n - 3)?),
        _ => (segs.get(n - 2)?, segs.get(n - 1)?),
    };
    (*t == "Patient").then_some(*id)
}

/// Does `v` (any resource, at any depth: contained resources, nested Bundles, extensions)
/// hold a `reference` naming a patient other than `pid`? R4 references.html: every
/// `Reference.reference` is checked, relative or absolute.
pub fn names_other_patient(v: &Value, pid: &str) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, x)| {
            (k == "reference"
                && x.as_str()
                    .and_then(referenced_patient)
                    .is_some_and(|id| id != pid))
                || names_other_patient(x, pid)
        }),
        Value::Array(a) => a.iter().any(|x| names_other_patient(x, pid)),
        _ => false,
    }
}

/// Element paths searched by token parameters where the name does not follow the
/// kebab-case -> camelCase rule (R4 `SearchParameter` expressions).
const TOKEN_PARAM_PATHS: &[(&str, &str, &str)] = &[
    ("MedicationRequest", "code", "medicationCodeableConcept"),
    ("MedicationStatement", "code", "medicationCodeableConcept"),
    (
        "MedicationAdministration",
        "code",
        "medicationCodeableConcept",
    ),
    ("MedicationDispense", "code", "medicationCodeableConcept"),
    ("Immunization", "vaccine-code", "vaccineCode"),
    ("Encounter", "class", "class"),
    ("Condition", "clinical-status", "clinicalStatus"),
    ("Condition", "verification-status", "verificationStatus"),
    ("AllergyIntolerance", "clinical-status", "clinicalStatus"),
    ("Observation", "value-concept", "valueCodeableConcept"),
];

/// `s` is ASCII (lower case and `-`, checked by [`token_path`]): ASCII upper-casing is the
/// whole of it, and keeps the Unicode case tables out of the module (bench/README.md "Size").
fn kebab_to_camel(s: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in s.chars() {
        if c == '-' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn token_path(resource_type: &str, param: &str) -> Option<String> {
    if let Some((_, _, p)) = TOKEN_PARAM_PATHS
        .iter()
        .find(|(t, n, _)| *t == resource_type && *n == param)
    {
        return Some((*p).to_string());
    }
    // Only plain names map to elements; `_id`, modifiers, chains are not checked here.
    if param.is_empty() || !param.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        return None;
    }
    Some(kebab_to_camel(param))
}

/// Top-level element names a constraint's parameters are evaluated on
/// ([`resource_matches_constraint`]); parameters it cannot evaluate have none.
pub fn constraint_elements(resource_type: &str, constraint: &[Param]) -> Vec<String> {
    constraint
        .iter()
        .filter_map(|p| token_path(resource_type, &p.name))
        .filter_map(|p| p.split('.').next().map(str::to_string))
        .collect()
}

/// Does one element value (code, Coding, CodeableConcept, Identifier, boolean) match a
/// token search value `[system|]code` (FHIR R4 §3.1.1.4.7 token)?
fn token_matches(v: &Value, wanted: &str) -> bool {
    let (sys, code) = match wanted.split_once('|') {
        Some((s, c)) => (Some(s), c),
        None => (None, wanted),
    };
    let pair_matches = |s: Option<&str>, c: Option<&str>| -> bool {
        let sys_ok = match sys {
            None => true,
            Some("") => s.is_none(),
            Some(x) => s == Some(x),
        };
        let code_ok = code.is_empty() && sys.is_some_and(|s| !s.is_empty()) || c == Some(code);
        sys_ok && code_ok
    };
    match v {
        Value::String(s) => sys.is_none() && s == code,
        Value::Bool(b) => sys.is_none() && code == if *b { "true" } else { "false" },
        Value::Object(o) => {
            if let Some(Value::Array(codings)) = o.get("coding") {
                return codings.iter().any(|c| token_matches(c, wanted));
            }
            let s = o.get("system").and_then(Value::as_str);
            let c = o
                .get("code")
                .or_else(|| o.get("value"))
                .and_then(Value::as_str);
            pair_matches(s, c)
        }
        _ => false,
    }
}

/// Does `resource` satisfy every `param=value` of a scope constraint? Only token-style
/// parameters the guard can evaluate are supported; anything else is "no match" (fail closed).
pub fn resource_matches_constraint(resource: &Value, constraint: &[Param]) -> bool {
    let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else {
        return false;
    };
    constraint.iter().all(|p| {
        if p.modifier().is_some() {
            return false;
        }
        let Some(path) = token_path(rt, &p.name) else {
            return false;
        };
        let values = values_at(resource, &path);
        split_or(&p.value)
            .iter()
            .any(|want| values.iter().any(|v| token_matches(v, want)))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r4() -> Compartment {
        Compartment::default()
    }

    #[test]
    fn membership() {
        let obs = json!({"resourceType":"Observation","subject":{"reference":"Patient/a"},
            "performer":[{"reference":"Practitioner/p"}]});
        assert!(r4().resource_in(&obs, "a"));
        assert!(!r4().resource_in(&obs, "b"));
        assert!(r4().written_for(&obs, "a"));
        let shared = json!({"resourceType":"Observation","subject":{"reference":"Patient/b"},
            "performer":[{"reference":"Patient/a"}]});
        assert!(r4().resource_in(&shared, "a"));
        assert!(!r4().written_for(&shared, "a"));
        let abs =
            json!({"resourceType":"Observation","subject":{"reference":"https://x/Patient/a"}});
        assert!(!r4().resource_in(&abs, "a"));
        let ver =
            json!({"resourceType":"Condition","subject":{"reference":"Patient/a/_history/3"}});
        assert!(r4().resource_in(&ver, "a"));
        let pat = json!({"resourceType":"Patient","id":"a"});
        assert!(r4().resource_in(&pat, "a"));
        assert!(!r4().resource_in(&pat, "ab"));
        let care = json!({"resourceType":"CarePlan","subject":{"reference":"Patient/x"},
            "activity":[{"detail":{"performer":[{"reference":"Patient/a"}]}}]});
        assert!(r4().resource_in(&care, "a"));
        let nort = json!({"subject":{"reference":"Patient/a"}});
        assert!(!r4().resource_in(&nort, "a"));
        let unknown = json!({"resourceType":"Practitioner","id":"a"});
        assert!(!r4().resource_in(&unknown, "a"));
    }

    #[test]
    fn other_patients_named_anywhere() {
        let own = json!({"resourceType":"Device","patient":{"reference":"Patient/a"}});
        assert!(!names_other_patient(&own, "a"));
        for r in [
            "Patient/b",
            "Patient/b/_history/2",
            "https://x.example/fhir/Patient/b",
            "https://x.example/fhir/Patient/b/_history/1",
            "Patient?identifier=urn:x|1",
        ] {
            let v = json!({"resourceType":"Task","contained":[{"resourceType":"Bundle",
                "entry":[{"resource":{"resourceType":"AuditEvent","entity":[{"what":{"reference":r}}]}}]}]});
            assert!(names_other_patient(&v, "a"), "{r}");
        }
        for r in [
            "Patient/a",
            "https://x.example/Patient/a/_history/3",
            "#p1",
            "Practitioner/b",
            "RelatedPerson/Patient",
        ] {
            let v = json!({"resourceType":"Task","for":{"reference":r}});
            assert!(!names_other_patient(&v, "a"), "{r}");
        }
        // Patient writes: `link.other` is a compartment element (R4 Patient `link`).
        let linked =
            json!({"resourceType":"Patient","id":"a","link":[{"other":{"reference":"Patient/b"}}]});
        assert!(!r4().written_for(&linked, "a"));
        let related = json!({"resourceType":"Patient","id":"a","link":[{"other":{"reference":"RelatedPerson/r"}}]});
        assert!(r4().written_for(&related, "a"));
        let bin = json!({"resourceType":"Binary","securityContext":{"reference":"Patient/a"}});
        assert!(r4().resource_in(&bin, "a") && !r4().resource_in(&bin, "b"));
    }

    #[test]
    fn constraints() {
        let obs = json!({"resourceType":"Observation","status":"final","category":[{"coding":[
            {"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}]});
        let ok = |q: &str| {
            let params = super::super::query::parse_strict(q).unwrap();
            resource_matches_constraint(&obs, &params)
        };
        assert!(ok("category=laboratory"));
        assert!(ok(
            "category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
        ));
        assert!(ok(
            "category=http://terminology.hl7.org/CodeSystem/observation-category|"
        ));
        assert!(!ok("category=|laboratory"));
        assert!(!ok("category=vital-signs"));
        assert!(ok("category=vital-signs,laboratory"));
        assert!(ok("status=final"));
        assert!(!ok("status=final&category=vital-signs"));
        assert!(!ok("category:not=vital-signs"));
        assert!(!ok("subject.name=x"));
    }
}
