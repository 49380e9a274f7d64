"""Smoke test of bench/run.py: a tiny run (no timing assertions) that must produce the table,
the ratios, module sizes, and prove through the filters' counters which path did the work.

The proof rests on switches the benchmark relies on: `render(direct_response=True)`, the Wasm
VM environment variable FAPI_GUARD_VERIFIER=software (read through WASI in Envoy), and for
the full chain bench/proofs.lua feeding a distinct pre-minted DPoP proof to every request
(a repeated proof would be refused as a replay and fail the run).
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

CONFIGS = ["none", "token_cached", "token_es256_host", "token_es256_software", "full_chain"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--rounds", "1", "--duration", "1", "--no-memory",
         "--chain-rate", "3000", "--configs", ",".join(CONFIGS), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout, json.loads(out.read_text())["results"]


def table_rows(stdout: str) -> dict[str, list[str]]:
    """First markdown table: configuration -> cells."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`([a-z0-9_]+)`", cells[0])
        if m and len(cells) == 9:
            rows.setdefault(m.group(1), cells)
    return rows


def test_table_has_every_config_with_nonzero_throughput(bench):
    stdout, _ = bench
    rows = table_rows(stdout)
    assert set(rows) == set(CONFIGS), stdout
    for key, cells in rows.items():
        rps = float(cells[2].replace(",", ""))
        assert rps > 0, (key, cells)
        assert float(cells[5].replace(",", "")) > 0, (key, cells)  # Envoy CPU µs per request
        assert float(cells[6]) > 0 and float(cells[7]) > 0, (key, cells)  # p50, p99
    assert "fapi_guard.wasm" in stdout  # its size
    assert "fapi_token_filter.wasm" not in stdout, "one artefact: no single-filter modules"


@pytest.mark.parametrize("key, host, software, cache_hit", [
    ("none", False, False, False),                 # no filter: nothing verifies
    ("token_cached", False, False, True),          # cache on: every measured request is a cache hit
    ("token_es256_host", True, False, False),      # ES256, cache off: Envoy verify_signature
    ("token_es256_software", False, True, False),  # same, FAPI_GUARD_VERIFIER=software
    ("full_chain", True, False, True),             # cached token, each proof verified on the host
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


def test_full_chain_checks_a_distinct_proof_per_request(bench):
    """Every request passed the DPoP and FHIR scope steps; none was a replay."""
    _, results = bench
    (run,) = results["full_chain"]
    c = run["counters"]
    assert c["dpop.allowed"] >= run["requests"] and c["fhir_scope.allowed"] >= run["requests"], run
    assert c["dpop.denied.dpop_replay"] == 0 and c["dpop.denied.dpop_replay_cache_full"] == 0, run


def test_soak_mode_reports_counters_and_memory(tmp_path):
    out = tmp_path / "soak.json"
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--soak", "0.1", "--no-build", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    soak = json.loads(out.read_text())
    assert soak["run"]["requests"] > 0 and soak["run"]["non_2xx"] == 0, soak
    assert soak["counters"]["dpop.allowed"] >= soak["run"]["requests"], soak
    assert soak["memory"][0][1]["rss"] > 0 and soak["memory"][-1][1]["allocated"] > 0, soak
    assert "dpop_replay_cache_full" in p.stdout


def test_compare_wasm_dir_runs_the_one_module_of_another_build(tmp_path):
    """`--compare-wasm-dir DIR`: every guard row also runs with DIR's fapi_guard.wasm, in the same
    rounds (here the same build, so both must pass); a DIR without it is refused by name."""
    from fapi_guard_py.envoy import build_wasm

    other = tmp_path / "before"
    other.mkdir()
    shutil.copy(build_wasm() / "fapi_guard.wasm", other / "fapi_guard.wasm")
    out = tmp_path / "results.json"
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--rounds", "1", "--duration", "1", "--no-memory", "--no-build",
         "--configs", "token_cached", "--compare-wasm-dir", str(other), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"token_cached", "token_cached@before"}, results.keys()
    for run in results.values():
        assert run[0]["requests"] > 0 and run[0]["non_2xx"] == 0, run
    empty = tmp_path / "empty"
    empty.mkdir()
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--no-build", "--compare-wasm-dir", str(empty)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no fapi_guard.wasm in" in p.stderr, p.stderr


@pytest.mark.parametrize("flag", ["--one-module", "--one-plugin"])
def test_removed_layout_flags_are_refused(flag):
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--soak", "1", "--no-build", flag],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and f"{flag} was removed" in p.stderr, p.stderr
