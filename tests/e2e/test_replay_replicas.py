"""One proof, one use across every replica of an API (RFC 9449 §11.1; docs/dpop.md, "Replay
across replicas").

Three replicas (three Envoys running the guard) share one upstream; a gateway Envoy in front
of them balances round robin. With `dpop.replay_scope: api` the replicas claim each proof in
a real etcd (Debian `etcd-server`, started here on loopback ports with a throwaway data dir)
through its HTTP/JSON gateway: the same proof replayed through the gateway, its re-encoded
ECDSA twin (same `jti`, signature `(r, n − s)`), and the same proof sent to each replica
directly are all refused after the first use. With `replay_scope: replica` (today's default)
the same requests show the gap: more than one success. With etcd gone, every request fails
closed (503 `dpop_replay_store_unavailable`), never 200.
"""
from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import time

import pytest
import requests

from harness import Envoy, EnvoyProcess, Issuer, free_port

from test_dpop import JoseProofs, bound_token, make_policy, reason

pytestmark = pytest.mark.e2e

ORIGIN = "http://api.replicas.test"  # the one public origin every replica checks `htu` against
PATH = "/fhir/Patient/1"
STORE_CLUSTER = "fapi_guard_replay_store"
# P-256 group order (SEC 2 §2.4.2; FIPS 186-4 D.1.2.3).
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
REPLICAS = 3


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def malleated(proof: str) -> str:
    """The same ES256 proof with `s` replaced by `n − s`: another valid signature over the
    same header and claims (ECDSA signatures are malleable), other bytes."""
    head, body, sig = proof.split(".")
    raw = b64d(sig)
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    twin = b64e(r + (P256_N - s).to_bytes(32, "big"))
    assert twin != sig
    return f"{head}.{body}.{twin}"


class Etcd:
    """A real etcd (Debian `etcd-server`) on loopback with a throwaway data dir."""

    def __init__(self):
        binary = shutil.which("etcd")
        if not binary:
            pytest.fail("etcd not installed (scripts/bootstrap.sh installs etcd-server)")
        self.port, peer = free_port(), free_port()
        self.dir = tempfile.mkdtemp(prefix="fapi-etcd-")
        self.log = open(f"{self.dir}/etcd.log", "wb")
        self.proc = subprocess.Popen(
            [binary, "--data-dir", f"{self.dir}/data", "--name", "replay-test",
             "--listen-client-urls", f"http://127.0.0.1:{self.port}",
             "--advertise-client-urls", f"http://127.0.0.1:{self.port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"replay-test=http://127.0.0.1:{peer}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if requests.get(f"{self.address_url}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, open(f"{self.dir}/etcd.log").read()[-2000:]
            time.sleep(0.2)
        self.stop()
        pytest.fail("etcd did not become healthy in 30 s")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def address_url(self) -> str:
        return f"http://{self.address}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def gateway_config(port: int, admin_port: int, replica_ports: list[int]) -> dict:
    """A plain-HTTP gateway Envoy: every request to one cluster of the replicas, round robin."""
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "gateway",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"},
                                        "route": {"cluster": "replicas", "timeout": "10s"}}]}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    }}]}],
            }],
            "clusters": [{
                "name": "replicas", "type": "STATIC", "connect_timeout": "2s", "lb_policy": "ROUND_ROBIN",
                "load_assignment": {"cluster_name": "replicas", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
                    for p in replica_ports]}]},
            }],
        },
    }


def dpop_policy(issuer, scope: str) -> dict:
    dpop = {"public_origins": [ORIGIN], "replay_scope": scope}
    if scope == "api":
        dpop["replay_store"] = {"cluster": STORE_CLUSTER, "kind": "etcd", "key_prefix": "fapi-guard/test/",
                                "timeout_ms": 500}
    return make_policy(issuer, dpop, name=f"replicas-{scope}")


class Topology:
    def __init__(self, policy: dict, upstream_port: int, store_address: str | None):
        self.replicas: list[Envoy] = []
        try:
            for _ in range(REPLICAS):
                e = Envoy(policy, upstream_port, filters=["token", "dpop"], replay_store_address=store_address)
                self.replicas.append(e.__enter__())
            port, admin = free_port(), free_port()
            self.gateway = EnvoyProcess(gateway_config(port, admin, [r.port for r in self.replicas]),
                                        port, admin, "gateway", log_level="warning").__enter__()
        except BaseException:
            self.close()
            raise

    def close(self):
        for e in [getattr(self, "gateway", None), *self.replicas]:
            if e is not None:
                e.__exit__(None, None, None)

    def via_gateway(self, token: str, proof: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.gateway.port}{PATH}", timeout=10,
                            headers={"Authorization": f"DPoP {token}", "DPoP": proof})

    @staticmethod
    def direct(replica: Envoy, token: str, proof: str) -> requests.Response:
        return replica.get(PATH, {"Authorization": f"DPoP {token}", "DPoP": proof})


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.replicas.test", algs=("ES256",))


