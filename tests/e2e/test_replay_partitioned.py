"""One proof, one use across replicas by partitioning (RFC 9449 §11.1; docs/dpop.md, "Replay
across replicas", `replay_scope: partitioned`).

Three replicas (Envoys running the guard with `dpop.replay_scope: partitioned`, each with its
own replay cache) behind a gateway Envoy that runs the partition step (`fapi_guard:partition`)
and routes with `ring_hash` (or `maglev`) on its `x-fapi-guard-partition` header, so every use
of one proof reaches one replica. Mesh authorization is emulated for real: the replicas listen
with TLS and require a client certificate of the gateway's identity (SAN URI
`spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway`, from a CA made here with
`cryptography`); the gateway calls them over that TLS. Shown: one proof and its ECDSA twin
accepted once; a direct call without that identity fails its handshake; a forged incoming key
does not move a proof; a changed replica set or a restarted replica accepts a proof at most once
more (the documented bounds); with round robin instead of the hash, the gap is back.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import tempfile
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness import EnvoyProcess, Issuer, build_wasm, free_port, render

from test_dpop import JoseProofs, bound_token, reason
from test_replay_replicas import ORIGIN, PATH, b64d, dpop_policy, malleated

pytestmark = pytest.mark.e2e

GATEWAY_ID = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"
OTHER_ID = "spiffe://cluster.local/ns/default/sa/some-client"
REPLICA_DNS = "replica.partition.test"
HEADER = "x-fapi-guard-partition"
# The load balancer of the gateway's replica cluster; FAPI_GUARD_PARTITION_LB=ROUND_ROBIN
# shows the tests below fail without the hash (docs/dpop.md, "Replay across replicas").
LB = os.environ.get("FAPI_GUARD_PARTITION_LB", "RING_HASH")


def partition_key(jkt: str, jti: str) -> str:
    """The partition step's key (filters/core/src/engine/partition_step.rs), computed here."""
    data = b"fapi-guard/partition/v1\0"
    for part in (jkt.encode(), jti.encode()):
        data += len(part).to_bytes(8, "big") + part
    return hashlib.sha256(data).hexdigest()


