//! Reading a resource body: the values at an element path, and the patient references it
//! holds (`Patient/<id>`, absolute or relative).

use serde_json::Value;

/// Every value found at a dot-separated element path, walking through arrays.
pub(super) fn values_at<'a>(v: &'a Value, path: &str) -> Vec<&'a Value> {
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
pub(super) fn referenced_patient(reference: &str) -> Option<&str> {
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
