//! Which filter a plugin is, by its proxy-wasm root id (Envoy `root_id`, Istio `pluginName`).
//! The one module (`filters/guard`, `fapi_guard.wasm`) holds the three filters and attaches
//! each plugin as the filter its root id names; the names are those of `filters/registry.json`
//! (`root_id`), checked by `tests/root_id.rs`. Fail closed: a missing or unknown root id is an
//! error the module refuses to configure with (docs/checks.md, "One module").

/// The filters of the guard, in chain order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterKind {
    Token,
    Dpop,
    FhirScope,
}

/// Root id of each filter (filters/registry.json `root_id`).
pub const ROOT_IDS: [(&str, FilterKind); 3] = [
    ("fapi_token", FilterKind::Token),
    ("fapi_dpop", FilterKind::Dpop),
    ("fapi_fhir_scope", FilterKind::FhirScope),
];

/// Longest root id quoted back in an error (it comes from the proxy's configuration, not a
/// client, but a log line stays short).
const QUOTE_MAX: usize = 64;

/// The filter a plugin with this root id is. `None` = the host gave no root id.
pub fn filter_for_root_id(root_id: Option<&[u8]>) -> Result<FilterKind, String> {
    let known = ROOT_IDS.map(|(id, _)| id).join(", ");
    let Some(raw) = root_id.filter(|r| !r.is_empty()) else {
        return Err(format!(
            "no plugin root_id: the one module (fapi_guard.wasm) needs root_id (Istio pluginName) set to one of {known}"
        ));
    };
    if let Some((_, kind)) = ROOT_IDS.iter().find(|(id, _)| id.as_bytes() == raw) {
        return Ok(*kind);
    }
    let shown: String = String::from_utf8_lossy(raw)
        .chars()
        .take(QUOTE_MAX)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    Err(format!(
        "unknown plugin root_id `{shown}`: the one module (fapi_guard.wasm) attaches only {known}"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_root_id_names_its_filter() {
        assert_eq!(
            filter_for_root_id(Some(b"fapi_token")),
            Ok(FilterKind::Token)
        );
        assert_eq!(filter_for_root_id(Some(b"fapi_dpop")), Ok(FilterKind::Dpop));
        assert_eq!(
            filter_for_root_id(Some(b"fapi_fhir_scope")),
            Ok(FilterKind::FhirScope)
        );
    }

    #[test]
    fn missing_empty_or_unknown_is_refused_with_the_problem_named() {
        for missing in [None, Some(&b""[..])] {
            let e = filter_for_root_id(missing).unwrap_err();
            assert!(e.starts_with("no plugin root_id"), "{e}");
        }
        for bad in [
            &b"fapi_tokenx"[..],
            b"FAPI_TOKEN",
            b"token",
            b"fapi_token\0",
            b" fapi_dpop",
        ] {
            let e = filter_for_root_id(Some(bad)).unwrap_err();
            assert!(e.starts_with("unknown plugin root_id `"), "{e}");
            assert!(e.contains("fapi_token, fapi_dpop, fapi_fhir_scope"), "{e}");
        }
        let long = vec![b'a'; 1000];
        let e = filter_for_root_id(Some(&long)).unwrap_err();
        assert!(e.len() < 250, "{e}");
        let e = filter_for_root_id(Some(b"a\nb\xff")).unwrap_err();
        assert!(e.contains("`a?b?`"), "{e}");
    }
}
