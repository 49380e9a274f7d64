"""tools/wasm_size_profile.py: where the module's bytes go (bench/README.md "Size"), read from
cargo's raw output of the one module, which keeps function names."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "target" / "wasm32-wasip1" / "release" / "deps" / "fapi_guard.wasm"


@pytest.fixture(scope="module")
def profile():
    if not RAW.exists():
        subprocess.run(["bash", "scripts/build-wasm.sh"], cwd=ROOT, check=True)
    out = subprocess.run([sys.executable, "tools/wasm_size_profile.py", str(RAW), "--top", "1000"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return out


def rows(text: str, head: str) -> dict[str, int]:
    block = text.split(head, 1)[1].split("\n\n", 1)[0]
    return {m.group(1): int(m.group(2).replace(",", ""))
            for m in re.finditer(r"^\| `([^`]+)` \| ([\d,]+) \|", block, re.M)}


def test_the_code_is_attributed_to_named_crates(profile):
    total = int(re.search(r"code ([\d,]+) in", profile).group(1).replace(",", ""))
    crates = rows(profile, "| crate | code bytes |")
    # Functions the name section does not name, or names not read as a path, stay under 2 %.
    unnamed = sum(v for k, v in crates.items() if not re.fullmatch(r"[a-z_][a-z0-9_]*", k))
    assert unnamed < total * 0.02, sorted((v, k) for k, v in crates.items() if not re.fullmatch(r"[a-z_][a-z0-9_]*", k))[-5:]
    # The guard's own crates and the crates it verifies signatures with are named as such.
    for crate in ("fapi_guard_core", "fapi_guard", "proxy_wasm", "serde_json", "p256"):
        assert crates.get(crate, 0) > 0, crate


def test_core_is_broken_down_by_module(profile):
    modules = rows(profile, "| module of `fapi_guard_core` |")
    for m in ("fhir", "jose", "engine", "policy", "dpop"):
        assert modules.get(f"fapi_guard_core::{m}", 0) > 1000, m
    assert sum(modules.values()) == rows(profile, "| crate | code bytes |")["fapi_guard_core"]
