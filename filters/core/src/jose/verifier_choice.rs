//! Which signature verifier a filter uses, decided once at start (`docs/checks.md`, "Signature
//! verifier at start"): from the Wasm VM environment switch `FAPI_GUARD_VERIFIER` and whether
//! the host answered a probe of its `verify_signature` foreign function. Pure, so the host
//! glue only probes, logs the returned line and sets the gauge.

/// The decision and what to say about it at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierChoice {
    /// ES*/RS* go to the host's `verify_signature` (PS*/EdDSA are always software).
    pub use_host: bool,
    /// The one start log line (no secrets: names and settings only).
    pub line: String,
    /// Log it as a warning (an unknown switch value, or a host without the function when
    /// the host path was asked for) rather than as information.
    pub warn: bool,
}

/// `env`: the value of `FAPI_GUARD_VERIFIER` (`None` when unset). `host_has_function`: the
/// host did not answer `NotFound` when asked for `function`.
pub fn choose_verifier(
    env: Option<&str>,
    function: &str,
    host_has_function: bool,
) -> VerifierChoice {
    let (want_host, unknown) = match env {
        Some("software") => (false, false),
        None | Some("host") => (true, false),
        Some(_) => (true, true),
    };
    let prefix = if unknown {
        "verifier: FAPI_GUARD_VERIFIER has an unknown value (use host or software), using host; "
    } else {
        "verifier: "
    };
    let (use_host, rest) = match (want_host, host_has_function) {
        (false, _) => (
            false,
            "FAPI_GUARD_VERIFIER=software, software verifier for all algorithms".to_string(),
        ),
        (true, true) => (
            true,
            format!(
                "host {function} for ES256/ES384/ES512/RS256/RS384/RS512, software verifier for PS256/PS384/PS512/EdDSA"
            ),
        ),
        (true, false) => (
            false,
            format!("host {function} unavailable, software verifier for all algorithms"),
        ),
    };
    VerifierChoice {
        use_host,
        line: format!("{prefix}{rest}"),
        warn: unknown || (want_host && !host_has_function),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_and_host() {
        let f = "verify_signature";
        for (env, has, use_host, warn, line) in [
            (None, true, true, false, "verifier: host verify_signature for ES256/ES384/ES512/RS256/RS384/RS512, software verifier for PS256/PS384/PS512/EdDSA"),
            (Some("host"), true, true, false, "verifier: host verify_signature for"),
            (None, false, false, true, "verifier: host verify_signature unavailable, software verifier for all algorithms"),
            (Some("host"), false, false, true, "verifier: host verify_signature unavailable"),
            (Some("software"), true, false, false, "verifier: FAPI_GUARD_VERIFIER=software, software verifier for all algorithms"),
            (Some("software"), false, false, false, "verifier: FAPI_GUARD_VERIFIER=software"),
            (Some("Software"), true, true, true, "verifier: FAPI_GUARD_VERIFIER has an unknown value"),
            (Some(""), false, false, true, "unknown value (use host or software), using host; host verify_signature unavailable"),
        ] {
            let c = choose_verifier(env, f, has);
            assert_eq!(c.use_host, use_host, "{env:?} {has}");
            assert_eq!(c.warn, warn, "{env:?} {has}");
            assert!(c.line.contains(line), "{env:?} {has}: {}", c.line);
        }
    }

    #[test]
    fn a_missing_host_function_never_selects_the_host() {
        for env in [None, Some("host"), Some("software"), Some("x")] {
            assert!(!choose_verifier(env, "verify_signature", false).use_host);
        }
    }
}
