#!/usr/bin/env python3
"""Throughput, latency, size and memory of the guard filters in real Envoy, against baselines
in the same run.

Usage: .venv/bin/python bench/run.py [--rounds 3] [--duration 8] [--configs NAME,NAME,...|all]
                                     [--connections 4] [--json FILE] [--no-build]
       .venv/bin/python bench/run.py --soak MINUTES [--workers N]

Every configuration is its own Envoy (`--concurrency 1`, loopback only) whose route answers
200 itself (`direct_response`), so what differs between configurations is the filter chain.
The configurations are named for what they run (`CONFIGS` below: `none`, `jwt_authn_es256`,
`jwt_authn_es256_cached`, `empty_wasm`, `token_cached`, `full_chain`, `token_es256_host`,
`token_ps256`, ...); the default run is `HEADLINE`. The guard is always the one module
`fapi_guard.wasm` attached once as the chain plugin (envoy/render.py): `full_chain` is root id
`fapi_guard:token,dpop,fhir_scope` (all of it, `fapi_guard`), the `token_*` rows `fapi_guard:token`.

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
import base64
import hashlib
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import requests

# The shared tooling (tools/fapi_guard_py: Issuer, build_wasm, free_port, EnvoyProcess) and the
# renderer (envoy/render.py), installed editable into .venv by scripts/bootstrap.sh (pyproject.toml).
import fapi_guard_py as tooling
import render

ROOT = tooling.ROOT

ISS = "https://issuer.bench"
AUD = "bench-api"
PATH = "/fhir/Patient/1"


@dataclass
class Config:
    key: str
    title: str
    kind: str  # "none" | "token" (the token step) | "jwt_authn" | "empty" (floor filter) | "chain" (all steps) | "partition"
    alg: str | None = None
    cache: bool = False
    software: bool = False
    # The route is public (`require: none`): the Wasm filter runs but checks no token.
    public: bool = False
    # Which verify counter must move during a run (None: neither may, e.g. cache or no filter).
    expect_path: str | None = None
    # Another build of the module (`--compare-wasm-dir`): the same configuration, before/after.
    wasm_dir: Path | None = None
    # A JSON access log with the guard's audit record (envoy/render.py `audit_log`, docs/audit.md),
    # written to a file under the system's temp directory.
    audit_log: bool = False
    # `dpop.replay_scope: api`: every proof is also claimed in a real etcd the bench starts
    # on loopback (docs/dpop.md, "Replay across replicas").
    replay_api: bool = False
    # `audit.record: false` (docs/audit.md, "Policy"): the chain builds and writes no audit record.
    no_audit: bool = False


CONFIGS = [
    Config("none", "no filter (direct response)", "none"),
    Config("jwt_authn_es256", "jwt_authn ES256, no cache (one native verification)", "jwt_authn", "ES256"),
    Config("jwt_authn_es256_cached", "jwt_authn ES256 with its JWT cache", "jwt_authn", "ES256", cache=True),
    Config("empty_wasm", "empty Rust proxy-wasm filter, reads one header (Wasm floor)", "empty"),
    Config("token_cached", "token step ES256, cached token (fapi_guard:token)", "token", "ES256", cache=True),
    Config("full_chain", "full chain, the one plugin: token (cached) + fresh ES256 DPoP proof + replay check + "
           "FHIR read", "chain", "ES256", cache=True, expect_path="host"),
    Config("full_chain_audit_log", "full chain, the one plugin, with the audit access log (JSON, a file)",
           "chain", "ES256", cache=True, expect_path="host", audit_log=True),
    Config("full_chain_no_audit", "full chain, the one plugin, audit.record false (no audit record built)",
           "chain", "ES256", cache=True, expect_path="host", no_audit=True),
    Config("partition_step", "the partition step alone (fapi_guard:partition: the layer in front of "
           "the replicas), the full chain's requests", "partition"),
    Config("full_chain_replay_api", "full chain, the one plugin, replay_scope api (each proof claimed in etcd)",
           "chain", "ES256", cache=True, expect_path="host", replay_api=True),
    Config("token_es256_host", "token filter ES256, no cache, host verify", "token", "ES256", expect_path="host"),
    Config("token_es256_software", "token filter ES256, no cache, software verify", "token", "ES256",
           software=True, expect_path="software"),
    Config("token_ps256", "token filter PS256, no cache (software)", "token", "PS256", expect_path="software"),
    Config("token_eddsa", "token filter EdDSA, no cache (software)", "token", "EdDSA", expect_path="software"),
    Config("token_rs256_host", "token filter RS256, no cache, host verify", "token", "RS256", expect_path="host"),
    Config("jwt_authn_ps256", "jwt_authn PS256, no cache", "jwt_authn", "PS256"),
    Config("jwt_authn_eddsa", "jwt_authn EdDSA, no cache", "jwt_authn", "EdDSA"),
    Config("jwt_authn_rs256", "jwt_authn RS256, no cache", "jwt_authn", "RS256"),
    Config("token_public_route", "token filter on a public route (no token checked)", "token", public=True),
]
BY_KEY = {c.key: c for c in CONFIGS}
# The configurations of the headline table (the default run); `--configs all` runs every one.
HEADLINE = ["none", "jwt_authn_es256", "jwt_authn_es256_cached", "empty_wasm", "token_cached", "full_chain"]
# Ratios printed under the table: (numerator, denominator, what it says).
RATIOS = [
    ("full_chain", "jwt_authn_es256", "full FAPI chain / jwt_authn uncached (target >= 0.9)"),
    ("token_cached", "jwt_authn_es256_cached", "cached token / jwt_authn cached (target >= 1.0)"),
    ("token_cached", "empty_wasm", "cached token / empty Wasm filter (target >= 0.95)"),
    ("full_chain_audit_log", "full_chain", "full FAPI chain: with / without the audit access log"),
    ("full_chain_replay_api", "full_chain", "full FAPI chain: replay_scope api (etcd) / replica"),
    ("full_chain_no_audit", "full_chain", "full FAPI chain: without / with the audit record"),
    ("partition_step", "empty_wasm", "partition step (the layer in front) / empty Wasm filter"),
    ("empty_wasm", "jwt_authn_es256_cached", "empty Wasm filter / jwt_authn cached (the floor)"),
]
FILTER_FILES = {"the one module (chain plugin: token + dpop + fhir_scope)": render.MODULE["wasm"],
                "empty (bench only)": "fapi_bench_empty_filter.wasm"}
EMPTY_WASM = "fapi_bench_empty_filter.wasm"
# Full chain: this many clients, each with its own DPoP key and token (the per-key replay
# budget, docs/dpop.md, is about 936 proofs/s per key and worker: one key would get 429s).
CHAIN_CLIENTS = 32


# ---------- Envoy configurations ----------

def token_policy(issuer: tooling.Issuer, cache: bool, public: bool = False) -> dict:
    return {
        "api": {"name": "bench", "audience": AUD},
        "issuers": [{"issuer": ISS, "jwks": issuer.jwks()}],
        "token": {"schemes": ["Bearer"], "allowed_algs": ["ES256", "PS256", "EdDSA", "RS256"],
                  "cache_max_entries": 10_000 if cache else 0},
        "routes": [{"path_prefix": "/", "require": "none"}] if public else [],
    }


def chain_policy(issuer: tooling.Issuer) -> dict:
    """The three filters with their defaults: DPoP required (ES256), default replay cache,
    SMART scopes with the patient compartment."""
    return {
        "api": {"name": "bench", "audience": AUD},
        "issuers": [{"issuer": ISS, "jwks": issuer.jwks()}],
        "token": {"schemes": ["DPoP"], "allowed_algs": ["ES256"], "cache_max_entries": 10_000},
        "dpop": {"required": True, "allowed_algs": ["ES256"]},
        "fhir": {"base_path": "/fhir", "resource_types": ["Patient", "Observation"]},
    }


def jwt_authn_filter(issuer: tooling.Issuer, alg: str, cache: bool) -> dict:
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


def empty_wasm_filter(wasm_dir: Path) -> dict:
    """The floor: bench/empty-filter (reads one header, continues), on V8 like the guard."""
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "bench_empty",
                "root_id": "bench_empty",
                "vm_config": {"vm_id": "bench_empty", "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": str(wasm_dir / EMPTY_WASM)}}},
            },
        },
    }


def hcm_of(boot: dict) -> dict:
    return boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


_ETCD: list = []
STORE_CLUSTER = "fapi_guard_replay_store"
STORE_NO_FSYNC = False
STORE_STUB_DELAY_MS: int | None = None


def stub_store_address(delay_ms: int) -> str:
    """--store-stub DELAY_MS (a diagnostic): instead of etcd, an Envoy answering every claim
    "first use" and every lease grant from `direct_response`, after DELAY_MS (fault filter; 0:
    at once). It separates the guard's and Envoy's own cost of a claim from the store's latency
    and CPU. The buffer filter reads each request whole first, so connections are kept alive."""
    import atexit

    port, admin = tooling.free_port(), tooling.free_port()

    def route(prefix: str, body: str) -> dict:
        return {"match": {"prefix": prefix}, "direct_response": {"status": 200, "body": {"inline_string": body}}}

    filters = [{"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 65536}}]
    if delay_ms:
        filters.append({"name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "delay": {"fixed_delay": f"{delay_ms / 1000}s", "percentage": {"numerator": 100}}}})
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "stub_store", "http_filters": filters,
           "route_config": {"virtual_hosts": [{"name": "store", "domains": ["*"], "routes": [
               route("/v3/kv/txn", '{"header":{"revision":"5"},"succeeded":true,"responses":[]}'),
               route("/v3/lease/grant", '{"header":{},"ID":"7","TTL":"130"}')]}]}}
    boot = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {"listeners": [{
                "name": "stub_store", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}]}}
    stub = tooling.EnvoyProcess(boot, port, admin, "bench-stub-store", log_level="warning")
    atexit.register(stub.stop)
    return f"127.0.0.1:{port}"


def replay_store_address() -> str:
    """A real etcd (Debian `etcd-server`) on loopback with a throwaway data dir, started once per
    bench run and stopped at exit; its client address. With --store-stub, the stub store."""
    if _ETCD:
        return _ETCD[0][1]
    import atexit

    if STORE_STUB_DELAY_MS is not None:
        _ETCD.append((None, stub_store_address(STORE_STUB_DELAY_MS)))
        return _ETCD[0][1]

    binary = shutil.which("etcd")
    if not binary:
        raise SystemExit("full_chain_replay_api needs etcd (scripts/bootstrap.sh installs etcd-server)")
    client, peer = tooling.free_port(), tooling.free_port()
    # --store-no-fsync: the data dir on tmpfs, where etcd's WAL fsync returns at once. A
    # diagnostic (how much of the cost is the durable write), never a production number.
    data = tempfile.mkdtemp(prefix="fapi-bench-etcd-", dir="/dev/shm" if STORE_NO_FSYNC else None)
    proc = subprocess.Popen([binary, "--data-dir", f"{data}/d", "--listen-client-urls", f"http://127.0.0.1:{client}",
                             "--advertise-client-urls", f"http://127.0.0.1:{client}",
                             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(lambda: (proc.terminate(), proc.wait(timeout=10), shutil.rmtree(data, ignore_errors=True)))
    address = f"127.0.0.1:{client}"
    deadline = time.time() + 30
    while True:
        try:
            if requests.get(f"http://{address}/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.time() > deadline or proc.poll() is not None:
            raise SystemExit("etcd did not become healthy in 30 s")
        time.sleep(0.2)
    _ETCD.append((proc, address))
    return address


STORE_STATS = ("upstream_cx_total", "upstream_rq_total", "upstream_cx_http1_total", "upstream_cx_http2_total",
               "upstream_cx_destroy_remote", "upstream_rq_pending_overflow")


def store_usage(e) -> dict[str, float]:
    """The replay store cluster's counters (connections opened vs requests sent: is each claim
    its own connection? HTTP/1.1 or HTTP/2?) and etcd's CPU seconds so far."""
    stats = e.stats(f"cluster.{STORE_CLUSTER}.")
    out: dict[str, float] = {n: stats.get(f"cluster.{STORE_CLUSTER}.{n}", 0) for n in STORE_STATS}
    out["etcd_cpu_s"] = cpu_seconds(_ETCD[0][0].pid) if _ETCD and _ETCD[0][0] else 0.0
    return out


