"""Size budget of the one module `fapi_guard.wasm`, the one Wasm artefact (bench/README.md "Size").

A change that grows it past 900,000 bytes fails here, and has to pay for its bytes (the cuts so
far and what is left to cut are in bench/README.md, "Size"). Not a timing test: the module is
built by scripts/build-wasm.sh (cargo, then wasm-opt), which is deterministic for a given
toolchain and binaryen (policies/deploy/wasm-images.lock.json records its digest).
"""
import render  # envoy/render.py: the one reader of filters/registry.json
from fapi_guard_py.envoy import build_wasm

MODULE_BUDGET = 900_000


def test_the_one_module_is_within_its_budget():
    module = build_wasm() / render.MODULE["wasm"]
    size = module.stat().st_size
    assert size <= MODULE_BUDGET, (
        f"{module.name} is {size:,} bytes, over its budget of {MODULE_BUDGET:,}; see bench/README.md 'Size'"
    )