class Pki:
    """A throwaway CA, the replicas' server certificate, the gateway's client certificate and
    one of another workload (same CA, other SPIFFE identity), as PEM files."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fapi-partition-pki-")
        now = datetime.datetime.now(datetime.timezone.utc)
        self._window = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "partition test CA")])
        ca = (self._builder(self._ca_name, self._ca_key.public_key())
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                           key_encipherment=False, data_encipherment=False, key_agreement=False,
                                           key_cert_sign=True, crl_sign=True, encipher_only=False,
                                           decipher_only=False), critical=True)
              .sign(self._ca_key, hashes.SHA256()))
        self.ca = self._write("ca.pem", ca.public_bytes(serialization.Encoding.PEM))
        self.replica = self._leaf("replica", [x509.DNSName(REPLICA_DNS),
                                              x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                                  ExtendedKeyUsageOID.SERVER_AUTH)
        self.gateway = self._leaf("gateway", [x509.UniformResourceIdentifier(GATEWAY_ID)],
                                  ExtendedKeyUsageOID.CLIENT_AUTH)
        self.other = self._leaf("other", [x509.UniformResourceIdentifier(OTHER_ID)],
                                ExtendedKeyUsageOID.CLIENT_AUTH)

    def _builder(self, subject, public_key):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self._ca_name)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(self._window[0]).not_valid_after(self._window[1]))

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def _leaf(self, name: str, sans: list, usage) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key())
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(self._ca_key, hashes.SHA256()))
        return (self._write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)),
                self._write(f"{name}-key.pem", key.private_bytes(serialization.Encoding.PEM,
                                                                 serialization.PrivateFormat.PKCS8,
                                                                 serialization.NoEncryption())))


def tls_socket(kind: str, context: dict) -> dict:
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": f"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}", **context}}


class Replica(EnvoyProcess):
    """A replica: the guard (token, DPoP) as envoy/render.py renders it, on a TLS listener that
    requires a client certificate of the gateway's identity (mesh authorization: only the
    partitioning layer may call a replica)."""

    def __init__(self, policy: dict, upstream_port: int, pki: Pki, port: int | None = None):
        port, admin = port or free_port(), free_port()
        cfg = render.render(policy, ["token", "dpop"], str(build_wasm()), port, upstream_port, admin)
        chain = cfg["static_resources"]["listeners"][0]["filter_chains"][0]
        cert, key = pki.replica
        chain["transport_socket"] = tls_socket("DownstreamTlsContext", {
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}],
                "validation_context": {
                    "trusted_ca": {"filename": pki.ca},
                    "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": GATEWAY_ID}}],
                },
            },
        })
        super().__init__(cfg, port, admin, "replica", log_level="warning")


def gateway_config(port: int, admin_port: int, replica_ports: list[int], policy: dict, pki: Pki, lb: str) -> dict:
    """The partitioning layer: the partition step (alone), then the router to the replicas
    over TLS with the gateway's client certificate, the load balancer hashing the step's
    header. The replica that answered is echoed as `x-replica` (its port)."""
    wasm = render.wasm_filter(["token"], json.dumps(policy), str(build_wasm()))
    wasm["typed_config"]["config"]["name"] = wasm["typed_config"]["config"]["root_id"] = "fapi_guard:partition"
    route = {"cluster": "replicas", "timeout": "10s"}
    if lb != "ROUND_ROBIN":
        route["hash_policy"] = [{"header": {"header_name": HEADER}}]
    cert, key = pki.gateway
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
                            "routes": [{"match": {"prefix": "/"}, "route": route,
                                        "response_headers_to_add": [{"header": {
                                            "key": "x-replica", "value": "%UPSTREAM_REMOTE_PORT%"}}]}]}]},
                        "http_filters": [wasm, {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    }}]}],
            }],
            "clusters": [{
                "name": "replicas", "type": "STATIC", "connect_timeout": "2s", "lb_policy": lb,
                "load_assignment": {"cluster_name": "replicas", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
                    for p in replica_ports]}]},
                "transport_socket": tls_socket("UpstreamTlsContext", {
                    "sni": REPLICA_DNS,
                    "common_tls_context": {
                        "tls_certificates": [{"certificate_chain": {"filename": cert},
                                              "private_key": {"filename": key}}],
                        "validation_context": {
                            "trusted_ca": {"filename": pki.ca},
                            "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": REPLICA_DNS}}],
                        },
                    },
                }),
            }],
        },
    }


class Partitioned:
    """Replicas behind one partitioning gateway; the gateway can be restarted with another set."""

    def __init__(self, policy: dict, upstream_port: int, pki: Pki, replicas: int = 3, lb: str = LB):
        self.policy, self.upstream_port, self.pki, self.lb = policy, upstream_port, pki, lb
        self.replicas: list[Replica] = []
        self.gateway = None
        try:
            for _ in range(replicas):
                self.replicas.append(Replica(policy, upstream_port, pki))
            self.start_gateway(self.replicas)
        except BaseException:
            self.close()
            raise

    def start_gateway(self, members: list[Replica]):
        if self.gateway is not None:
            self.gateway.stop()
        port, admin = free_port(), free_port()
        cfg = gateway_config(port, admin, [r.port for r in members], self.policy, self.pki, self.lb)
        self.gateway = EnvoyProcess(cfg, port, admin, "gateway", log_level="warning")

    def restart_replica(self, i: int):
        """Replica `i` stops and a fresh one (an empty cache) starts on the same port, so the
        gateway's ring is unchanged."""
        old = self.replicas[i]
        old.stop()
        for attempt in range(10):
            try:
                self.replicas[i] = Replica(self.policy, self.upstream_port, self.pki, port=old.port)
                return
            except RuntimeError as e:
                # The port not yet free to bind again (the old sockets closing): retry.
                if "Address already in use" not in str(e) or attempt == 9:
                    raise
                time.sleep(0.5)

    def close(self):
        for e in [self.gateway, *self.replicas]:
            if e is not None:
                e.stop()

    def send(self, token: str, proof: str, extra: dict | None = None) -> tuple[int, str, int, dict]:
        """(status, reason, the replica's port, the upstream's echo of the request or {})."""
        r = requests.get(f"http://127.0.0.1:{self.gateway.port}{PATH}", timeout=10,
                         headers={"Authorization": f"DPoP {token}", "DPoP": proof, **(extra or {})})
        ok = r.status_code == 200
        return (r.status_code, "" if ok else reason(r), int(r.headers["x-replica"]),
                r.json() if ok else {})


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.partition.test", algs=("ES256",))