def store_line(d: dict) -> str:
    return (f"{d['upstream_rq_total']:,} calls on {d['upstream_cx_total']:,} new connections "
            f"(HTTP/1.1 {d['upstream_cx_http1_total']:,}, HTTP/2 {d['upstream_cx_http2_total']:,}; "
            f"closed by the store {d['upstream_cx_destroy_remote']:,}), etcd CPU {d['etcd_cpu_us']:,.0f} µs/request")


def wait_for_lease(timeout: float = 15.0) -> None:
    proc, address = _ETCD[0]
    deadline = time.time() + timeout
    while proc is not None and time.time() < deadline:
        try:
            if requests.post(f"http://{address}/v3/lease/leases", json={}, timeout=2).json().get("leases"):
                break
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.2)
    time.sleep(0.5 if proc is not None else 2)


def bootstrap(cfg: Config, issuer: tooling.Issuer, wasm_dir: Path, port: int, admin: int) -> dict:
    if cfg.kind == "token":
        env = {"FAPI_GUARD_VERIFIER": "software"} if cfg.software else None
        return render.render(token_policy(issuer, cfg.cache, cfg.public), ["token"], str(wasm_dir), port, 1, admin,
                             vm_env=env, direct_response=True)
    if cfg.kind == "chain":
        # The steps the policy runs (render.policy_steps: its `fhir` section adds the FHIR step).
        audit = os.path.join(tempfile.gettempdir(), f"fapi-bench-audit-{port}.log") if cfg.audit_log else None
        policy, store = chain_policy(issuer), None
        if cfg.replay_api:
            store = replay_store_address()
            policy["dpop"].update({"replay_scope": "api", "replay_store": {
                "cluster": STORE_CLUSTER, "kind": "etcd", "key_prefix": f"bench/{port}/"}})
        if cfg.no_audit:
            policy["audit"] = {"record": False}
        return render.render(policy, None, str(wasm_dir), port, 1, admin,
                             direct_response=True, audit_log=audit, replay_store_address=store)
    if cfg.kind == "partition":
        # The partition step alone, as the layer in front of the replicas runs it (docs/dpop.md,
        # "Replay across replicas"); the answer carries the routing key it set, so the checks
        # below see that the step ran.
        boot = render.render(chain_policy(issuer), None, str(wasm_dir), port, 1, admin, direct_response=True)
        hcm = hcm_of(boot)
        wasm = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
        wasm["typed_config"]["config"]["name"] = wasm["typed_config"]["config"]["root_id"] = \
            render.MODULE["partition_root_id"]
        for vh in hcm["route_config"]["virtual_hosts"]:
            vh["response_headers_to_add"] = [{"header": {"key": "x-partition-seen",
                                                         "value": "%REQ(x-fapi-guard-partition)%"}}]
        return boot
    boot = render.render({"api": {"name": "bench"}}, [], str(wasm_dir), port, 1, admin, direct_response=True)
    if cfg.kind == "jwt_authn":
        hcm_of(boot)["http_filters"].insert(0, jwt_authn_filter(issuer, cfg.alg, cfg.cache))
    elif cfg.kind == "empty":
        hcm_of(boot)["http_filters"].insert(0, empty_wasm_filter(wasm_dir))
    return boot


