//! Which filter a plugin is, by its proxy-wasm root id (Envoy `root_id`, Istio `pluginName`).
//! The one module (`filters/guard`, `fapi_guard.wasm`) is attached as the chain plugin
//! (`fapi_guard`, `fapi_guard:<steps>`): the names are those of `filters/registry.json`
//! (`module.chain_root_id` and the steps' `envoy` names), checked by `tests/root_id.rs`. The
//! single-filter root ids (`ROOT_IDS`) are still accepted by the module but no longer rendered,
//! generated or listed in the registry.
//! Fail closed: a missing or unknown root id is an error the module refuses to configure with
//! (docs/checks.md, "One pipeline").

/// The filters of the guard, in chain order, and the chain plugin that runs all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterKind {
    Token,
    Dpop,
    FhirScope,
    /// One plugin running the filters as steps of one HTTP context, in chain order
    /// (docs/checks.md, "One pipeline": the chain plugin).
    Chain(ChainSteps),
}

/// Which filters the chain plugin runs as its steps (always in chain order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainSteps {
    pub token: bool,
    pub dpop: bool,
    pub fhir_scope: bool,
    /// The partition step, alone ([`PARTITION_ROOT_ID`]): no check, only the routing key.
    pub partition: bool,
}

impl ChainSteps {
    /// The whole chain: token, DPoP, FHIR scope.
    pub const ALL: ChainSteps = ChainSteps {
        token: true,
        dpop: true,
        fhir_scope: true,
        partition: false,
    };

    /// The partition step alone (docs/dpop.md, "Replay across replicas": `partitioned`).
    pub const PARTITION: ChainSteps = ChainSteps {
        token: false,
        dpop: false,
        fhir_scope: false,
        partition: true,
    };

    /// The steps, in chain order.
    pub fn kinds(&self) -> Vec<FilterKind> {
        [
            (self.token, FilterKind::Token),
            (self.dpop, FilterKind::Dpop),
            (self.fhir_scope, FilterKind::FhirScope),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect()
    }
}

/// Root id of the chain plugin (filters/registry.json `module.chain_root_id`): the whole
/// chain. `fapi_guard:<steps>` runs only the named steps (comma-separated, each once, in chain
/// order: e.g. `fapi_guard:token,dpop` for an API without a `fhir` section).
pub const CHAIN_ROOT_ID: &str = "fapi_guard";

/// Root id of the partition step (filters/registry.json `module.partition_root_id`), run alone
/// at the layer in front of an API's replicas: it sets the routing key of the proof and checks
/// nothing (docs/dpop.md, "Replay across replicas").
pub const PARTITION_ROOT_ID: &str = "fapi_guard:partition";

/// The step names of `fapi_guard:<steps>` (filters/registry.json `envoy`), in chain order.
pub const STEP_NAMES: [(&str, FilterKind); 3] = [
    ("token", FilterKind::Token),
    ("dpop", FilterKind::Dpop),
    ("fhir_scope", FilterKind::FhirScope),
];

/// The steps of `fapi_guard:<list>` (`list` after the colon), or why not.
fn chain_steps(list: &[u8]) -> Result<ChainSteps, &'static str> {
    let mut steps = ChainSteps {
        partition: false,
        ..ChainSteps::PARTITION
    };
    // Position in chain order of the last step named: each later one must come after it.
    let mut last: Option<usize> = None;
    for name in list.split(|b| *b == b',') {
        let Some(pos) = STEP_NAMES.iter().position(|(n, _)| n.as_bytes() == name) else {
            return Err("a step that is not token, dpop or fhir_scope");
        };
        if last.is_some_and(|l| pos <= l) {
            return Err("steps repeated or out of chain order (token, dpop, fhir_scope)");
        }
        last = Some(pos);
        match STEP_NAMES.get(pos).map(|(_, k)| *k) {
            Some(FilterKind::Token) => steps.token = true,
            Some(FilterKind::Dpop) => steps.dpop = true,
            Some(FilterKind::FhirScope) => steps.fhir_scope = true,
            _ => return Err("a step that is not token, dpop or fhir_scope"),
        }
    }
    Ok(steps)
}

