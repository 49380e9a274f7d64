#!/usr/bin/env python3
"""The sizing figures of docs/platform-guide.md "Sizing", measured in real Envoy, printed under
the same names as the doc's tables (MEMORY, REPLAY, CPU below; tests/test_sizing.py holds the
doc and this script to the same names).

Usage: .venv/bin/python bench/sizing.py [--workers 1,2,4] [--peaks 1000,5000,10000,40000]
                                        [--duration 10] [--parts memory,replay,cpu] [--no-build]

- Memory per pod: idle RSS of Envoy (`--concurrency` = workers) with the guard (the one plugin,
  full chain) and, as the floor any Wasm filter costs, the empty Rust proxy-wasm filter, minus a
  bare Envoy's RSS in the same run, after a few requests on every worker and 3 s idle
  (bench/run.py's idle method).
- Replay-cache budget by peak rate: the layout and memory bound the DPoP filter itself logs at
  start (`fapi_guard.dpop: replay cache ...`) for a policy sized for each peak
  (`dpop.replay_cache.peak_proofs_per_second`, default 70 s iat window).
- CPU per 1,000 req/s: Envoy's own CPU time (/proc/<pid>/stat utime + stime) over a saturating
  `wrk` run of the full chain (one worker, fresh DPoP proofs from bench/proofs.lua), divided by
  the requests served: CPU-seconds per 1,000 requests = cores busy at 1,000 req/s. wrk and the
  proof minting are other processes and are not counted.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: the configurations, clients and wrk driver)

import fapi_guard_py as tooling  # noqa: E402
import render  # noqa: E402

# Table names, shared with the doc (tests/test_sizing.py).
MEMORY = "Memory per pod"
REPLAY = "Replay-cache budget by peak rate"
CPU = "CPU per 1,000 req/s"
MEMORY_HEAD = "| layout | workers | Envoy RSS MB | over a bare Envoy MB | bare Envoy MB |"
REPLAY_HEAD = "| peak proofs/s | buckets | slots per bucket | live proofs at most | values MB at most |"
CPU_HEAD = "| layout | req/s (1 worker, saturated) | requests | Envoy CPU s | CPU s per 1,000 requests = cores per 1,000 req/s |"
# (row label, bench/run.py configuration): the memory rows, then the CPU rows.
LAYOUTS = [
    ("the guard (one plugin, full chain)", "full_chain"),
    ("empty Rust Wasm filter (floor)", "empty_wasm"),
]
CPU_LAYOUTS = LAYOUTS[:1]
REPLAY_LOG = re.compile(
    r"replay cache (\d+) buckets of (\d+) s x (\d+) slots x (\d+) entries: at most (\d+) live proofs, (\d+) bytes of values"
)


def memory(issuer, wasm_dir: Path, workers: list[int]) -> list[str]:
    clients = bench.ChainClients(issuer, 1)
    rows = []
    for w in workers:
        envoys = {}
        try:
            for key in ["none"] + [k for _, k in LAYOUTS]:
                envoys[key] = bench.BenchEnvoy(bench.BY_KEY[key], issuer, wasm_dir, concurrency=w)
            for e in envoys.values():
                for _ in range(4 * w):  # touch every worker's filter chain
                    h = {"Authorization": f"DPoP {clients.tokens[0]}",
                         "DPoP": clients.proof(0, bench.chain_htu(e), uuid.uuid4().hex, int(time.time()))}
                    requests.get(e.url(), headers=h, timeout=5)
            time.sleep(3)
            got = {k: e.memory()["rss"] for k, e in envoys.items()}
        finally:
            for e in envoys.values():
                e.stop()
        for label, key in LAYOUTS:
            rows.append(f"| {label} | {w} | {got[key] / 1e6:,.1f} | {(got[key] - got['none']) / 1e6:+,.1f} | {got['none'] / 1e6:,.1f} |")
    return [MEMORY_HEAD, "|---|---:|---:|---:|---:|"] + rows


def replay(issuer, wasm_dir: Path, peaks: list[int]) -> list[str]:
    rows = []
    for peak in peaks:
        policy = bench.chain_policy(issuer)
        policy["dpop"]["replay_cache"] = {"peak_proofs_per_second": peak, "max_live_proofs": 33_554_432}
        port, admin = tooling.free_port(), tooling.free_port()
        boot = render.render(policy, ["token", "dpop"], str(wasm_dir), port, 1, admin, direct_response=True)
        e = tooling.EnvoyProcess(boot, port, admin, f"sizing-replay-{peak}", concurrency=1, log_level="warning")
        try:
            m = None
            deadline = time.time() + 10
            while m is None and time.time() < deadline:
                m = REPLAY_LOG.search(e.logs())
                time.sleep(0.1)
        finally:
            e.stop()
        if m is None:
            raise RuntimeError(f"peak {peak}: the DPoP filter logged no replay-cache layout")
        buckets, bucket_s, slots, _, live, value_bytes = map(int, m.groups())
        rows.append(f"| {peak:,} | {buckets} x {bucket_s} s | {slots:,} | {live:,} | {value_bytes / 1e6:,.1f} |")
    return [REPLAY_HEAD, "|---:|---|---:|---:|---:|"] + rows


def cpu(issuer, wasm_dir: Path, duration: int, connections: int) -> list[str]:
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="fapi-sizing-"))
    for label, key in CPU_LAYOUTS:
        clients = bench.ChainClients(issuer)
        clients.write_tokens(tmp / "tokens.txt")
        e = bench.BenchEnvoy(bench.BY_KEY[key], issuer, wasm_dir, concurrency=1)
        try:
            bench.check_chain_answers(e, clients)
            lua = [str(tmp / "tokens.txt"), str(tmp / "proofs.txt")]
            bench.mint_parallel(clients, tmp / "proofs.txt", 20_000, bench.chain_htu(e))
            rate = bench.run_wrk(e.url(), None, 2, connections, lua).rps  # calibration, not reported
            bench.mint_parallel(clients, tmp / "proofs.txt", int(rate * duration * 1.5) + 5_000, bench.chain_htu(e))
            before = bench.cpu_seconds(e.proc.pid)
            run = bench.run_wrk(e.url(), None, duration, connections, lua)
            used = bench.cpu_seconds(e.proc.pid) - before
        finally:
            e.stop()
        if run.non_2xx or run.errors:
            raise RuntimeError(f"{key}: {run.non_2xx} non-2xx answers, {run.errors} socket errors")
        rows.append(f"| {label} | {run.rps:,.0f} | {run.requests:,} | {used:,.2f} | {1000 * used / run.requests:.3f} |")
    return [CPU_HEAD, "|---|---:|---:|---:|---:|"] + rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--peaks", default="1000,5000,10000,40000")
    ap.add_argument("--duration", type=int, default=10, help="seconds of wrk per layout for the CPU figure")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--parts", default="memory,replay,cpu")
    ap.add_argument("--no-build", action="store_true", help="use the wasm already built (also FAPI_GUARD_SKIP_BUILD)")
    a = ap.parse_args(argv)
    parts = set(a.parts.split(","))
    if a.no_build:
        os.environ["FAPI_GUARD_SKIP_BUILD"] = "1"
    wasm_dir = tooling.build_wasm()
    warnings.filterwarnings("ignore", message="EdDSA is deprecated")
    issuer = tooling.Issuer(bench.ISS, algs=("ES256",))
    sections = []
    if "memory" in parts:
        sections.append((MEMORY, memory(issuer, wasm_dir, [int(w) for w in a.workers.split(",")])))
    if "replay" in parts:
        sections.append((REPLAY, replay(issuer, wasm_dir, [int(p) for p in a.peaks.split(",")])))
    if "cpu" in parts:
        sections.append((CPU, cpu(issuer, wasm_dir, a.duration, a.connections)))
    load = os.getloadavg()
    print(f"Envoy {tooling.envoy_binary()}; {os.cpu_count()} CPUs; load average at the end "
          f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min).")
    for title, lines in sections:
        print(f"\n{title}:\n")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