@pytest.fixture(scope="module")
def pki():
    return Pki()


def policy_of(issuer) -> dict:
    # The default `iat` window (60 s past) holds the restarts below.
    return dpop_policy(issuer, "partitioned")


@pytest.fixture(scope="module")
def topo(upstream, issuer, pki):
    t = Partitioned(policy_of(issuer), upstream.port, pki)
    yield t
    t.close()


def fresh(issuer) -> tuple[str, str, str]:
    """(token, proof, the proof's partition key)."""
    client = JoseProofs("ES256")
    token = bound_token(issuer, client.jkt)
    proof = client.proof("GET", ORIGIN + PATH, token)
    jti = json.loads(b64d(proof.split(".")[1]))["jti"]
    return token, proof, partition_key(client.jkt, jti)


def test_one_proof_and_its_twin_one_use_through_the_partitioning_gateway(topo, issuer):
    token, proof, key = fresh(issuer)
    twin = malleated(proof)
    got = [topo.send(token, proof) for _ in range(6)] + [topo.send(token, twin) for _ in range(3)]
    assert [g[:2] for g in got] == [(200, "")] + [(401, "dpop_replay")] * 8, got
    # Every use reached one replica, and the replica saw the step's key, computed here.
    assert len({g[2] for g in got}) == 1, got
    assert got[0][3]["headers"][HEADER] == key


def test_a_forged_key_does_not_move_a_proof(topo, issuer):
    token, proof, key = fresh(issuer)
    first = topo.send(token, proof, {HEADER: "0" * 64})
    assert first[:2] == (200, ""), first
    assert first[3]["headers"][HEADER] == key, "the forged key reached the replica"
    owner = first[2]
    for forged in ["0" * 64, "f" * 64, "x", partition_key("a", "b"), key + "0"]:
        got = topo.send(token, proof, {HEADER: forged})
        assert got[:3] == (401, "dpop_replay", owner), (forged, got)
    # Many other proofs with one forged key spread over the replicas as their own keys do.
    owners = {topo.send(*fresh(issuer)[:2], {HEADER: "0" * 64})[2] for _ in range(24)}
    assert len(owners) > 1, owners


@pytest.mark.parametrize("who", ["no certificate", "another identity", "the gateway's identity"])
def test_only_the_gateway_may_call_a_replica(topo, issuer, pki, who):
    token, proof, _ = fresh(issuer)
    cert = {"no certificate": None, "another identity": pki.other, "the gateway's identity": pki.gateway}[who]
    url = f"https://127.0.0.1:{topo.replicas[0].port}{PATH}"
    call = lambda: requests.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": proof},
                                cert=cert, verify=pki.ca, timeout=10)
    if who == "the gateway's identity":
        # The control: the replica's guard answers once the handshake is the gateway's.
        assert call().status_code == 200
    else:
        with pytest.raises(requests.exceptions.ConnectionError):
            call()