COUNTERS = ("verify.host", "verify.software", "token.cache_hit", "token.allowed", "dpop.allowed",
            "fhir_scope.allowed", "dpop.denied.dpop_replay", "dpop.denied.dpop_replay_cache_full",
            "dpop.denied.dpop_key_over_budget")


class BenchEnvoy(tooling.EnvoyProcess):
    """One configuration's Envoy (tests/tooling.py starts, waits for and stops it)."""

    def __init__(self, cfg: Config, issuer: tooling.Issuer, wasm_dir: Path, concurrency: int = 1):
        self.cfg = cfg
        port, admin = tooling.free_port(), tooling.free_port()
        wasm_dir = cfg.wasm_dir or wasm_dir
        super().__init__(bootstrap(cfg, issuer, wasm_dir, port, admin), port, admin, f"bench-{cfg.key}",
                         concurrency=concurrency, log_level="warning")
        if cfg.replay_api:
            # Each worker grants its store lease on its first tick (~200 ms; on a loaded machine
            # etcd's first write may miss the 250 ms timeout, and the next try is a second later);
            # claims before that fail closed, so the measured run starts once etcd holds a lease.
            wait_for_lease()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def counters(self) -> dict[str, int]:
        stats = self.stats()
        return {k: sum(v for name, v in stats.items() if name.endswith("fapi_guard." + k)) for k in COUNTERS}

    def memory(self) -> dict[str, int]:
        """Resident set (kernel) and what Envoy's allocator says it holds."""
        rss = 0
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
        server = self.stats("server.memory_")
        return {"rss": rss, "allocated": server.get("server.memory_allocated", 0),
                "heap": server.get("server.memory_heap_size", 0)}


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
    if token and e.cfg.kind not in ("none", "empty") and not e.cfg.public:
        for what, hdr in (("broken signature", {"Authorization": f"Bearer {break_signature(token)}"}),
                          ("no token", {})):
            r = requests.get(e.url(), headers=hdr, timeout=5)
            if r.status_code != 401:
                raise SystemExit(f"[{e.cfg.key}] expected 401 for {what}, got {r.status_code}")


