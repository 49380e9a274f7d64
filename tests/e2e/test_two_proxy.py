"""The two-proxy local topology of envoy/: an edge gateway (envoy/gateway-edge.yaml:
TLS with client certificates, `/api` stripped, internal `:authority`, XFCC SANITIZE_SET) in
front of the sidecar running the whole chain token -> dpop -> fhir_scope with the committed
policy policies/demo-fhir-api-gateway.json (envoy/sidecar-behind-gateway.yaml), in front of
the sample FHIR API (tests/fhir_upstream/server.py).

The harness starts both proxies on free ports (`harness.behind_gateway` moves the policy's
public origin from :8443 to the test gateway's port). Proven here: `htu` is checked against
the public URI (RFC 9449 §4.3 step 9; docs/checks.md §2.8), forwarded headers are trusted only as
the gateway sets them, certificate-bound tokens (RFC 8705 §3) work with the certificate the
gateway saw and not with a client-made XFCC, and the SMART patient compartment (docs/checks.md §3)
holds through the gateway.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
import time

import pytest
import requests
from requests_oauth2client import DPoPKey

from harness import ROOT, Envoy, Gateway, Issuer, JwksServer, Pki, behind_gateway, free_port

import server as fhir_server  # tests/fhir_upstream/server.py

pytestmark = pytest.mark.e2e

POLICY_PATH = ROOT / "policies" / "demo-fhir-api-gateway.json"
COMMITTED = json.loads(POLICY_PATH.read_text())
AUD = COMMITTED["api"]["audience"]
SCOPE = "openid launch/patient patient/*.rs"
ANNA, BJORN = "pat-anna", "pat-bjorn"
# What the sidecar forwards on the gateway -> sidecar hop (docs/platform-guide.md, "Local
# two-proxy topology"): plain HTTP here, so ALWAYS_FORWARD_ONLY stands in for Istio's
# APPEND_FORWARD over mesh mTLS.
SIDECAR_FCC = "ALWAYS_FORWARD_ONLY"
INTERNAL = "http://fhir-api.fhir.svc.cluster.local:8080"  # the gateway's internal :authority


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def ath(token: str) -> str:
    return b64(hashlib.sha256(token.encode()).digest())


def reason(r: requests.Response) -> str:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", r.text
    return body["issue"][0]["details"]["coding"][0]["code"]


def denied(r: requests.Response, code: str, status: int):
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"] == "application/fhir+json"
    assert reason(r) == code, r.text
    return r


def wait_for(pred, timeout=15.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def xfcc_hash(x5t_s256: str) -> str:
    """The hex SHA-256 of the certificate, as an XFCC `Hash=` carries it."""
    return base64.urlsafe_b64decode(x5t_s256 + "=" * (-len(x5t_s256) % 4)).hex()


# ---------------------------------------------------------------- topology

@pytest.fixture(scope="module")
def fhir():
    httpd = fhir_server.serve("127.0.0.1", 0)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def issuer():
    # The committed policy's issuer; its JWKS is served by a test server the harness points
    # the policy's `jwks_cluster` at (render `jwks_address`).
    return Issuer(COMMITTED["issuers"][0]["issuer"], algs=("ES256",))


@pytest.fixture(scope="module")
def jwks(issuer):
    s = JwksServer(issuer.jwks())
    yield s
    s.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


class Topology:
    """Sidecar + gateway, started together; `gateway=None` for a sidecar alone."""

    def __init__(self, policy: dict, fhir_port: int, jwks, pki, gateway_port: int | None = None,
                 with_gateway: bool = True):
        self.sidecar = Envoy(policy, fhir_port, jwks_address=f"127.0.0.1:{jwks.port}", forward_client_cert=SIDECAR_FCC)
        self.gateway = None
        try:
            assert wait_for(lambda: self.sidecar.counter("token.jwks.fetch_ok") >= 1), self.sidecar.logs()[-3000:]
            if with_gateway:
                self.gateway = Gateway(self.sidecar.port, pki, port=gateway_port)
        except Exception:
            self.stop()
            raise

    def stop(self):
        if self.gateway:
            self.gateway.stop()
        self.sidecar.stop()


def start(policy_over, fhir, jwks, pki, with_gateway=True) -> Topology:
    """The committed gateway policy, its public origin moved to a free port, changed by
    `policy_over(policy)`."""
    port = free_port()
    policy = behind_gateway(COMMITTED, port)
    policy_over(policy)
    return Topology(policy, fhir, jwks, pki, port, with_gateway)


@pytest.fixture(scope="module")
def topo(fhir, jwks, pki):
    t = start(lambda p: None, fhir, jwks, pki)
    yield t
    t.stop()


class Client:
    """A SMART app for `patient` with a DPoP key (requests-oauth2client) and, when
    `cert_bound`, a token also bound to the PKI's client certificate."""

    def __init__(self, issuer, pki, patient=ANNA, cert_bound=False):
        self.pki = pki
        self.key = DPoPKey.generate(alg="ES256")
        cnf = {"jkt": self.key.private_key.public_jwk().thumbprint()}
        if cert_bound:
            cnf["x5t#S256"] = pki.client_x5t_s256
        self.token = issuer.token("ES256", aud=AUD, scope=SCOPE, patient=patient, cnf=cnf)

    def headers(self, htu: str, method: str = "GET") -> dict:
        return {"Authorization": f"DPoP {self.token}",
                "DPoP": str(self.key.proof(htm=method, htu=htu, ath=ath(self.token)))}

    def via_gateway(self, gw: Gateway, path: str, htu: str | None = None, cert: bool = True,
                    extra: dict | None = None) -> requests.Response:
        url = gw.origin + "/api/fhir" + path
        h = self.headers(htu or url)
        h.update(extra or {})
        return requests.get(url, headers=h, verify=self.pki.ca, timeout=10,
                            cert=(self.pki.client_cert, self.pki.client_key) if cert else None)

    def direct(self, sidecar: Envoy, path: str, htu: str, extra: dict | None = None) -> requests.Response:
        h = self.headers(htu)
        h.update(extra or {})
        return sidecar.get("/fhir" + path, h)


