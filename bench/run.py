#!/usr/bin/env python3
"""Throughput and latency of the token filter in real Envoy, against baselines in the same run.

Usage: .venv/bin/python bench/run.py [--rounds 3] [--duration 8] [--configs a,b,c,...]
                                     [--connections 4] [--json FILE] [--no-build]

Every configuration is its own Envoy (`--concurrency 1`, loopback only) whose route answers
200 itself (`direct_response`), so what differs between configurations is the filter chain:

  a  no filter                                   (ceiling)
  b  Envoy jwt_authn, ES256, no JWT cache        (native baseline: verifies every request)
  c  token filter, ES256, cache on               (realistic: a client reuses its token)
  d  token filter, ES256, cache off, host path   (Envoy `verify_signature`, BoringSSL)
  e  token filter, ES256, cache off, software    (FAPI_GUARD_VERIFIER=software: p256 in Wasm)
  f  token filter, PS256, cache off              (software: rsa crate)
  g  token filter, EdDSA, cache off              (software: ed25519-dalek)
  h  Envoy jwt_authn, PS256, no JWT cache
  i  Envoy jwt_authn, EdDSA, no JWT cache
  j  Envoy jwt_authn, ES256, JWT cache on        (native counterpart of c)
  k  token filter, RS256, cache off, host path
  l  Envoy jwt_authn, RS256, no JWT cache

Method (bench/README.md): all Envoys start first; each round drives every
configuration once with `wrk -t1 -c4 -d<duration>s --latency`, in an order that rotates from
round to round (so no configuration always runs first or right after another); the table
reports per-configuration medians over rounds. Before measuring, each configuration must
answer 200 to the token and 401 to the same token with a broken signature. After each run the
`fapi_guard.verify.host` / `fapi_guard.verify.software` / `token.cache_hit` counters are read
from the Envoy admin port to prove which path did the verifying; a run that took the wrong path
or had non-2xx answers fails the benchmark.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import harness  # noqa: E402  (tests/harness.py: Issuer, build_wasm, free_port; it imports envoy/render.py)
from harness import render  # noqa: E402

ISS = "https://issuer.bench"
AUD = "bench-api"
PATH = "/fhir/Patient/1"


@dataclass
class Config:
    key: str
    title: str
    kind: str  # "none" | "token" | "jwt_authn"
    alg: str | None = None
    cache: bool = False
    software: bool = False
    # The route is public (`require: none`): the Wasm filter runs but checks no token. It is the
    # floor of what any Wasm filter costs per request in this Envoy.
    public: bool = False
    # Which verify counter must move during a run (None: neither may, e.g. cache or no filter).
    expect_path: str | None = None


CONFIGS = [
    Config("a", "no filter (direct response)", "none"),
    Config("b", "jwt_authn ES256, no cache", "jwt_authn", "ES256"),
    Config("c", "token filter ES256, cache on", "token", "ES256", cache=True),
    Config("d", "token filter ES256, cache off, host verify", "token", "ES256", expect_path="host"),
    Config("e", "token filter ES256, cache off, software verify", "token", "ES256", software=True,
           expect_path="software"),
    Config("f", "token filter PS256, cache off (software)", "token", "PS256", expect_path="software"),
    Config("g", "token filter EdDSA, cache off (software)", "token", "EdDSA", expect_path="software"),
    Config("h", "jwt_authn PS256, no cache", "jwt_authn", "PS256"),
    Config("i", "jwt_authn EdDSA, no cache", "jwt_authn", "EdDSA"),
    Config("j", "jwt_authn ES256, cache on", "jwt_authn", "ES256", cache=True),
    Config("k", "token filter RS256, cache off, host verify", "token", "RS256", expect_path="host"),
    Config("l", "jwt_authn RS256, no cache", "jwt_authn", "RS256"),
    Config("m", "token filter, public route (Wasm filter floor)", "token", public=True),
]
BY_KEY = {c.key: c for c in CONFIGS}


def envoy_binary() -> str:
    """ENVOY_BIN, the project's .venv, the venv running this script, then PATH."""
    for cand in (os.environ.get("ENVOY_BIN"), str(ROOT / ".venv" / "bin" / "envoy"),
                 str(Path(sys.executable).parent / "envoy"), shutil.which("envoy")):
        if cand and Path(cand).is_file():
            return cand
    raise SystemExit("no envoy binary: set ENVOY_BIN or run scripts/bootstrap.sh")


# ---------- Envoy configurations ----------

def token_policy(issuer: harness.Issuer, cache: bool, public: bool = False) -> dict:
    return {
        "api": {"name": "bench", "audience": AUD},
        "issuers": [{"issuer": ISS, "jwks": issuer.jwks()}],
        "token": {"schemes": ["Bearer"], "allowed_algs": ["ES256", "PS256", "EdDSA", "RS256"],
                  "cache_max_entries": 10_000 if cache else 0},
        "routes": [{"path_prefix": "/", "require": "none"}] if public else [],
    }