# ---------- DPoP clients and pre-minted proofs (full chain) ----------

def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class ChainClients:
    """CHAIN_CLIENTS clients, each an ES256 DPoP key (`cryptography`) with its own DPoP-bound
    access token (joserfc, `cnf.jkt` = the key's RFC 7638 thumbprint, patient 1)."""

    def __init__(self, issuer: tooling.Issuer, n: int = CHAIN_CLIENTS):
        from cryptography.hazmat.primitives.asymmetric import ec

        self.keys, self.tokens, self.headers, self.aths = [], [], [], []
        exp = int(time.time()) + 30 * 24 * 3600
        for _ in range(n):
            key = ec.generate_private_key(ec.SECP256R1())
            nums = key.public_key().public_numbers()
            jwk = {"crv": "P-256", "kty": "EC", "x": b64u(nums.x.to_bytes(32, "big")),
                   "y": b64u(nums.y.to_bytes(32, "big"))}
            jkt = b64u(hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()).digest())
            token = issuer.token("ES256", aud=AUD, exp=exp, scope="patient/*.rs", patient="1", cnf={"jkt": jkt})
            self.keys.append(key)
            self.tokens.append(token)
            self.headers.append(b64u(json.dumps({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}).encode()))
            self.aths.append(b64u(hashlib.sha256(token.encode()).digest()))

    def __getstate__(self):
        # For the minter processes: keys as PKCS#8 DER (key objects do not pickle).
        from cryptography.hazmat.primitives import serialization as ser

        der = [k.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption()) for k in self.keys]
        return {**self.__dict__, "keys": der}

    def __setstate__(self, state):
        from cryptography.hazmat.primitives.serialization import load_der_private_key

        self.__dict__.update(state)
        self.keys = [load_der_private_key(d, None) for d in state["keys"]]

    def proof(self, i: int, htu: str, jti: str, iat: int) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        payload = b64u(('{"jti":"%s","htm":"GET","htu":"%s","iat":%d,"ath":"%s"}'
                        % (jti, htu, iat, self.aths[i])).encode())
        signing_input = f"{self.headers[i]}.{payload}"
        r, s_ = decode_dss_signature(self.keys[i].sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64u(r.to_bytes(32, 'big') + s_.to_bytes(32, 'big'))}"

    def write_batch(self, path: Path, count: int, htu: str) -> None:
        """`count` distinct proofs (fresh `jti`, `iat` now), spread over the clients, one per
        line `client proof`, for bench/proofs.lua."""
        iat, tag = int(time.time()), os.urandom(6).hex()
        n = len(self.keys)
        with open(path, "w") as f:
            for k in range(count):
                f.write(f"{k % n} {self.proof(k % n, htu, f'{tag}{k:x}', iat)}\n")

    def write_tokens(self, path: Path) -> None:
        path.write_text("".join(t + "\n" for t in self.tokens))


