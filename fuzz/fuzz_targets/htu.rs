//! `htu` normalisation and comparison (RFC 9449 §4.3 step 9, RFC 3986 §6.2.2-§6.2.3).
//! Input: `<htu>\n<request path>\n<authority>`.
#![no_main]
use fapi_guard_core::dpop::htu;
use fuzz_support::{dpop_policy, split, text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 3);
    let (h, path, authority) = (text(parts[0]), text(parts[1]), text(parts[2]));
    if let Some(n) = htu::parse_htu(&h) {
        // Normalising is idempotent on the path it produced.
        assert_eq!(
            htu::normalise_path(&n.path).as_deref(),
            Some(n.path.as_str())
        );
    }
    let _ = htu::normalise_path(&path);
    let _ = htu::normalise_prefix(&path);
    let _ = htu::Origin::from_parts("https", &authority);
    let _ = htu::Origin::parse_config(&h);
    let target = htu::RequestTarget {
        scheme: "https",
        authority: &authority,
        path: &path,
        ..Default::default()
    };
    let _ = htu::htu_matches(dpop_policy(), &target, &h);
});
