//! The one grant check: every decision runs over the token's SMART grants here
//! ([`DecisionInput::over_grants`]; operations, which may need several grants of one context
//! together, through [`DecisionInput::over_contexts`] and
//! [`DecisionInput::covers_every_type`]): any grant that allows wins, else the first denial.

use super::*;

impl DecisionInput<'_> {
    /// `Observation read` ...: what the detail strings start with.
    pub(super) fn what(&self) -> String {
        match &self.req.resource_type {
            Some(t) => format!("{} {t}", self.req.label()),
            None => format!("{} *", self.req.label()),
        }
    }

    pub(super) fn foreign(&self) -> Reason {
        if self.policy.hide_foreign_as_not_found {
            Reason::ResponseOutsideGrantHidden
        } else {
            Reason::CompartmentEscape
        }
    }

    /// RFC 6750 §3 `scope`: one scope per accepted context that would allow this.
    pub(super) fn required_scope(&self, rt: Option<&str>, letters: Perms) -> String {
        let t = rt.unwrap_or("*");
        self.policy
            .contexts
            .iter()
            .map(|c| format!("{}/{t}.{}", c.name(), letters.letters()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Has any unconstrained grant in `ctx` with `letters` on type `t`?
    pub(super) fn has_plain(&self, ctx: Context, t: &str, letters: Perms) -> bool {
        self.has_plain_on(ctx, Some(t), letters)
    }

    /// Has any unconstrained grant in `ctx` with `letters` on `rt` (`None` = needs a `*`
    /// grant, as in [`Self::over_grants`])? The grant test both share.
    pub(super) fn has_plain_on(&self, ctx: Context, rt: Option<&str>, letters: Perms) -> bool {
        self.grants
            .iter()
            .any(|g| g.context == ctx && grant_applies(g, rt, letters) && g.constraint.is_empty())
    }

    /// Whether every type in `types` is covered in `ctx` with `letters`, each by SOME
    /// unconstrained grant: several grants together may cover the set
    /// (`user/Patient.rs user/Observation.rs ...`). An operation whose result spans every type
    /// (`all_types`: `$everything`, `$export`) needs this; an empty set is covered.
    pub(super) fn covers_every_type<'t>(
        &self,
        ctx: Context,
        types: impl IntoIterator<Item = &'t str>,
        letters: Perms,
    ) -> bool {
        types
            .into_iter()
            .all(|t| self.has_plain_on(ctx, Some(t), letters))
    }

    /// The denial of a `patient/` grant when the token carries no (valid) patient.
    fn patient_missing(&self, rt: Option<&str>, letters: Perms) -> Denial {
        Denial {
            reason: Reason::PatientContextMissing,
            required_scope: Some(self.required_scope(rt, letters)),
            detail: format!(
                "{}: a patient/ grant needs a patient in context (claim `{}`)",
                self.what(),
                self.policy.patient_claim
            ),
        }
    }

    /// The patient `f` decides against in `ctx`: the patient in context for `patient`, none
    /// for other contexts; a `patient/` grant without a patient is a denial.
    fn pid_in(&self, ctx: Context, rt: Option<&str>, letters: Perms) -> Result<&str, Denial> {
        match (ctx, &self.pid) {
            (Context::Patient, None) => Err(self.patient_missing(rt, letters)),
            (Context::Patient, Some(p)) => Ok(p.as_str()),
            _ => Ok(""),
        }
    }

    /// Like [`Self::over_grants`], but `f` decides once per accepted context in which the token
    /// has any grant (policy order), not once per grant: an operation may need several grants
    /// of one context together ([`Self::covers_every_type`]). `f` gets the context and, for
    /// `patient`, the patient in context. Any Allow wins, then response checks, else the first
    /// denial.
    pub(super) fn over_contexts<F>(
        &self,
        rt: Option<&str>,
        letters: Perms,
        mut f: F,
    ) -> Result<Vec<Alternative>, Decision>
    where
        F: FnMut(Context, &str) -> Outcome,
    {
        let mut all = Combined::default();
        for ctx in &self.policy.contexts {
            if !self.grants.iter().any(|g| g.context == *ctx) {
                continue;
            }
            let outcome = match self.pid_in(*ctx, rt, letters) {
                Err(d) => Outcome::Deny(d),
                // NeedBody: a `POST` operation whose `Parameters` body must be read.
                Ok(pid) => f(*ctx, pid),
            };
            if all.add(self, rt, letters, outcome) {
                return Err(Decision::Allow);
            }
        }
        all.finish(self, rt, letters)
    }

    /// Runs `f` over every grant with `letters` on `rt` (`None` = needs a `*` grant) and
    /// combines: any Allow wins, then NeedBody, then response checks, else the first denial.
    pub(super) fn over_grants<F>(
        &self,
        rt: Option<&str>,
        letters: Perms,
        mut f: F,
    ) -> Result<Vec<Alternative>, Decision>
    where
        F: FnMut(&SmartScope, &str) -> Outcome,
    {
        let mut all = Combined::default();
        for g in &self.grants {
            if !grant_applies(g, rt, letters) {
                continue;
            }
            let outcome = match self.pid_in(g.context, rt, letters) {
                Err(d) => Outcome::Deny(d),
                Ok(pid) => f(g, pid),
            };
            if all.add(self, rt, letters, outcome) {
                return Err(Decision::Allow);
            }
        }
        all.finish(self, rt, letters)
    }

    /// Like `over_grants` where no grant can ask for a response check.
    pub(super) fn over_grants_request_only<F>(
        &self,
        rt: Option<&str>,
        letters: Perms,
        f: F,
    ) -> Decision
    where
        F: FnMut(&SmartScope, &str) -> Outcome,
    {
        match self.over_grants(rt, letters, f) {
            Err(d) => d,
            // Not produced by the callers of this function; refuse rather than guess.
            Ok(_) => deny(
                Reason::UnknownFhirRequest,
                format!("{}: undecidable", self.what()),
            ),
        }
    }

    pub(super) fn grant_denial(&self, reason: Reason, msg: &str) -> Outcome {
        Outcome::Deny(denial(reason, format!("{}: {msg}", self.what())))
    }
}

/// The one grant test: `g` carries `letters` on `rt` (`None` = only a `*` grant does).
fn grant_applies(g: &SmartScope, rt: Option<&str>, letters: Perms) -> bool {
    let type_ok = match rt {
        Some(t) => g.covers_type(t),
        None => g.is_wildcard(),
    };
    type_ok && g.perms.contains(letters)
}

/// How the outcomes of several grants (or contexts) combine, for [`DecisionInput::over_grants`]
/// and [`DecisionInput::over_contexts`]: any Allow wins, then NeedBody, then response checks,
/// else the first denial (or "no granted scope allows it").
#[derive(Default)]
struct Combined {
    checks: Vec<Alternative>,
    need_body: bool,
    first: Option<Denial>,
}

impl Combined {
    /// Adds one outcome; true when it is an Allow (the caller stops there).
    fn add(
        &mut self,
        input: &DecisionInput<'_>,
        rt: Option<&str>,
        letters: Perms,
        o: Outcome,
    ) -> bool {
        match o {
            Outcome::Allow => return true,
            Outcome::Check(a) => self.checks.push(a),
            Outcome::NeedBody => self.need_body = true,
            Outcome::Deny(mut d) => {
                if d.reason == Reason::InsufficientScope && d.required_scope.is_none() {
                    d.required_scope = Some(input.required_scope(rt, letters));
                }
                self.first.get_or_insert(d);
            }
        }
        false
    }

    fn finish(
        self,
        input: &DecisionInput<'_>,
        rt: Option<&str>,
        letters: Perms,
    ) -> Result<Vec<Alternative>, Decision> {
        if self.need_body {
            return Err(Decision::NeedBody);
        }
        if !self.checks.is_empty() {
            return Ok(self.checks);
        }
        Err(Decision::Deny(self.first.unwrap_or_else(|| Denial {
            reason: Reason::InsufficientScope,
            required_scope: Some(input.required_scope(rt, letters)),
            detail: format!("{}: no granted scope allows it", input.what()),
        })))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::fhir::scope::{parse_scope, ParsedScope};

    const POLICY: &str = r#"{"base_path": "/fhir", "scope_contexts": ["patient", "user", "system"],
        "resource_types": ["Patient", "Observation", "Condition"],
        "operations": [{"name": "$everything", "levels": ["instance"], "resource_types": ["Patient"],
                        "permissions": "rs", "all_types": true}]}"#;

    fn grants_of(scopes: &str) -> Vec<SmartScope> {
        scopes
            .split_whitespace()
            .filter_map(|s| match parse_scope(s) {
                ParsedScope::Smart(g) => Some(g),
                ParsedScope::NotSmart => None,
                ParsedScope::Malformed => panic!("{s}: malformed"),
            })
            .collect()
    }

    /// Runs `f` on the decision input of `GET target` with `scopes` and patient `pid`.
    fn with<R>(
        scopes: &str,
        pid: Option<&str>,
        target: &str,
        f: impl FnOnce(&DecisionInput<'_>) -> R,
    ) -> R {
        let policy = FhirPolicy::from_section_json(POLICY.as_bytes()).unwrap();
        let req = classify(&policy.base_path, "GET", target).unwrap();
        let cx = DecisionInput {
            policy: &policy,
            grants: grants_of(scopes),
            pid: pid.map(str::to_string),
            req: &req,
            body: None,
            if_none_exist: None,
            content_type: None,
            raw_query: "",
        };
        f(&cx)
    }

    const TYPES: [&str; 3] = ["Patient", "Observation", "Condition"];

    fn rs() -> Perms {
        Perms::R.union(Perms::S)
    }

    #[test]
    fn every_type_covered_by_one_wildcard_grant() {
        with("user/*.rs", None, "/fhir/Patient/p1", |cx| {
            assert!(cx.covers_every_type(Context::User, TYPES, rs()));
            assert!(
                !cx.covers_every_type(Context::System, TYPES, rs()),
                "other context"
            );
            assert!(
                !cx.covers_every_type(Context::User, TYPES, Perms::ALL),
                "letters"
            );
        });
    }

    #[test]
    fn every_type_covered_by_several_grants_together() {
        let scopes = "user/Patient.rs user/Observation.rs user/Condition.rs";
        with(scopes, None, "/fhir/Patient/p1", |cx| {
            assert!(cx.covers_every_type(Context::User, TYPES, rs()));
            assert!(
                !cx.has_plain_on(Context::User, None, rs()),
                "no single * grant"
            );
        });
        // One type missing, or covered only by a constrained grant or another context: no.
        let partial = "user/Patient.rs user/Observation.rs system/Condition.rs";
        with(partial, None, "/fhir/Patient/p1", |cx| {
            assert!(!cx.covers_every_type(Context::User, TYPES, rs()));
        });
        let constrained =
            "user/Patient.rs user/Observation.rs user/Condition.rs?clinical-status=active";
        with(constrained, None, "/fhir/Patient/p1", |cx| {
            assert!(!cx.covers_every_type(Context::User, TYPES, rs()));
        });
        // Letters are per grant: `r` on one and `s` on another do not make `rs`.
        let split = "user/*.r user/*.s";
        with(split, None, "/fhir/Patient/p1", |cx| {
            assert!(!cx.covers_every_type(Context::User, TYPES, rs()));
        });
        with("", None, "/fhir/Patient/p1", |cx| {
            assert!(cx.covers_every_type(Context::User, [], rs()), "empty set");
        });
    }

    #[test]
    fn over_contexts_decides_once_per_context_with_grants() {
        // The multi-grant case: three user grants allow together, decided once.
        let scopes = "user/Patient.rs user/Observation.rs user/Condition.rs";
        let mut calls = Vec::new();
        let d = with(scopes, None, "/fhir/Patient/p1/$everything", |cx| {
            cx.over_contexts(None, rs(), |ctx, _| {
                calls.push(ctx);
                if cx.covers_every_type(ctx, TYPES, rs()) {
                    Outcome::Allow
                } else {
                    Outcome::Deny(denial(Reason::InsufficientScope, "x"))
                }
            })
        });
        assert_eq!(d, Err(Decision::Allow));
        assert_eq!(calls, vec![Context::User]);
    }

    #[test]
    fn over_contexts_combines_checks_denials_and_missing_patient() {
        // Patient grant gives a check; a user grant that allows wins over it.
        let both = "patient/*.rs user/*.rs";
        let d = with(both, Some("p1"), "/fhir/Patient/p1/$everything", |cx| {
            cx.over_contexts(None, rs(), |ctx, pid| match ctx {
                Context::Patient => Outcome::Check(Alternative {
                    patient: Some(pid.to_string()),
                    constraint: Vec::new(),
                }),
                _ => Outcome::Allow,
            })
        });
        assert_eq!(d, Err(Decision::Allow));
        let only_patient = with("patient/*.rs", Some("p1"), "/fhir/Patient/p1", |cx| {
            cx.over_contexts(None, rs(), |_, pid| {
                Outcome::Check(Alternative {
                    patient: Some(pid.to_string()),
                    constraint: Vec::new(),
                })
            })
        });
        assert_eq!(only_patient.unwrap()[0].patient.as_deref(), Some("p1"));
        // No patient in context: the patient context is not asked; its denial comes first.
        let d = with(
            "patient/*.rs user/Patient.rs",
            None,
            "/fhir/Patient/p1",
            |cx| {
                cx.over_contexts(None, rs(), |ctx, _| {
                    assert_ne!(ctx, Context::Patient);
                    Outcome::Deny(denial(Reason::InsufficientScope, "x"))
                })
            },
        );
        match d {
            Err(Decision::Deny(den)) => {
                assert_eq!(den.reason, Reason::PatientContextMissing);
                assert_eq!(
                    den.required_scope.as_deref(),
                    Some("patient/*.rs user/*.rs system/*.rs")
                );
            }
            other => panic!("{other:?}"),
        }
        // No grant in any context: insufficient_scope naming every accepted context.
        let d = with("openid", None, "/fhir/Patient/p1", |cx| {
            cx.over_contexts(None, rs(), |_, _| panic!("no context has a grant"))
        });
        match d {
            Err(Decision::Deny(den)) => assert_eq!(den.reason, Reason::InsufficientScope),
            other => panic!("{other:?}"),
        }
    }
}
