//! The DPoP filter's decision (docs/checks.md §2, RFC 9449 §4.3, RFC 8705 §3).
//! Input: `<selector byte><method>\n<path>\n<authority>\n<dpop header>\n<xfcc>`.
#![no_main]
use fapi_guard_core::dpop::KeyBudget;
use fapi_guard_core::dpop::{self, ClientCert, DpopRequest, ProofRequest, RequestTarget};
use fapi_guard_core::jose::SoftwareVerifier;
use fapi_guard_core::shared_store::MemoryStore;
use fuzz_support::{dpop_policy, policy, split, text, token, AcceptAll, NOW};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let parts = split(rest, 5);
    let (method, path, authority) = (text(parts[0]), text(parts[1]), text(parts[2]));
    let proof = text(parts[3]);
    let xfcc = text(parts[4]);
    let headers: Vec<&str> = proof.split('\u{1}').collect();
    let req = DpopRequest {
        proof: ProofRequest {
            method: &method,
            target: RequestTarget {
                scheme: "https",
                authority: &authority,
                path: &path,
                ..Default::default()
            },
            dpop_headers: &headers,
        },
        client_cert: ClientCert {
            connection_sha256_hex: None,
            xfcc: (!xfcc.is_empty()).then_some(xfcc.as_str()),
        },
    };
    let tok = token(sel);
    let store = MemoryStore::new();
    let _ = dpop::evaluate(
        policy(),
        dpop_policy(),
        &req,
        Some(&tok),
        &SoftwareVerifier,
        &store,
        &KeyBudget::new(),
        NOW,
    );
    let _ = dpop::evaluate(
        policy(),
        dpop_policy(),
        &req,
        Some(&tok),
        &AcceptAll,
        &store,
        &KeyBudget::new(),
        NOW,
    );
});