def jwt_authn_filter(issuer: harness.Issuer, alg: str, cache: bool) -> dict:
    """Envoy's native JWT filter with the same key the token filter trusts (inline JWKS)."""
    provider = {
        "issuer": ISS,
        "audiences": [AUD],
        "local_jwks": {"inline_string": json.dumps({"keys": [issuer.keys[alg].as_dict(private=False)]})},
        "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
        "forward": True,
    }
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 100}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }


def bootstrap(cfg: Config, issuer: harness.Issuer, wasm_dir: Path, port: int, admin: int) -> dict:
    if cfg.kind == "token":
        env = {"FAPI_GUARD_VERIFIER": "software"} if cfg.software else None
        return render.render(token_policy(issuer, cfg.cache, cfg.public), ["token"], str(wasm_dir), port, 1, admin,
                             vm_env=env, direct_response=True)
    boot = render.render({"api": {"name": "bench"}}, [], str(wasm_dir), port, 1, admin, direct_response=True)
    if cfg.kind == "jwt_authn":
        hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"].insert(0, jwt_authn_filter(issuer, cfg.alg, cfg.cache))
    return boot


class BenchEnvoy(harness.EnvoyProcess):
    """One configuration's Envoy (tests/harness.py starts, waits for and stops it)."""

    def __init__(self, cfg: Config, issuer: harness.Issuer, wasm_dir: Path):
        self.cfg = cfg
        port, admin = harness.free_port(), harness.free_port()
        super().__init__(bootstrap(cfg, issuer, wasm_dir, port, admin), port, admin, f"bench-{cfg.key}",
                         log_level="warning")

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def counters(self) -> dict[str, int]:
        stats = self.stats()
        return {k: sum(v for name, v in stats.items() if name.endswith("fapi_guard." + k))
                for k in ("verify.host", "verify.software", "token.cache_hit", "token.allowed")}


def break_signature(token: str) -> str:
    """Same header and claims, a different (wrong) signature of the right length."""
    head, body, sig = token.split(".")
    return f"{head}.{body}.{sig[:10]}{'A' if sig[10] != 'A' else 'B'}{sig[11:]}"


def check_answers(e: BenchEnvoy, token: str | None) -> None:
    """200 for the token; 401 for a broken signature and for no token (filters only)."""
    h = {"Authorization": f"Bearer {token}"} if token else {}
    r = requests.get(e.url(), headers=h, timeout=5)
    if r.status_code != 200:
        raise SystemExit(f"[{e.cfg.key}] expected 200 for the token, got {r.status_code}: {r.text[:300]}")
    if token and e.cfg.kind != "none" and not e.cfg.public:
        for what, hdr in (("broken signature", {"Authorization": f"Bearer {break_signature(token)}"}),
                          ("no token", {})):
            r = requests.get(e.url(), headers=hdr, timeout=5)
            if r.status_code != 401:
                raise SystemExit(f"[{e.cfg.key}] expected 401 for {what}, got {r.status_code}")


# ---------- wrk ----------

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: int
    counters: dict = field(default_factory=dict)


def parse_wrk(out: str) -> Run:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    reqs = re.search(r"(\d+) requests in", out)
    if not (rps and p50 and p99 and reqs):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return Run(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), int(reqs.group(1)),
               int(non2xx.group(1)) if non2xx else 0, sum(int(x) for x in errs.groups()) if errs else 0)


def run_wrk(url: str, token: str | None, duration: int, connections: int) -> Run:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    p = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=duration + 30)
    if p.returncode != 0:
        raise RuntimeError(f"wrk failed ({p.returncode}): {p.stderr}")
    return parse_wrk(p.stdout)


def prove_path(cfg: Config, run: Run) -> str:
    """Checks the counters moved as the configuration claims; returns a short evidence string."""
    c = run.counters
    host, sw, hit = c.get("verify.host", 0), c.get("verify.software", 0), c.get("token.cache_hit", 0)
    problems = []
    if run.non_2xx or run.errors:
        problems.append(f"{run.non_2xx} non-2xx, {run.errors} socket errors")
    if cfg.kind == "token":
        if cfg.expect_path == "host" and not (host >= run.requests and sw == 0):
            problems.append(f"expected host path: host={host} software={sw} requests={run.requests}")
        if cfg.expect_path == "software" and not (sw >= run.requests and host == 0):
            problems.append(f"expected software path: host={host} software={sw} requests={run.requests}")
        if cfg.cache and not (hit >= run.requests and host + sw == 0):
            problems.append(f"expected cache hits: cache_hit={hit} host={host} software={sw}")
    elif host or sw:
        problems.append(f"no wasm filter, yet verify counters moved: host={host} software={sw}")
    if problems:
        raise SystemExit(f"[{cfg.key}] wrong path or errors: {'; '.join(problems)}")
    return f"host={host} software={sw} cache_hit={hit}"


