"""The committed image lock (policies/deploy/wasm-images.lock.json) is the digest of the build the
test suite runs. A stale lock would pin images Istio cannot match: the agent then replaces the
plugin with a deny-all RBAC filter (docs/platform-guide.md, "Failure modes")."""

from __future__ import annotations

import json

from conftest import REPO_ROOT, fake_wasm

LOCK = REPO_ROOT / "policies" / "deploy" / "wasm-images.lock.json"


def test_lock_matches_the_suites_build(package_wasm, tmp_path):
    from harness import build_wasm

    wasm_dir = build_wasm()  # the same `cargo build` (and .cargo/config.toml) as every e2e test
    summary = package_wasm.package(wasm_dir, tmp_path, "lock-check", list(package_wasm.FILTERS))
    drift = package_wasm.lock_drift(summary, json.loads(LOCK.read_text()))
    assert not drift, (
        "policies/deploy/wasm-images.lock.json does not match the Wasm this suite built:\n  "
        + "\n  ".join(drift)
        + f"\nregenerate with: {package_wasm.REGENERATE}  (and commit policies/ and kind-cluster/policies/)"
    )


def test_lock_drift_is_seen(package_wasm, tmp_path):
    d = tmp_path / "wasm"
    d.mkdir()
    for _, wasm_file in package_wasm.FILTERS.values():
        (d / wasm_file).write_bytes(fake_wasm(wasm_file.encode()))
    summary = package_wasm.package(d, tmp_path / "out", "t", list(package_wasm.FILTERS))
    assert package_wasm.lock_drift(summary, json.loads(json.dumps(summary))) == []
    (d / "fapi_guard.wasm").write_bytes(fake_wasm(b"changed"))
    changed = package_wasm.package(d, tmp_path / "out2", "t", list(package_wasm.FILTERS))
    drift = package_wasm.lock_drift(changed, summary)
    assert any(line.startswith("guard.image_manifest_digest") for line in drift)
    assert any(line.startswith("guard.wasm_sha256") for line in drift)
    # A lock that still pins an image the build no longer makes (a filter of its own, as in
    # earlier versions) is stale too.
    old = json.loads(json.dumps(summary))
    old["filters"]["token"] = dict(old["filters"]["guard"], wasm_file="fapi_token_filter.wasm")
    assert any(line.startswith("token.image_manifest_digest: build None") for line in
               package_wasm.lock_drift(summary, old))


def test_built_modules_hold_no_local_paths(package_wasm):
    """Reproducible across clones: no checkout path and no cargo home in the modules."""
    from harness import build_wasm

    wasm_dir = build_wasm()
    for _, wasm_file in package_wasm.FILTERS.values():
        assert package_wasm.path_leaks((wasm_dir / wasm_file).read_bytes()) == [], wasm_file


def test_a_module_with_a_local_path_is_refused(package_wasm, tmp_path):
    d = tmp_path / "wasm"
    d.mkdir()
    (d / "fapi_guard.wasm").write_bytes(fake_wasm(str(REPO_ROOT / "filters" / "x.rs").encode()))
    try:
        package_wasm.package(d, tmp_path / "out", "t", ["guard"])
    except package_wasm.PackagingError as e:
        assert "not reproducible" in str(e)
    else:
        raise AssertionError("a module embedding the checkout path was packaged")