@pytest.fixture(scope="module")
def anna(issuer, pki):
    return Client(issuer, pki)


@pytest.fixture(scope="module")
def anna_mtls(issuer, pki):
    return Client(issuer, pki, cert_bound=True)


# ---------------------------------------------------------------- htu (docs/checks.md §2.8)

def test_committed_topology_policy_is_what_runs(topo):
    """The sidecar runs the committed policy, only the public origin's port moved."""
    running = json.loads(json.dumps(topo.sidecar.policy))
    assert running["dpop"]["public_origins"] == [topo.gateway.origin]
    running["dpop"]["public_origins"] = COMMITTED["dpop"]["public_origins"]
    assert running == COMMITTED


def test_allowed_read_through_the_gateway(topo, anna):
    r = anna.via_gateway(topo.gateway, "/Patient/pat-anna")
    assert r.status_code == 200, r.text
    assert r.json()["id"] == ANNA
    # Not certificate-bound: the client certificate is not needed.
    r = anna.via_gateway(topo.gateway, "/Patient/pat-anna", cert=False)
    assert r.status_code == 200, r.text
    assert topo.sidecar.counter("dpop.allowed") >= 2
    # Public route through the gateway, no token.
    r = requests.get(topo.gateway.origin + "/api/fhir/metadata", verify=anna.pki.ca, timeout=10)
    assert r.status_code == 200 and r.json()["resourceType"] == "CapabilityStatement"


def test_proof_must_name_the_public_uri(topo, anna, pki):
    gw = topo.gateway
    port = gw.port
    cases = [
        ("the public URI the client used", f"{gw.origin}/api/fhir/Patient/pat-anna", 200),
        ("public URI, other letter case and explicit host form", f"HTTPS://127.0.0.1:{port}/api/fhir/Patient/pat-anna",
         200),
        ("the internal URI the sidecar sees", f"{INTERNAL}/fhir/Patient/pat-anna", 401),
        ("the sidecar's own address", f"{topo.sidecar.url}/fhir/Patient/pat-anna", 401),
        ("public origin without the stripped prefix", f"{gw.origin}/fhir/Patient/pat-anna", 401),
        ("http instead of https", f"http://127.0.0.1:{port}/api/fhir/Patient/pat-anna", 401),
        ("another host on the same port", f"https://api.example.test:{port}/api/fhir/Patient/pat-anna", 401),
        ("another resource", f"{gw.origin}/api/fhir/Patient/pat-bjorn", 401),
    ]
    for name, htu, want in cases:
        r = anna.via_gateway(gw, "/Patient/pat-anna", htu=htu)
        assert r.status_code == want, (name, r.text)
        if want == 401:
            assert reason(r) == "dpop_htu_mismatch", name
            assert r.headers["www-authenticate"].startswith('DPoP error="invalid_dpop_proof"'), name


