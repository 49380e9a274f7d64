//! The one grant check: every decision runs over the token's SMART grants here
//! ([`DecisionInput::over_grants`]): any grant that allows wins, else the first denial.

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
        let mut checks = Vec::new();
        let mut need_body = false;
        let mut first: Option<Denial> = None;
        for g in &self.grants {
            if !grant_applies(g, rt, letters) {
                continue;
            }
            let pid = match (g.context, &self.pid) {
                (Context::Patient, None) => {
                    first.get_or_insert(Denial {
                        reason: Reason::PatientContextMissing,
                        required_scope: Some(self.required_scope(rt, letters)),
                        detail: format!(
                            "{}: a patient/ grant needs a patient in context (claim `{}`)",
                            self.what(),
                            self.policy.patient_claim
                        ),
                    });
                    continue;
                }
                (Context::Patient, Some(p)) => p.as_str(),
                _ => "",
            };
            match f(g, pid) {
                Outcome::Allow => return Err(Decision::Allow),
                Outcome::Check(a) => checks.push(a),
                Outcome::NeedBody => need_body = true,
                Outcome::Deny(mut d) => {
                    if d.reason == Reason::InsufficientScope && d.required_scope.is_none() {
                        d.required_scope = Some(self.required_scope(rt, letters));
                    }
                    first.get_or_insert(d);
                }
            }
        }
        if need_body {
            return Err(Decision::NeedBody);
        }
        if !checks.is_empty() {
            return Ok(checks);
        }
        Err(Decision::Deny(first.unwrap_or_else(|| Denial {
            reason: Reason::InsufficientScope,
            required_scope: Some(self.required_scope(rt, letters)),
            detail: format!("{}: no granted scope allows it", self.what()),
        })))
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
