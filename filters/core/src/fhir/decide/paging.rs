//! Pages of an earlier search, fetched by the server's own paging link (HAPI FHIR's
//! `[base]?_getpages=...`, [`is_paging_link`](crate::fhir::interaction::is_paging_link)). The
//! link names a search the server keeps, not its criteria, and the guard keeps no state
//! between requests: the page is allowed to anyone who may search, and every entry of the
//! answer is decided against the token's grants ([`PageCheck`], docs/checks.md §3 "paging").
//!
//! Servers that page with the original query plus a cursor (Microsoft `ct`, IBM `_page`,
//! Medplum `_offset`) need nothing here: their pages are type searches decided as such.

use super::*;
use crate::fhir::interaction::{PAGING_ACTION, PAGING_PARAMS};

/// `GET [base]?_getpages=...`: one `_getpages`, only the parameters HAPI FHIR reads on it, and
/// a grant with `s`; the answer is checked entry by entry.
pub(super) fn page(cx: &DecisionInput<'_>) -> Decision {
    let params = &cx.req.params;
    let repeated = PAGING_PARAMS
        .iter()
        .any(|n| params.iter().filter(|p| p.name == *n).count() > 1);
    let unknown = params
        .iter()
        .any(|p| !PAGING_PARAMS.contains(&p.name.as_str()));
    let empty_action = params
        .iter()
        .any(|p| p.name == PAGING_ACTION && p.value.is_empty());
    if repeated || unknown || empty_action {
        return deny(
            Reason::UnknownFhirRequest,
            format!(
                "{}: a paging link carries parameters the server does not read on it",
                cx.what()
            ),
        );
    }
    if !cx.grants.iter().any(|g| g.perms.contains(Perms::S)) {
        return Decision::Deny(Denial {
            reason: Reason::InsufficientScope,
            required_scope: Some(cx.required_scope(None, Perms::S)),
            detail: format!("{}: no granted scope allows a search", cx.what()),
        });
    }
    // A `user/*.rs` or `system/*.rs` grant allows whatever a page holds, as it allows any
    // system search: nothing to check on the answer.
    let open = Perms::S.union(Perms::R);
    if cx.grants.iter().any(|g| {
        g.context != Context::Patient
            && g.is_wildcard()
            && g.constraint.is_empty()
            && g.perms.contains(open)
    }) {
        return Decision::Allow;
    }
    let grants: Vec<PageGrant> = cx
        .grants
        .iter()
        .filter(|g| g.perms.contains(Perms::S) || g.perms.contains(Perms::R))
        .filter_map(|g| {
            let patient = match g.context {
                // A `patient/` grant without a patient in context allows nothing.
                Context::Patient => Some(cx.pid.clone()?),
                _ => None,
            };
            Some(PageGrant {
                scope: g.clone(),
                patient,
            })
        })
        .collect();
    if grants.is_empty() {
        return deny(Reason::PatientContextMissing, cx.what());
    }
    Decision::AllowIfResponseMatches(ResponseCheck::Page(PageCheck { grants }))
}