def mint_parallel(clients: ChainClients, path: Path, count: int, htu: str) -> float:
    """Mints `count` proofs into `path` with one process per CPU; returns seconds taken."""
    import concurrent.futures as cf

    t0 = time.time()
    procs = max(1, os.cpu_count() or 1)
    parts = [path.with_suffix(f".part{i}") for i in range(procs)]
    share = [count // procs + (1 if i < count % procs else 0) for i in range(procs)]
    with cf.ProcessPoolExecutor(procs) as ex:
        list(ex.map(_mint_part, [clients] * procs, parts, share, [htu] * procs))
    with open(path, "w") as out:
        for p in parts:
            out.write(p.read_text())
            p.unlink()
    return time.time() - t0


def _mint_part(clients: ChainClients, path: Path, count: int, htu: str) -> None:
    clients.write_batch(path, count, htu)


def chain_htu(e: BenchEnvoy) -> str:
    return f"http://127.0.0.1:{e.port}{PATH}"


def check_chain_answers(e: BenchEnvoy, clients: ChainClients) -> None:
    """200 for a fresh proof; 401 `dpop_replay` for the same proof again; 401 for a proof of
    another client's key; 403 for another patient's record (the FHIR decision runs)."""
    htu = chain_htu(e)

    def get(i, proof, path=PATH):
        return requests.get(f"http://127.0.0.1:{e.port}{path}", timeout=5,
                            headers={"Authorization": f"DPoP {clients.tokens[i]}", "DPoP": proof})

    p = clients.proof(0, htu, uuid.uuid4().hex, int(time.time()))
    for want, r in ((200, get(0, p)), (401, get(0, p)),
                    (401, get(1, clients.proof(0, htu, uuid.uuid4().hex, int(time.time())))),
                    (403, get(0, clients.proof(0, htu.replace("/Patient/1", "/Patient/2"), uuid.uuid4().hex,
                                               int(time.time())), "/fhir/Patient/2"))):
        if r.status_code != want:
            raise SystemExit(f"[{e.cfg.key}] expected {want}, got {r.status_code}: {r.text[:300]}")
    # Warm-up (not measured): every client's token once, so measured requests are cache hits.
    for i in range(len(clients.tokens)):
        r = get(i, clients.proof(i, htu, uuid.uuid4().hex, int(time.time())))
        if r.status_code != 200:
            raise SystemExit(f"[{e.cfg.key}] client {i}: expected 200, got {r.status_code}: {r.text[:300]}")


def check_partition_answers(e: BenchEnvoy, clients: ChainClients) -> None:
    """The partition step sets a 64-hex-digit key for a request with a proof, the same for the
    same proof, and none without one (it never refuses)."""
    htu = chain_htu(e)
    p = clients.proof(0, htu, uuid.uuid4().hex, int(time.time()))
    keys = []
    for proof in (p, p, None):
        h = {"Authorization": f"DPoP {clients.tokens[0]}", **({"DPoP": proof} if proof else {})}
        r = requests.get(e.url(), headers=h, timeout=5)
        if r.status_code != 200:
            raise SystemExit(f"[{e.cfg.key}] expected 200, got {r.status_code}: {r.text[:300]}")
        keys.append(r.headers.get("x-partition-seen", ""))
    if not (re.fullmatch(r"[0-9a-f]{64}", keys[0]) and keys[1] == keys[0] and keys[2] == ""):
        raise SystemExit(f"[{e.cfg.key}] the partition step did not set its key: {keys}")


# ---------- wrk ----------

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
LUA = Path(__file__).resolve().parent / "proofs.lua"


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
    # Envoy's own CPU time (user + system, all threads) per request served during the run, µs:
    # steadier than req/s on a shared machine (wrk and the proof minting are other processes).
    cpu_us: float = 0.0
    # `replay_scope: api` only: the store cluster's counter deltas (connections opened, requests,
    # by protocol) and the store's (etcd's) own CPU per request, µs.
    store: dict = field(default_factory=dict)


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (utime + stime of /proc/<pid>/stat), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def run_wrk(url: str, token: str | None, duration: int, connections: int,
            lua_args: list[str] | None = None) -> Run:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if lua_args:
        # bench/proofs.lua: Authorization and a distinct DPoP proof per request.
        cmd += ["-s", str(LUA), url, "--"] + lua_args
    else:
        if token:
            cmd += ["-H", f"Authorization: Bearer {token}"]
        cmd.append(url)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if "proofs.lua: out of proofs" in p.stdout + p.stderr:
        raise SystemExit("bench/proofs.lua ran out of pre-minted proofs: raise the mint estimate (--chain-rate)")
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
    elif cfg.kind == "chain":
        # Every request: a token cache hit, one host verification (the proof), DPoP and FHIR allowed.
        for name in ("token.cache_hit", "verify.host", "dpop.allowed", "fhir_scope.allowed"):
            if c.get(name, 0) < run.requests:
                problems.append(f"expected {name} >= requests: {c.get(name, 0)} < {run.requests}")
        if sw:
            problems.append(f"software verifications in the full chain: {sw}")
    elif host or sw:
        problems.append(f"no guard filter, yet verify counters moved: host={host} software={sw}")
    if problems:
        raise SystemExit(f"[{cfg.key}] wrong path or errors: {'; '.join(problems)}")
    extra = f" dpop.allowed={c.get('dpop.allowed', 0)}" if cfg.kind == "chain" else ""
    return f"host={host} software={sw} cache_hit={hit}{extra}"


# ---------- sizes and memory ----------

def sizes(wasm_dir: Path) -> str:
    lines = ["| module | bytes | KB (1000 B) |", "|---|---:|---:|"]
    for name, f in FILTER_FILES.items():
        p = wasm_dir / f
        if p.is_file():
            n = p.stat().st_size
            lines.append(f"| {name} (`{f}`) | {n:,} | {n / 1000:,.0f} |")
    return "\n".join(lines)


# Idle memory rows: (key, label, filters of the chain policy; None = the configuration's own).
MEMORY_ROWS = [
    ("none", "no filter", None),
    ("empty_wasm", "empty Wasm filter (floor)", None),
    ("token_only", "the plugin, token step only (fapi_guard:token)", ["token"]),
    ("dpop_only", "the plugin, DPoP step only (fapi_guard:dpop)", ["dpop"]),
    ("fhir_only", "the plugin, FHIR scope step only (fapi_guard:fhir_scope)", ["fhir_scope"]),
    ("full_chain", "the one plugin, all steps (fapi_guard)", None),
]


class MemoryEnvoy(BenchEnvoy):
    """The full chain's policy with some of its steps (the chain plugin `fapi_guard:<steps>`)."""

    def __init__(self, filters: list[str], issuer: tooling.Issuer, wasm_dir: Path, concurrency: int):
        self.cfg = BY_KEY["full_chain"]
        port, admin = tooling.free_port(), tooling.free_port()
        boot = render.render(chain_policy(issuer), filters, str(wasm_dir), port, 1, admin, direct_response=True)
        tooling.EnvoyProcess.__init__(self, boot, port, admin, "bench-mem", concurrency=concurrency,
                                      log_level="warning")


def idle_memory(issuer: tooling.Issuer, wasm_dir: Path, settle: float) -> tuple[str, dict]:
    """Idle RSS and `server.memory_allocated` of Envoy with no filter, the empty Wasm filter,
    each guard filter alone and the three together, at 1 and 2 worker threads, after a few
    requests and `settle` s."""
    clients = ChainClients(issuer, 1)
    rows, raw = [], {}
    for workers in (1, 2):
        envoys = {}
        try:
            for key, _, filters in MEMORY_ROWS:
                envoys[key] = (MemoryEnvoy(filters, issuer, wasm_dir, workers) if filters
                               else BenchEnvoy(BY_KEY[key], issuer, wasm_dir, concurrency=workers))
            for key, e in envoys.items():
                for _ in range(4):  # touch every worker's filter chain a little
                    h = {"Authorization": f"DPoP {clients.tokens[0]}",
                         "DPoP": clients.proof(0, chain_htu(e), uuid.uuid4().hex, int(time.time()))}
                    requests.get(e.url(), headers=h, timeout=5)
            time.sleep(settle)
            for key, e in envoys.items():
                raw[f"{key}/{workers}"] = e.memory()
        finally:
            for e in envoys.values():
                e.stop()
        base = raw[f"none/{workers}"]
        for key, label, _ in MEMORY_ROWS:
            m = raw[f"{key}/{workers}"]
            rows.append(f"| {workers} | {label} | "
                        f"{m['rss'] / 1e6:,.1f} | {(m['rss'] - base['rss']) / 1e6:+,.1f} | "
                        f"{m['allocated'] / 1e6:,.1f} | {(m['allocated'] - base['allocated']) / 1e6:+,.1f} |")
    head = ["| workers | Envoy with | RSS MB | vs no filter | server.memory_allocated MB | vs no filter |",
            "|---:|---|---:|---:|---:|---:|"]
    return "\n".join(head + rows), raw


# ---------- report ----------

def fmt_ms(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def med(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def table(results: dict[str, list[Run]], keys: list[str]) -> str:
    base = med(results["none"], "rps") if "none" in results else None
    lines = ["| configuration | chain | req/s (median) | req/s per round | added µs/request | Envoy CPU µs/request "
             "(median) | p50 ms | p99 ms | p99 added ms |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for k in keys:
        runs = results[k]
        rps = med(runs, "rps")
        added = f"{(1 / rps - 1 / base) * 1e6:,.0f}" if base else "–"
        p99_added = f"{med(runs, 'p99_ms') - med(results['none'], 'p99_ms'):+.2f}" if base else "–"
        lines.append(f"| `{k}` | {BY_KEY[k].title} | {rps:,.0f} | {' / '.join(f'{r.rps:,.0f}' for r in runs)} | "
                     f"{added} | {med(runs, 'cpu_us'):,.0f} | {fmt_ms(med(runs, 'p50_ms'))} | "
                     f"{fmt_ms(med(runs, 'p99_ms'))} | {p99_added} |")
    return "\n".join(lines)


def ratio_lines(results: dict[str, list[Run]]) -> str:
    out = []
    for num, den, what in RATIOS:
        for n, label in ((num, what), (f"{num}@before", f"{what}, before")):
            if n in results and den in results:
                # By CPU: requests per Envoy CPU-second, the same ratio read from CPU per request.
                cpu_n, cpu_d = med(results[n], "cpu_us"), med(results[den], "cpu_us")
                by_cpu = f"; by Envoy CPU per request **{cpu_d / cpu_n:.2f}×** ({cpu_n:,.0f} / {cpu_d:,.0f} µs)" \
                    if cpu_n > 0 and cpu_d > 0 else ""
                out.append(f"- {label}: **{med(results[n], 'rps') / med(results[den], 'rps'):.2f}×** "
                           f"({med(results[n], 'rps'):,.0f} / {med(results[den], 'rps'):,.0f} req/s){by_cpu}")
    return "\n".join(out)


def evidence_table(results: dict[str, list[Run]], keys: list[str]) -> str:
    names = ("verify.host", "verify.software", "token.cache_hit", "dpop.allowed", "fhir_scope.allowed")
    lines = ["| configuration | requests (wrk, all rounds) | " + " | ".join(names) + " |",
             "|---|---:|" + "---:|" * len(names)]
    for k in keys:
        runs = results[k]
        tot = lambda name: sum(r.counters.get(name, 0) for r in runs)  # noqa: E731
        lines.append(f"| `{k}` | {sum(r.requests for r in runs):,} | " + " | ".join(f"{tot(n):,}" for n in names) + " |")
    return "\n".join(lines)


# ---------- soak ----------

def soak(issuer: tooling.Issuer, wasm_dir: Path, minutes: float, workers: int, connections: int,
         json_out: str | None) -> int:
    """The full chain at full speed for `minutes`: wrk reads proofs from a FIFO that minter
    processes fill as fast as it drains (each proof's `iat` is seconds old at most, so the
    default 60 s window holds however long the run). Reports non-2xx, the replay-cache
    counters, and memory at start, each minute and end."""
    clients = ChainClients(issuer)
    e = BenchEnvoy(BY_KEY["full_chain"], issuer, wasm_dir, concurrency=workers)
    tmp = Path(tempfile.mkdtemp(prefix="fapi-soak-"))
    fifo, tokens = tmp / "proofs.fifo", tmp / "tokens.txt"
    os.mkfifo(fifo)
    clients.write_tokens(tokens)
    minters: list[subprocess.Popen] = []
    samples = []
    try:
        check_chain_answers(e, clients)
        time.sleep(1)
        start_mem, start_c = e.memory(), e.counters()
        samples.append((0, start_mem))
        # One minter per CPU, all writing whole lines (< PIPE_BUF, so atomic) into the FIFO.
        state = tmp / "clients.pickle"
        state.write_bytes(pickle.dumps(clients))
        for i in range(max(1, (os.cpu_count() or 1))):
            minters.append(subprocess.Popen([sys.executable, __file__, "--mint-to-fifo", str(fifo), str(state),
                                             chain_htu(e), str(i)]))
        seconds = max(1, int(minutes * 60))
        wrk = subprocess.Popen(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
                                "-s", str(LUA), e.url(), "--", str(tokens), str(fifo)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.time()
        while wrk.poll() is None and time.time() - t0 < seconds + 60:
            time.sleep(min(60, max(1, seconds / 10)))
            if wrk.poll() is None:
                samples.append((round(time.time() - t0), e.memory()))
                print(f"# soak t={samples[-1][0]}s rss={samples[-1][1]['rss'] / 1e6:.1f} MB "
                      f"allocated={samples[-1][1]['allocated'] / 1e6:.1f} MB", file=sys.stderr)
        out, err = wrk.communicate(timeout=60)
        if wrk.returncode != 0:
            raise RuntimeError(f"wrk failed: {err}")
        run = parse_wrk(out)
        time.sleep(0.5)
        end_c = e.counters()
        end_mem = e.memory()
        samples.append(("end", end_mem))
    finally:
        for m in minters:
            m.terminate()
        for m in minters:
            try:
                m.wait(10)
            except subprocess.TimeoutExpired:
                m.kill()
        e.stop()
    delta = {k: end_c[k] - start_c[k] for k in end_c}
    print(f"Soak: full chain, Envoy `--concurrency {workers}`, `wrk -t1 -c{connections}` for {seconds} s "
          f"({minutes:g} min), proofs minted concurrently ({len(minters)} minter processes); "
          f"{os.cpu_count()} CPUs.\n")
    print(f"| requests | req/s | p50 ms | p99 ms | non-2xx | socket errors | dpop.allowed | dpop_replay | "
          f"dpop_replay_cache_full | dpop_key_over_budget |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {run.requests:,} | {run.rps:,.0f} | {fmt_ms(run.p50_ms)} | {fmt_ms(run.p99_ms)} | {run.non_2xx:,} | "
          f"{run.errors:,} | {delta['dpop.allowed']:,} | {delta['dpop.denied.dpop_replay']:,} | "
          f"{delta['dpop.denied.dpop_replay_cache_full']:,} | {delta['dpop.denied.dpop_key_over_budget']:,} |")
    print("\nMemory (RSS; `server.memory_allocated`):\n")
    print("| t (s) | RSS MB | allocated MB | heap MB |\n|---:|---:|---:|---:|")
    for t, m in samples:
        print(f"| {t} | {m['rss'] / 1e6:,.1f} | {m['allocated'] / 1e6:,.1f} | {m['heap'] / 1e6:,.1f} |")
    if json_out:
        Path(json_out).write_text(json.dumps({"run": vars(run), "counters": delta, "memory": samples}, indent=2))
    return 0 if run.non_2xx == 0 and run.errors == 0 else 1


def mint_to_fifo(fifo: str, state: str, htu: str, seed: str) -> int:
    """Minter process of the soak: writes proofs (iat = now) into the FIFO until it closes."""
    clients: ChainClients = pickle.loads(Path(state).read_bytes())
    n, k, tag = len(clients.keys), 0, f"{seed}{os.urandom(4).hex()}"
    try:
        with open(fifo, "w", buffering=1) as f:
            while True:
                f.write(f"{k % n} {clients.proof(k % n, htu, f'{tag}{k:x}', int(time.time()))}\n")
                k += 1
    except (BrokenPipeError, OSError):
        return 0


# ---------- main ----------

def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--mint-to-fifo":
        return mint_to_fifo(*sys.argv[2:6])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8, help="seconds of wrk per configuration per round (<= 40)")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--configs", default=",".join(HEADLINE),
                    help="comma-separated configuration names, or `all` (default: HEADLINE, issue 9's table)")
    ap.add_argument("--chain-rate", type=int, default=0,
                    help="req/s to mint proofs for (default: measured in a calibration run)")
    ap.add_argument("--no-memory", action="store_true", help="skip the idle memory measurement")
    ap.add_argument("--compare-wasm-dir", metavar="DIR",
                    help="also run every guard configuration with the one module fapi_guard.wasm in DIR (e.g. an "
                         "older build), as `<name>@before`, in the same rounds")
    ap.add_argument("--soak", type=float, metavar="MINUTES", help="soak the full chain instead of the benchmark")
    ap.add_argument("--workers", type=int, default=1, help="Envoy worker threads for --soak")
    # Removed layouts: named in the error, not in --help.
    ap.add_argument("--one-module", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--one-plugin", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--store-no-fsync", action="store_true",
                    help="full_chain_replay_api: etcd's data on tmpfs (its WAL fsync is free): a diagnostic, NOT a "
                         "production number (etcd 3.4 has no --unsafe-no-fsync)")
    ap.add_argument("--store-stub", type=int, metavar="DELAY_MS",
                    help="full_chain_replay_api: an Envoy answering every claim `first use` after DELAY_MS instead of "
                         "etcd (a diagnostic: the claim's own cost in Envoy, without the store's)")
    ap.add_argument("--no-build", action="store_true", help="use the wasm already built (also FAPI_GUARD_SKIP_BUILD)")
    a = ap.parse_args(argv)
    global STORE_NO_FSYNC, STORE_STUB_DELAY_MS
    STORE_NO_FSYNC, STORE_STUB_DELAY_MS = a.store_no_fsync, a.store_stub
    for flag, used in (("--one-module", a.one_module), ("--one-plugin", a.one_plugin)):
        if used:
            ap.error(f"{flag} was removed: the guard is always the one module fapi_guard.wasm attached once, as "
                     "the chain plugin (root id fapi_guard); `full_chain` and --soak run it")
    keys = [c.key for c in CONFIGS] if a.configs == "all" else [k for k in a.configs.split(",") if k]
    unknown = [k for k in keys if k not in BY_KEY and "@" not in k]
    if unknown or not keys:
        ap.error(f"--configs: unknown {unknown}; known: {', '.join(BY_KEY)}")
    if a.compare_wasm_dir:
        if not (Path(a.compare_wasm_dir) / render.MODULE["wasm"]).is_file():
            ap.error(f"--compare-wasm-dir: no {render.MODULE['wasm']} in {a.compare_wasm_dir} (the guard is the one "
                     "module attached as the chain plugin; build the older commit with scripts/build-wasm.sh)")
        for k in list(keys):
            c = BY_KEY[k]
            if c.kind in ("token", "chain", "partition"):
                before = Config(**{**vars(c), "key": f"{k}@before", "title": f"{c.title} (before: {a.compare_wasm_dir})",
                                   "wasm_dir": Path(a.compare_wasm_dir)})
                BY_KEY[before.key] = before
                keys.append(before.key)
    if a.rounds < 1 or not 1 <= a.duration <= 40:
        ap.error("--rounds must be >= 1 and --duration 1..40 (proofs are minted per run; use --soak for long runs)")
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found (apt-get install -y wrk)")

    if a.no_build:
        os.environ["FAPI_GUARD_SKIP_BUILD"] = "1"
    wasm_dir = tooling.build_wasm()
    if not os.environ.get("FAPI_GUARD_SKIP_BUILD"):
        # The floor filter is not a default member: build it (and shrink it) the same way.
        subprocess.run(["bash", str(ROOT / "scripts" / "build-wasm.sh"), "--quiet", "-p", "fapi-bench-empty-filter"],
                       cwd=ROOT, check=True)
    # joserfc warns that RFC 9864 deprecates the name "EdDSA"; FAPI 2.0 still uses it.
    warnings.filterwarnings("ignore", message="EdDSA is deprecated")
    issuer = tooling.Issuer(ISS, algs=("ES256", "PS256", "EdDSA", "RS256"))
    if a.soak is not None:
        return soak(issuer, wasm_dir, a.soak, a.workers, a.connections, a.json)

    long_exp = int(time.time()) + 30 * 24 * 3600
    tokens = {alg: issuer.token(alg, aud=AUD, exp=long_exp) for alg in issuer.keys}
    chain_keys = [k for k in keys if BY_KEY[k].kind in ("chain", "partition")]
    clients = ChainClients(issuer) if chain_keys else None
    tmp = Path(tempfile.mkdtemp(prefix="fapi-bench-"))
    if clients:
        clients.write_tokens(tmp / "tokens.txt")

    envoys: dict[str, BenchEnvoy] = {}
    results: dict[str, list[Run]] = {k: [] for k in keys}
    try:
        for k in keys:
            envoys[k] = BenchEnvoy(BY_KEY[k], issuer, wasm_dir)
            if BY_KEY[k].kind == "chain":
                check_chain_answers(envoys[k], clients)
            elif BY_KEY[k].kind == "partition":
                check_partition_answers(envoys[k], clients)
            else:
                check_answers(envoys[k], tokens.get(BY_KEY[k].alg or "ES256"))
        chain_rate = a.chain_rate
        if clients and not chain_rate:
            # Calibration (not reported): how many proofs one run needs (on the partition step
            # when it runs: it is the fastest of the configurations that take proofs).
            e = envoys[next((k for k in chain_keys if BY_KEY[k].kind == "partition"), chain_keys[0])]
            mint_parallel(clients, tmp / "proofs.txt", 40_000, chain_htu(e))
            cal = run_wrk(e.url(), None, 2, a.connections, [str(tmp / "tokens.txt"), str(tmp / "proofs.txt")])
            chain_rate = int(cal.rps)
        print(f"# {len(keys)} configurations ready; {a.rounds} round(s) x {a.duration}s each "
              f"(wrk -t1 -c{a.connections}), envoy {tooling.envoy_binary()}", file=sys.stderr)
        for rnd in range(a.rounds):
            order = keys[rnd % len(keys):] + keys[:rnd % len(keys)]
            if rnd % 2:
                order.reverse()
            for k in order:
                e, cfg = envoys[k], BY_KEY[k]
                lua = None
                if cfg.kind in ("chain", "partition"):
                    # Fresh proofs for this run only (iat = now; the run is shorter than the window).
                    need = int(chain_rate * a.duration * 1.5) + 5_000
                    took = mint_parallel(clients, tmp / "proofs.txt", need, chain_htu(e))
                    print(f"# minted {need:,} proofs in {took:.1f}s", file=sys.stderr)
                    lua = [str(tmp / "tokens.txt"), str(tmp / "proofs.txt")]
                before = e.counters()
                store_before = store_usage(e) if cfg.replay_api else {}
                cpu_before = cpu_seconds(e.proc.pid)
                run = run_wrk(e.url(), tokens[cfg.alg or "ES256"], a.duration, a.connections, lua)
                run.cpu_us = (cpu_seconds(e.proc.pid) - cpu_before) * 1e6 / max(run.requests, 1)
                if cfg.replay_api:
                    run.store = {n: v - store_before[n] for n, v in store_usage(e).items()}
                    run.store["etcd_cpu_us"] = run.store.pop("etcd_cpu_s") * 1e6 / max(run.requests, 1)
                time.sleep(0.2)  # let in-flight requests land before reading counters
                after = e.counters()
                run.counters = {n: after[n] - before[n] for n in after}
                proof = prove_path(cfg, run)
                results[k].append(run)
                print(f"# round {rnd + 1} {k}: {run.rps:,.0f} req/s p50 {fmt_ms(run.p50_ms)} ms "
                      f"p99 {fmt_ms(run.p99_ms)} ms; Envoy CPU {run.cpu_us:,.0f} µs/request; {proof}"
                      + (f"; store: {store_line(run.store)}" if run.store else ""), file=sys.stderr)
    finally:
        for e in envoys.values():
            e.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    memory_table, memory_raw = ("", {}) if a.no_memory else idle_memory(issuer, wasm_dir, settle=3.0)
    load = os.getloadavg()
    print(f"Envoy `--concurrency 1`, `wrk -t1 -c{a.connections} -d{a.duration}s --latency`, "
          f"{a.rounds} round(s), medians; {os.cpu_count()} CPUs; load average at the end "
          f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min).\n")
    print(table(results, keys))
    print("\n" + ratio_lines(results) + "\n")
    print("Path evidence (counter deltas during the measured runs):\n")
    print(evidence_table(results, keys))
    print("\nModule sizes:\n")
    print(sizes(wasm_dir))
    if memory_table:
        print("\nIdle memory (a few requests, then 3 s idle):\n")
        print(memory_table)
    if a.json:
        Path(a.json).write_text(json.dumps(
            {"results": {k: [vars(r) for r in runs] for k, runs in results.items()}, "memory": memory_raw},
            indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
