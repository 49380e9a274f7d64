"""Smoke test of bench/run.py: a tiny run (no timing assertions) that must produce a table and
prove, through the `fapi_guard.verify.*` counters, which path verified the token.

The proof rests on two switches the benchmark relies on: `render(direct_response=True)` and
the Wasm VM environment variable FAPI_GUARD_VERIFIER=software (read through WASI in Envoy).
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install -y wrk)"),
]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--rounds", "1", "--duration", "1",
         "--configs", "a,c,d,e", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout, json.loads(out.read_text())


def table_rows(stdout: str) -> dict[str, list[str]]:
    """First markdown table: cfg -> cells."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if re.fullmatch(r"[a-l]", cells[0]) and len(cells) == 7:
            rows.setdefault(cells[0], cells)
    return rows


def test_table_has_every_config_with_nonzero_throughput(bench):
    stdout, _ = bench
    rows = table_rows(stdout)
    assert set(rows) == {"a", "c", "d", "e"}, stdout
    for key, cells in rows.items():
        rps = float(cells[2].replace(",", ""))
        assert rps > 0, (key, cells)
        assert float(cells[4]) > 0 and float(cells[5]) > 0, (key, cells)  # p50, p99


@pytest.mark.parametrize("key, host, software, cache_hit", [
    ("a", False, False, False),  # no filter: nothing verifies
    ("c", False, False, True),   # cache on: every measured request is a cache hit
    ("d", True, False, False),   # ES256, cache off: Envoy verify_signature
    ("e", False, True, False),   # same, FAPI_GUARD_VERIFIER=software
])
def test_counters_prove_the_verification_path(bench, key, host, software, cache_hit):
    _, results = bench
    (run,) = results[key]
    c = run["counters"]
    assert run["requests"] > 0 and run["non_2xx"] == 0 and run["errors"] == 0, run
    for name, expected in (("verify.host", host), ("verify.software", software), ("token.cache_hit", cache_hit)):
        if expected:
            assert c[name] >= run["requests"], (key, name, run)
        else:
            assert c[name] == 0, (key, name, run)