@pytest.fixture(scope="module")
def etcd():
    e = Etcd()
    yield e
    e.stop()


def wait_for_lease(topo: Topology, issuer, timeout: float = 15.0):
    """Each replica's worker grants its lease on its first tick; until then claims fail closed."""
    deadline = time.time() + timeout
    for r in topo.replicas:
        while True:
            client = JoseProofs("ES256")
            token = bound_token(issuer, client.jkt)
            got = Topology.direct(r, token, client.proof("GET", ORIGIN + PATH, token))
            if got.status_code == 200:
                break
            assert time.time() < deadline, (got.status_code, got.text)
            time.sleep(0.2)


def uses(topo: Topology, issuer) -> list[tuple[str, int, str]]:
    """One proof: 2 × REPLICAS times through the gateway (every replica sees it at least
    twice), its ECDSA twin through the gateway REPLICAS times, then once to each replica."""
    client = JoseProofs("ES256")
    token = bound_token(issuer, client.jkt)
    proof = client.proof("GET", ORIGIN + PATH, token)
    twin = malleated(proof)
    out = []
    for _ in range(2 * REPLICAS):
        r = topo.via_gateway(token, proof)
        out.append(("gateway", r.status_code, reason(r) if r.status_code != 200 else ""))
    for _ in range(REPLICAS):
        r = topo.via_gateway(token, twin)
        out.append(("twin", r.status_code, reason(r) if r.status_code != 200 else ""))
    for replica in topo.replicas:
        r = Topology.direct(replica, token, proof)
        out.append(("direct", r.status_code, reason(r) if r.status_code != 200 else ""))
    return out


def test_one_proof_one_use_across_replicas_then_store_gone_fails_closed(upstream, issuer, etcd):
    topo = Topology(dpop_policy(issuer, "api"), upstream.port, etcd.address)
    try:
        wait_for_lease(topo, issuer)
        got = uses(topo, issuer)
        assert [g for g in got if g[1] == 200] == [("gateway", 200, "")], got
        assert all(g[1:] == (401, "dpop_replay") for g in got[1:]), got
        # Every replica claimed through the store, and every replica refused a replay.
        for r in topo.replicas:
            stats = r.stats("fapi_guard.dpop")
            assert stats.get("wasmcustom.fapi_guard.dpop.replay_store_claimed", 0) >= 1, stats
            assert stats.get("wasmcustom.fapi_guard.dpop.denied.dpop_replay", 0) >= 1, stats
        # The store goes away: fail closed, never a 200.
        etcd.stop()
        for _ in range(2 * REPLICAS):
            client = JoseProofs("ES256")
            token = bound_token(issuer, client.jkt)
            r = topo.via_gateway(token, client.proof("GET", ORIGIN + PATH, token))
            assert r.status_code == 503, (r.status_code, r.text)
            assert reason(r) == "dpop_replay_store_unavailable", r.text
        for r in topo.replicas:
            stats = r.stats("fapi_guard.dpop")
            assert stats.get("wasmcustom.fapi_guard.dpop.denied.dpop_replay_store_unavailable", 0) >= 1, stats
    finally:
        topo.close()


def test_replica_scope_accepts_one_use_per_replica(upstream, issuer):
    """Today's default, shown so the test above can fail: each replica has its own cache."""
    topo = Topology(dpop_policy(issuer, "replica"), upstream.port, None)
    try:
        got = uses(topo, issuer)
        ok = [g for g in got if g[1] == 200]
        assert len(ok) > 1, got
        assert len([g for g in ok if g[0] == "gateway"]) == REPLICAS, got
    finally:
        topo.close()


def test_lost_lease_is_granted_again_within_seconds(upstream, issuer):
    """The store forgets the leases (revoked here; a store that lost its data answers the same
    "lease not found"): the guard drops its lease and grants a new one on its next tick, so
    fresh proofs are accepted again within seconds, not after the lease's renewal period."""
    store = Etcd()
    try:
        with Envoy(dpop_policy(issuer, "api"), upstream.port, filters=["token", "dpop"],
                   replay_store_address=store.address) as replica:
            topo = type("One", (), {"replicas": [replica]})()
            wait_for_lease(topo, issuer)
            leases = requests.post(f"{store.address_url}/v3/lease/leases", json={}, timeout=5).json()["leases"]
            assert leases, "the guard holds no lease"
            for lease in leases:
                requests.post(f"{store.address_url}/v3/lease/revoke", json={"ID": lease["ID"]},
                              timeout=5).raise_for_status()
            statuses = []
            deadline = time.time() + 5
            while time.time() < deadline:
                client = JoseProofs("ES256")
                token = bound_token(issuer, client.jkt)
                r = Topology.direct(replica, token, client.proof("GET", ORIGIN + PATH, token))
                statuses.append(r.status_code)
                if r.status_code == 200:
                    break
                assert (r.status_code, reason(r)) == (503, "dpop_replay_store_unavailable"), r.text
                time.sleep(0.2)
            assert statuses[0] == 503 and statuses[-1] == 200, statuses
    finally:
        store.stop()
