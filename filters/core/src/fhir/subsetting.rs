//! `_summary` and `_elements` (FHIR R4 search.html#summary, #elements) on a read or search
//! whose answer is checked: the server must keep the elements the check reads (compartment
//! elements, constraint elements), or the patient's own data is refused. R4 says servers
//! SHOULD return the mandatory elements and MAY return more than asked, so the guard adds
//! what it needs to the request's `_elements` ([`rewrite_elements`], sent upstream by the
//! filter); where it cannot, the request is refused as `subsetting_hides_compartment`
//! (docs/checks.md §3 "subsetted answers").

use super::compartment::{constraint_elements, Compartment};
use super::query::{self, include_parts, Param};
use super::response_check::ResponseCheck;

/// The top-level elements `check` reads on the resources of the answer: `None` when the types
/// are not known from the request (`Patient/[id]/*`, `$everything`).
pub fn needed_elements(
    cm: &Compartment,
    check: &ResponseCheck,
    params: &[Param],
) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |names: Vec<String>| {
        for n in names {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    };
    let of_type = |t: &str| -> Vec<String> {
        // Patient is decided on `id`, which every subset keeps (R4 search.html#summary).
        if t == "Patient" {
            return Vec::new();
        }
        cm.elements(t).into_iter().map(str::to_string).collect()
    };
    match check {
        ResponseCheck::Resource(rc) => {
            for a in &rc.alternatives {
                if a.patient.is_some() {
                    add(of_type(&rc.resource_type));
                }
                add(constraint_elements(&rc.resource_type, &a.constraint));
            }
        }
        ResponseCheck::Searchset(sc) => {
            let t = sc.resource_type.as_deref()?;
            if sc.non_compartment_types_pass {
                return None;
            }
            add(of_type(t));
            for c in &sc.constraints {
                add(constraint_elements(t, c));
            }
            // What included entries are checked on: their compartment elements, and for an
            // included Provenance its `target`.
            for p in params
                .iter()
                .filter(|p| matches!(p.base_name(), "_include" | "_revinclude"))
            {
                for v in p.or_values() {
                    match (p.base_name(), include_parts(&v)) {
                        ("_revinclude", Some(("Provenance", _, _))) => {
                            add(vec!["target".to_string()])
                        }
                        ("_revinclude", Some((src, _, _))) => add(of_type(src)),
                        ("_include", Some((_, _, Some(target)))) => add(of_type(target)),
                        _ => return None,
                    }
                }
            }
        }
        // A page link carries no `_elements`; Bundle entries are decided one by one.
        ResponseCheck::Page(_) | ResponseCheck::BundleEntries(_) => {}
    }
    Some(out)
}

/// Whether the answer to a checked request keeps what its check reads. `query` and `form` are
/// the request's parameters; `rewritable`: the query's `_elements` can still be extended
/// (the request's own headers, not a Bundle entry or a search whose body came later).
pub fn check(
    cm: &Compartment,
    check: &ResponseCheck,
    query: &[Param],
    form: &[Param],
    rewritable: bool,
) -> Result<(), &'static str> {
    let all: Vec<Param> = query.iter().chain(form).cloned().collect();
    let subsetting = |p: &&Param| matches!(p.base_name(), "_summary" | "_elements");
    if !all.iter().any(|p| subsetting(&p)) {
        return Ok(());
    }
    let needed = needed_elements(cm, check, &all);
    let needs_some = needed.as_ref().is_none_or(|n| !n.is_empty());
    for p in all.iter().filter(subsetting) {
        if p.modifier().is_some() {
            // `_elements:exclude` (HAPI FHIR) and the like: anything may be left out.
            return Err("a modifier on `_summary`/`_elements` can leave out what is checked");
        }
        if p.base_name() == "_summary" {
            match p.value.as_str() {
                // `count` has no entries; `data` drops only `text`; `false` is everything.
                // `true`: the summary elements (Σ), which hold the compartment reference of
                // the clinical types (e.g. Observation.subject); a resource without it is
                // refused by the response check.
                "count" | "data" | "false" | "true" => {}
                "text" if !needs_some => {}
                _ => {
                    return Err(
                        "`_summary` would leave out the elements the compartment check reads",
                    )
                }
            }
        }
    }
    let elements_in = |ps: &[Param]| ps.iter().any(|p| p.base_name() == "_elements");
    if !elements_in(&all) || !needs_some {
        return Ok(());
    }
    if needed.is_none() {
        return Err("`_elements` on a search whose types are not known from the request");
    }
    if elements_in(form) || !rewritable {
        return Err("`_elements` here cannot be extended with the elements the check reads");
    }
    Ok(())
}

/// `path_with_query` with every `_elements` in its query extended by the `needed` elements it
/// lacks (R4 search.html#elements: the server may return more than asked). `None`: nothing
/// to change. The rest of the target is kept byte for byte.
pub fn rewrite_elements(path_with_query: &str, needed: &[String]) -> Option<String> {
    let (path, q) = path_with_query.split_once('?')?;
    let mut changed = false;
    let segs: Vec<String> = q
        .split('&')
        .map(|seg| {
            let (n, v) = seg.split_once('=').unwrap_or((seg, ""));
            if query::percent_decode(n).as_deref() != Some("_elements") {
                return seg.to_string();
            }
            let have: Vec<String> = query::percent_decode(v)
                .unwrap_or_default()
                .split(',')
                .map(|e| e.trim().to_string())
                .collect();
            let missing: Vec<&str> = needed
                .iter()
                .filter(|e| !have.contains(e))
                .map(String::as_str)
                .collect();
            if missing.is_empty() {
                return seg.to_string();
            }
            changed = true;
            let sep = if v.is_empty() { "" } else { "," };
            format!("{n}={v}{sep}{}", missing.join(","))
        })
        .collect();
    changed.then(|| format!("{path}?{}", segs.join("&")))
}

/// The `:path` a checked request is sent upstream with, when its `_elements` must grow.
pub fn rewritten_path(
    cm: &Compartment,
    check: &ResponseCheck,
    path_with_query: &str,
) -> Option<String> {
    let q = path_with_query.split_once('?')?.1;
    let params = query::parse(q)?;
    let needed = needed_elements(cm, check, &params)?;
    if needed.is_empty() {
        return None;
    }
    rewrite_elements(path_with_query, &needed)
}
