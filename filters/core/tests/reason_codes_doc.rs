//! `docs/reason-codes.md` is generated from `denial.rs` (`fapi-guard reason-codes --markdown`);
//! this fails when the two drift. Regenerate with:
//! `cargo run -q -p fapi-guard -- reason-codes --markdown > docs/reason-codes.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fapi_guard_core::denial::Reason;
use fapi_guard_core::reason_doc::{fix, markdown, FALLBACK};

#[test]
fn reason_codes_doc_is_generated_from_denial_rs() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/reason-codes.md");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == markdown(),
        "docs/reason-codes.md differs from denial.rs: run `cargo run -q -p fapi-guard -- reason-codes --markdown > docs/reason-codes.md`"
    );
}

#[test]
fn every_reason_has_a_meaning_and_its_own_fix() {
    for r in Reason::ALL {
        assert!(!r.meaning().trim().is_empty(), "{r:?} has no doc comment");
        assert_ne!(fix(*r), FALLBACK, "{r:?} has no entry in reason_doc::fix");
    }
}