def test_trusted_forwarded_headers_are_the_gateways(fhir, jwks, pki, issuer):
    """Variant: no public origin and no stripped prefix in the policy; the sidecar takes both
    from X-Forwarded-Proto/-Host/-Prefix, which the gateway sets and a client cannot."""

    def trust_forwarded(p):
        p["dpop"]["trust_forwarded_headers"] = True
        del p["dpop"]["public_origins"]
        del p["dpop"]["stripped_path_prefix"]

    t = start(trust_forwarded, fhir, jwks, pki)
    try:
        gw, client = t.gateway, Client(issuer, pki)
        evil = "https://evil.example.org/evil/fhir/Patient/pat-anna"
        forged = {"X-Forwarded-Host": "evil.example.org", "X-Forwarded-Proto": "https",
                  "X-Forwarded-Prefix": "/evil"}
        cases = [
            ("public URI, origin and prefix from the gateway", None, {}, 200),
            ("the internal URI the sidecar sees", f"{INTERNAL}/fhir/Patient/pat-anna", {}, 401),
            ("public origin without the prefix", f"{gw.origin}/fhir/Patient/pat-anna", {}, 401),
            ("client-sent forwarded headers naming another server", evil, forged, 401),
            ("client-sent X-Forwarded-Host naming another server", "https://evil.example.org/api/fhir/Patient/pat-anna",
             {"X-Forwarded-Host": "evil.example.org"}, 401),
            ("client-sent forwarded headers are replaced, public URI still works", None, forged, 200),
            ("client-sent X-Forwarded-Proto http", f"http://127.0.0.1:{gw.port}/api/fhir/Patient/pat-anna",
             {"X-Forwarded-Proto": "http"}, 401),
        ]
        for name, htu, extra, want in cases:
            r = client.via_gateway(gw, "/Patient/pat-anna", htu=htu, extra=extra)
            assert r.status_code == want, (name, r.text)
            if want == 401:
                assert reason(r) == "dpop_htu_mismatch", name
    finally:
        t.stop()


# ---------------------------------------------------------------- RFC 8705 certificate-bound tokens

def test_certificate_bound_token_needs_the_certificate_the_gateway_saw(topo, anna_mtls, pki):
    gw = topo.gateway
    real = {"x-forwarded-client-cert": f"Hash={xfcc_hash(pki.client_x5t_s256)}"}
    other = {"x-forwarded-client-cert": f"Hash={'ab' * 32}"}
    cases = [
        ("the client certificate on the TLS connection", True, {}, 200, None),
        ("no client certificate", False, {}, 401, "mtls_cert_missing"),
        # SANITIZE_SET: what the client sends as XFCC never reaches the sidecar.
        ("no certificate, XFCC forged with the real certificate's hash", False, real, 401, "mtls_cert_missing"),
        ("real certificate, XFCC forged with another hash", True, other, 200, None),
    ]
    for name, cert, extra, want, code in cases:
        r = anna_mtls.via_gateway(gw, "/Patient/pat-anna", cert=cert, extra=extra)
        assert r.status_code == want, (name, r.text)
        if code:
            assert reason(r) == code, name
            assert r.headers["www-authenticate"].startswith('DPoP error="invalid_token"'), (name, r.headers)


def test_going_around_the_gateway_with_a_forged_xfcc(fhir, jwks, pki, topo, anna_mtls):
    """A client that reaches the sidecar directly and sends its own XFCC. A sidecar whose policy
    takes the certificate from its own connection (`client_cert_source: connection`) refuses it.
    A sidecar on `xfcc` cannot tell (the contrast below): it must be reachable from the gateway
    only (locally: loopback; in Istio: STRICT mesh mTLS and an AuthorizationPolicy naming the
    gateway's identity)."""
    forged = {"x-forwarded-client-cert": f"Hash={xfcc_hash(pki.client_x5t_s256)}"}

    def connection_source(p):
        p["dpop"]["mtls"]["client_cert_source"] = "connection"

    t = start(connection_source, fhir, jwks, pki, with_gateway=False)
    try:
        # The public URI the policy expects, so only the certificate check can refuse it.
        htu = f"{t.sidecar.policy['dpop']['public_origins'][0]}/api/fhir/Patient/pat-anna"
        denied(anna_mtls.direct(t.sidecar, "/Patient/pat-anna", htu, forged), "mtls_cert_missing", 401)
    finally:
        t.stop()
    # Contrast (the trust boundary, not a goal): the same forged request to the `xfcc` sidecar.
    htu = f"{topo.gateway.origin}/api/fhir/Patient/pat-anna"
    assert anna_mtls.direct(topo.sidecar, "/Patient/pat-anna", htu, forged).status_code == 200


# ---------------------------------------------------------------- SMART patient compartment (docs/checks.md §3)

def test_another_patients_record_refused_through_the_gateway(topo, anna, anna_mtls):
    for client in (anna, anna_mtls):
        denied(client.via_gateway(topo.gateway, f"/Patient/{BJORN}"), "compartment_escape", 403)


def test_another_patients_observation_by_id_refused_on_the_response(topo, anna):
    r = anna.via_gateway(topo.gateway, "/Observation/obs-anna-hb")
    assert r.status_code == 200, r.text
    assert r.json()["subject"]["reference"] == f"Patient/{ANNA}"
    r = denied(anna.via_gateway(topo.gateway, "/Observation/obs-bjorn-hb"), "response_outside_grant", 403)
    # Nothing of the foreign resource reaches the client through the gateway.
    assert BJORN not in r.text and "Hemoglobin" not in r.text
    assert topo.sidecar.counter("fhir_scope.denied.response_outside_grant") >= 1