# ---------- report ----------

def fmt_ms(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def table(results: dict[str, list[Run]], keys: list[str]) -> str:
    base = statistics.median(r.rps for r in results["a"]) if "a" in results else None
    lines = ["| cfg | configuration | req/s (median) | req/s per round | p50 ms | p99 ms | vs no filter |",
             "|---|---|---:|---|---:|---:|---:|"]
    for k in keys:
        runs = results[k]
        rps = statistics.median(r.rps for r in runs)
        rel = f"{rps / base:.0%}" if base else "–"
        lines.append(f"| {k} | {BY_KEY[k].title} | {rps:,.0f} | {' / '.join(f'{r.rps:,.0f}' for r in runs)} | "
                     f"{fmt_ms(statistics.median(r.p50_ms for r in runs))} | "
                     f"{fmt_ms(statistics.median(r.p99_ms for r in runs))} | {rel} |")
    return "\n".join(lines)


def evidence_table(results: dict[str, list[Run]], keys: list[str]) -> str:
    lines = ["| cfg | requests (wrk, all rounds) | verify.host | verify.software | token.cache_hit |",
             "|---|---:|---:|---:|---:|"]
    for k in keys:
        runs = results[k]
        tot = lambda name: sum(r.counters.get(name, 0) for r in runs)  # noqa: E731
        lines.append(f"| {k} | {sum(r.requests for r in runs):,} | {tot('verify.host'):,} | "
                     f"{tot('verify.software'):,} | {tot('token.cache_hit'):,} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8, help="seconds of wrk per configuration per round")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--configs", default=",".join(c.key for c in CONFIGS),
                    help="comma-separated configuration letters (default: all)")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--no-build", action="store_true", help="use the wasm already built (also FAPI_GUARD_SKIP_BUILD)")
    a = ap.parse_args(argv)
    keys = [k for k in a.configs.split(",") if k]
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown or not keys:
        ap.error(f"--configs: unknown {unknown}; known: {sorted(BY_KEY)}")
    if a.rounds < 1 or a.duration < 1:
        ap.error("--rounds and --duration must be >= 1")
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found (apt-get install -y wrk)")

    if a.no_build:
        os.environ["FAPI_GUARD_SKIP_BUILD"] = "1"
    wasm_dir = harness.build_wasm()
    # joserfc warns that RFC 9864 deprecates the name "EdDSA"; FAPI 2.0 still uses it.
    warnings.filterwarnings("ignore", message="EdDSA is deprecated")
    issuer = harness.Issuer(ISS, algs=("ES256", "PS256", "EdDSA", "RS256"))
    long_exp = int(time.time()) + 30 * 24 * 3600
    tokens = {alg: issuer.token(alg, aud=AUD, exp=long_exp) for alg in issuer.keys}

    envoys: dict[str, BenchEnvoy] = {}
    results: dict[str, list[Run]] = {k: [] for k in keys}
    try:
        for k in keys:
            envoys[k] = BenchEnvoy(BY_KEY[k], issuer, wasm_dir)
            check_answers(envoys[k], tokens.get(BY_KEY[k].alg or "ES256"))
        print(f"# {len(keys)} configurations ready; {a.rounds} round(s) x {a.duration}s each "
              f"(wrk -t1 -c{a.connections}), envoy {envoy_binary()}", file=sys.stderr)
        for rnd in range(a.rounds):
            order = keys[rnd % len(keys):] + keys[:rnd % len(keys)]
            if rnd % 2:
                order.reverse()
            for k in order:
                e, cfg = envoys[k], BY_KEY[k]
                before = e.counters()
                run = run_wrk(e.url(), tokens[cfg.alg or "ES256"], a.duration, a.connections)
                time.sleep(0.2)  # let in-flight requests land before reading counters
                after = e.counters()
                run.counters = {n: after[n] - before[n] for n in after}
                proof = prove_path(cfg, run)
                results[k].append(run)
                print(f"# round {rnd + 1} {k}: {run.rps:,.0f} req/s p50 {fmt_ms(run.p50_ms)} ms "
                      f"p99 {fmt_ms(run.p99_ms)} ms; {proof}", file=sys.stderr)
    finally:
        for e in envoys.values():
            e.stop()

    print(f"Envoy `--concurrency 1`, `wrk -t1 -c{a.connections} -d{a.duration}s --latency`, "
          f"{a.rounds} round(s), medians; {os.cpu_count()} CPUs.\n")
    print(table(results, keys))
    print("\nPath evidence (counter deltas during the measured runs):\n")
    print(evidence_table(results, keys))
    if a.json:
        Path(a.json).write_text(json.dumps(
            {k: [vars(r) for r in runs] for k, runs in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