class Caches:
    """What each replica's replay cache holds, as the test expects it: a proof is accepted
    exactly when the replica that got it has not seen it since it (re)started."""

    def __init__(self):
        self.seen: dict[int, set[str]] = {}

    def send(self, t: Partitioned, token: str, proof: str) -> tuple:
        got = t.send(token, proof)
        seen = self.seen.setdefault(got[2], set())
        expected = (401, "dpop_replay") if proof in seen else (200, "")
        assert got[:2] == expected, (got[:3], expected)
        seen.add(proof)
        return got

    def forget(self, port: int):
        self.seen.pop(port, None)


def replay_all(t: Partitioned, caches: Caches, proofs: list, owner: dict) -> list[str]:
    """Each proof (used before) once more through the gateway, after a change: where its owner
    stayed it is refused; where it moved it is accepted at most once more (once, at a new owner
    that had not seen it), then refused there. Updates `owner`; returns the proofs that moved."""
    moved = []
    for token, proof in proofs:
        got = caches.send(t, token, proof)
        if got[2] == owner[proof]:
            assert got[0] == 401, got[:3]
            continue
        moved.append(proof)
        owner[proof] = got[2]
        assert caches.send(t, token, proof)[:3] == (401, "dpop_replay", got[2])
    return moved


def test_bounds_on_a_changed_replica_set_and_a_restarted_replica(upstream, issuer, pki):
    """docs/dpop.md, "Replay across replicas": when the set changes, a proof whose owner moved
    is accepted at most once more, at its new owner; proofs whose owner stayed stay refused.
    A restarted replica (empty cache) accepts the proofs it owns once more."""
    t = Partitioned(policy_of(issuer), upstream.port, pki)
    caches = Caches()
    try:
        proofs = [fresh(issuer)[:2] for _ in range(30)]
        owner = {proof: caches.send(t, token, proof)[2] for token, proof in proofs}
        assert len(set(owner.values())) == 3, owner
        first_owner = dict(owner)
        # Scale down: the gateway restarts without replica 2. Its proofs move; ring_hash also
        # moves a few others (each remaining host's share of the ring is re-normalised).
        dropped = t.replicas[2].port
        t.start_gateway(t.replicas[:2])
        moved = replay_all(t, caches, proofs, owner)
        assert {p for p in first_owner if first_owner[p] == dropped} <= set(moved)
        print(f"scale-down 3 -> 2: {len(moved)} of {len(proofs)} proofs moved")
        # Most stay where they were (about 45 % move with Envoy's default ring size).
        assert len(moved) <= len(proofs) * 5 // 6, len(moved)
        # Back to three: every proof is back at its first owner, which has seen it.
        t.start_gateway(t.replicas)
        assert not replay_all(t, caches, proofs, dict(first_owner))
        owner = dict(first_owner)
        # Replica 0 restarts with an empty cache: only the proofs it owns pass, once more.
        restarted = t.replicas[0].port
        t.restart_replica(0)
        caches.forget(restarted)
        for token, proof in proofs:
            got = caches.send(t, token, proof)
            assert got[2] == owner[proof] and (got[0] == 200) == (owner[proof] == restarted), got[:3]
        assert any(o == restarted for o in owner.values())
        # Scale up: a fourth replica joins; the proofs that move are accepted once more, once.
        t.replicas.append(Replica(t.policy, t.upstream_port, pki))
        t.start_gateway(t.replicas)
        moved = replay_all(t, caches, proofs, owner)
        print(f"scale-up 3 -> 4: {len(moved)} of {len(proofs)} proofs moved")
        assert 0 < len(moved) <= len(proofs) * 5 // 6, len(moved)
    finally:
        t.close()


def test_round_robin_brings_the_gap_back(upstream, issuer, pki):
    """The same topology without the hash (round robin): a proof is accepted at every replica,
    as with `replay_scope: replica`, so the tests above can fail."""
    t = Partitioned(policy_of(issuer), upstream.port, pki, lb="ROUND_ROBIN")
    try:
        token, proof, _ = fresh(issuer)
        got = [t.send(token, proof) for _ in range(6)]
        assert len([g for g in got if g[0] == 200]) == 3, got
    finally:
        t.close()
