"""Smoke test of bench/run.py's `full_chain_replay_api` (docs/dpop.md, "Replay across replicas";
bench/README.md, "Replay across replicas"): one short run against a real etcd, no timing
assertions. Every request's proof is claimed in the store, and the claims reuse the store
cluster's connections (HTTP/1.1 keep-alive): a connection per claim would cost Envoy a
connect, and etcd an accept, on every request with a proof.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install -y wrk)"),
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed (scripts/bootstrap.sh installs etcd-server)"),
]

CONNECTIONS = 4


def test_every_proof_is_claimed_on_reused_connections(tmp_path):
    out = tmp_path / "results.json"
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--rounds", "1", "--duration", "2", "--no-memory",
         "--chain-rate", "1000", "--connections", str(CONNECTIONS), "--configs", "full_chain_replay_api",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = json.loads(out.read_text())["results"]["full_chain_replay_api"]
    store = run["store"]
    assert run["requests"] > 0 and run["non_2xx"] == 0, run
    # One claim per request (a lease grant may add one); all answered over HTTP/1.1.
    assert run["requests"] <= store["upstream_rq_total"] <= run["requests"] + CONNECTIONS + 2, run
    # The connections opened while measuring: at most one per concurrent claim, never one per claim.
    assert store["upstream_cx_total"] <= CONNECTIONS, run
    assert store["upstream_cx_http2_total"] == 0 and store["upstream_cx_destroy_remote"] == 0, run
    assert store["etcd_cpu_us"] > 0, run
    assert "calls on" in p.stderr and "etcd CPU" in p.stderr, p.stderr