/// Root id of each filter attached alone (a layout of earlier versions; nothing renders it).
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
    let known = format!(
        "{}, {CHAIN_ROOT_ID} or {CHAIN_ROOT_ID}:<steps>",
        ROOT_IDS.map(|(id, _)| id).join(", ")
    );
    let Some(raw) = root_id.filter(|r| !r.is_empty()) else {
        return Err(format!(
            "no plugin root_id: the one module (fapi_guard.wasm) needs root_id (Istio pluginName) set to one of {known}"
        ));
    };
    if let Some((_, kind)) = ROOT_IDS.iter().find(|(id, _)| id.as_bytes() == raw) {
        return Ok(*kind);
    }
    if raw == CHAIN_ROOT_ID.as_bytes() {
        return Ok(FilterKind::Chain(ChainSteps::ALL));
    }
    if raw == PARTITION_ROOT_ID.as_bytes() {
        return Ok(FilterKind::Chain(ChainSteps::PARTITION));
    }
    let shown: String = String::from_utf8_lossy(raw)
        .chars()
        .take(QUOTE_MAX)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if let Some(list) = raw
        .strip_prefix(CHAIN_ROOT_ID.as_bytes())
        .and_then(|r| r.strip_prefix(b":"))
    {
        return chain_steps(list).map(FilterKind::Chain).map_err(|why| {
            format!("plugin root_id `{shown}`: the chain plugin's steps name {why}")
        });
    }
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
        assert_eq!(
            filter_for_root_id(Some(b"fapi_guard")),
            Ok(FilterKind::Chain(ChainSteps::ALL))
        );
    }

    #[test]
    fn chain_steps_are_named_once_in_chain_order() {
        let steps = |id: &[u8]| match filter_for_root_id(Some(id)) {
            Ok(FilterKind::Chain(s)) => Ok(s.kinds()),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e),
        };
        use FilterKind::*;
        assert_eq!(steps(b"fapi_guard"), Ok(vec![Token, Dpop, FhirScope]));
        assert_eq!(
            steps(b"fapi_guard:token,dpop,fhir_scope"),
            Ok(vec![Token, Dpop, FhirScope])
        );
        assert_eq!(steps(b"fapi_guard:token,dpop"), Ok(vec![Token, Dpop]));
        assert_eq!(
            steps(b"fapi_guard:token,fhir_scope"),
            Ok(vec![Token, FhirScope])
        );
        assert_eq!(steps(b"fapi_guard:token"), Ok(vec![Token]));
        assert_eq!(steps(b"fapi_guard:dpop"), Ok(vec![Dpop]));
        assert_eq!(
            filter_for_root_id(Some(b"fapi_guard:partition")),
            Ok(Chain(ChainSteps::PARTITION))
        );
        // The partition step runs alone, never as a step of the chain.
        for not_alone in [
            &b"fapi_guard:token,partition"[..],
            b"fapi_guard:partition,dpop",
        ] {
            let e = steps(not_alone).unwrap_err();
            assert!(
                e.contains("a step that is not token, dpop or fhir_scope"),
                "{e}"
            );
        }
        for bad in [
            &b"fapi_guard:"[..],
            b"fapi_guard:dpop,token",
            b"fapi_guard:token,token",
            b"fapi_guard:token,,dpop",
            b"fapi_guard:token,",
            b"fapi_guard: token",
            b"fapi_guard:TOKEN",
            b"fapi_guard:fhir-scope",
            b"fapi_guard:token,dpop,fhir_scope,token",
        ] {
            let e = steps(bad).unwrap_err();
            assert!(e.contains("the chain plugin's steps name"), "{e}");
        }
        // Not the chain's prefix: an unknown root id.
        let e = steps(b"fapi_guardx").unwrap_err();
        assert!(e.starts_with("unknown plugin root_id"), "{e}");
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
            b"fapi_guard ",
            b"FAPI_GUARD",
            b"fapi_guar",
        ] {
            let e = filter_for_root_id(Some(bad)).unwrap_err();
            assert!(e.starts_with("unknown plugin root_id `"), "{e}");
            assert!(
                e.contains(
                    "fapi_token, fapi_dpop, fapi_fhir_scope, fapi_guard or fapi_guard:<steps>"
                ),
                "{e}"
            );
        }
        let long = vec![b'a'; 1000];
        let e = filter_for_root_id(Some(&long)).unwrap_err();
        assert!(e.len() < 250, "{e}");
        let e = filter_for_root_id(Some(b"a\nb\xff")).unwrap_err();
        assert!(e.contains("`a?b?`"), "{e}");
    }
}
