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



# ---------- the callbacks the module exports ----------

import re  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# What the filters would call if they used a callback build-wasm.sh drops: a gRPC call or
# stream (answered through proxy_on_grpc_*), a shared queue (proxy_on_queue_ready), a network
# filter (proxy_on_new_connection and the downstream/upstream data callbacks).
DROPPED_CALLBACK_USES = re.compile(
    r"dispatch_grpc_call|open_grpc_stream|send_grpc_stream_message|grpc_call|grpc_stream"
    r"|register_shared_queue|resolve_shared_queue|enqueue_shared_queue|dequeue_shared_queue"
    r"|on_queue_ready|on_grpc_|impl\s+StreamContext|on_new_connection"
    r"|on_downstream_data|on_upstream_data")


def wasm_exports(module: Path) -> list[str]:
    """The export names of a Wasm module (its export section, WebAssembly core spec §5.5.10)."""
    data = module.read_bytes()

    def leb(i: int) -> tuple[int, int]:
        r = s = 0
        while True:
            b = data[i]
            i += 1
            r |= (b & 0x7F) << s
            s += 7
            if b < 0x80:
                return r, i

    i, names = 8, []
    while i < len(data):
        section, i = data[i], i + 1
        size, i = leb(i)
        if section == 7:
            n, j = leb(i)
            for _ in range(n):
                length, j = leb(j)
                names.append(data[j:j + length].decode())
                j += length + 1  # the name, then its kind
                _, j = leb(j)  # its index
        i += size
    return names


def test_the_module_exports_only_the_http_filter_callbacks():
    script = (ROOT / "scripts" / "build-wasm.sh").read_text()
    kept = re.search(r'HTTP_FILTER_EXPORTS="([^"]+)"', script).group(1).split()
    exports = wasm_exports(build_wasm() / render.MODULE["wasm"])
    assert sorted(exports) == sorted(kept), exports


def test_the_filters_use_no_callback_the_build_drops():
    # A filter that starts a gRPC call (or uses a queue, or is a network filter) would
    # never be answered: its callback is not exported. Keep the export in build-wasm.sh then.
    uses = [f"{p.relative_to(ROOT)}: {m.group(0)}"
            for p in (ROOT / "filters").rglob("*.rs")
            for m in DROPPED_CALLBACK_USES.finditer(p.read_text())]
    assert not uses, uses
