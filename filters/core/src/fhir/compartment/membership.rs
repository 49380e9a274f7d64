//! The patient compartment the policy decides with ([`Compartment`]): which types are in it,
//! by which parameters, and whether a resource body is in patient X's compartment.

use serde_json::Value;

use super::body::{is_patient_ref, referenced_patient, values_at};
use super::definition::PATIENT_COMPARTMENT;

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

    /// The patients a resource names (docs/audit.md "Patients"): a Patient's own id, the
    /// `Patient` references of its compartment elements (R4 compartmentdefinition-patient),
    /// and those of every `entry.resource` of a Bundle. Pushed to `out`; `false` when a
    /// reference names a patient it cannot resolve (logical, conditional `Patient?...`).
    pub fn patients_named(&self, v: &Value, out: &mut Vec<String>) -> bool {
        let Some(rt) = v.get("resourceType").and_then(Value::as_str) else {
            return true;
        };
        let mut resolved = true;
        if rt == "Bundle" {
            for r in values_at(v, "entry.resource") {
                resolved &= self.patients_named(r, out);
            }
            return resolved;
        }
        if rt == "Patient" {
            out.extend(v.get("id").and_then(Value::as_str).map(str::to_string));
        }
        for r in self.patient_refs(v, rt) {
            match referenced_patient(&r) {
                Some("") => resolved = false,
                Some(id) => out.push(id.to_string()),
                None => resolved &= !r.is_empty(),
            }
        }
        resolved
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
