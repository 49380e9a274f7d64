"""Size budget of the one module (each filter <= 300 KB of Wasm; bench/README.md "Size").

`fapi_guard.wasm` holds every filter of filters/registry.json, so its budget is 300,000 bytes per
filter. A change that grows it past the budget fails here, and has to pay for its bytes (the
cuts so far and what is left to cut are in bench/README.md, "Size"). Not a timing test: the
module is built by scripts/build-wasm.sh (cargo, then wasm-opt), which is deterministic for a
given toolchain and binaryen (policies/deploy/wasm-images.lock.json records its digest).
"""
import render  # envoy/render.py: the one reader of filters/registry.json
from fapi_guard_py.envoy import build_wasm

PER_FILTER_BUDGET = 300_000


def test_one_module_within_300_kb_per_filter():
    module = build_wasm() / render.MODULE["wasm"]
    budget = PER_FILTER_BUDGET * len(render.REGISTRY)
    size = module.stat().st_size
    assert size <= budget, (
        f"{module.name} is {size:,} bytes, over its budget of {budget:,} "
        f"({PER_FILTER_BUDGET:,} per filter x {len(render.REGISTRY)}); see bench/README.md 'Size'"
    )
