"""The chain plugin (root id `fapi_guard`): the one module `fapi_guard.wasm` attached ONCE, the
one layout envoy/render.py renders, running token, DPoP and FHIR scope as steps of one HTTP
context, the verified token handed on in memory (docs/checks.md, "One pipeline"). Every e2e test
runs with it; these are the plugin itself and the hazards of running the steps inside one
context, in real Envoy:

- one wasm filter, one V8 VM per thread; a root id that names no chain (unknown, missing, an
  unknown step, steps out of order) is refused at configuration, fail closed; the shape Istio
  renders from the one WasmPlugin (no vm_id) runs;

- a step that pauses (the token step fetching keys for a new `kid`) must hold the whole
  stream: body and trailers that arrive meanwhile are held and the FHIR scope step decides on
  all of them, over HTTP/1.1 chunked and HTTP/2, with and without trailers; nothing reaches the
  API before it decided;
- the token step's resume (keys answered) and the FHIR scope step's (stored read answered) in
  one stream;
- a denial by each step, with each filter's own counters;
- responses in reverse chain order: the DPoP step's `DPoP-Nonce` after the FHIR scope step let
  the response headers it held go.

Tokens and proofs come from joserfc (an independent library)."""
import base64
import hashlib
import json
import time
import uuid

import pytest
import requests
from joserfc import jws
from joserfc.jwk import ECKey

import render
from fhir_e2e import ANNA, AUD, BJORN, policy_for
from h2_tools import h1_chunked_request, h2_request
from harness import Envoy, EnvoyProcess, Issuer, JwksServer, build_wasm, free_port

pytestmark = pytest.mark.e2e

FORM = "application/x-www-form-urlencoded"
TRAILERS = {"x-client-checksum": "abc123"}
# How long the JWKS server takes to answer the refetch a new `kid` starts: the request's body
# and trailers arrive while the token step waits for it.
JWKS_DELAY = 1.0


class Proofs:
    """A DPoP key held by joserfc."""

    def __init__(self):
        self.key = ECKey.generate_key("P-256")
        self.jkt = self.key.thumbprint()

    def proof(self, htm, htu, token, nonce=None):
        h = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.key.as_dict(private=False)}
        ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
        c = {"jti": uuid.uuid4().hex, "htm": htm, "htu": htu, "iat": int(time.time()), "ath": ath}
        if nonce:
            c["nonce"] = nonce
        return jws.serialize_compact(h, json.dumps(c).encode(), self.key, algorithms=["ES256"])


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256",))


@pytest.fixture(scope="module")
def proofs():
    return Proofs()


def chain_policy(issuer, jwks):
    p = policy_for(issuer)  # DPoP required (no `dpop` section: the defaults)
    p["issuers"] = [{"issuer": issuer.iss, "jwks_uri": jwks.uri, "jwks_cluster": "issuer_jwks",
                     "jwks_refresh_seconds": 300, "jwks_min_refetch_seconds": 1,
                     "jwks_fetch_timeout_ms": 5000}]
    return p


class Chain:
    """An Envoy with the chain plugin and its own JWKS server; `cold()` rotates in a new key,
    so the next request with it waits for a (slow) key fetch."""

    def __init__(self, issuer, upstream_port):
        self.issuer = issuer
        self.jwks = JwksServer(issuer.jwks())
        self.extra = []
        self.envoy = Envoy(chain_policy(issuer, self.jwks), upstream_port, http1_trailers=True)
        deadline = time.time() + 10
        while self.envoy.counter("token.jwks.fetch_ok") < 1 and time.time() < deadline:
            time.sleep(0.1)
        assert self.envoy.counter("token.jwks.fetch_ok") >= 1

    def cold(self):
        key = Issuer.make_key("ES256", f"rotated-{uuid.uuid4().hex[:8]}")
        self.extra.append(key)
        self.jwks.delay = 0.0
        self.jwks.set_jwks(self.issuer.jwks(extra=self.extra))
        time.sleep(1.1)  # past `jwks_min_refetch_seconds` since the last refetch
        self.jwks.delay = JWKS_DELAY
        return key

    def stop(self):
        self.envoy.stop()
        self.jwks.stop()


@pytest.fixture(scope="module")
def echo_chain(upstream, issuer):
    c = Chain(issuer, upstream.port)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def api_chain(api, issuer):
    c = Chain(issuer, api)
    yield c
    c.stop()


TRANSPORTS = ["h1-chunked", "h1-chunked-trailers", "h2c", "h2c-trailers"]


def send(port, transport, method, path, headers, body=b""):
    trailers = TRAILERS if transport.endswith("-trailers") else None
    if transport.startswith("h1"):
        return h1_chunked_request(port, method, path, headers, body, trailers)
    return h2_request(port, method, path, headers, body, trailers)


def headers_for(chain, proofs, method, path, key=None, scope="patient/*.cruds", content_type=FORM):
    token = chain.issuer.token("ES256", key=key, aud=AUD, scope=scope, patient=ANNA, cnf={"jkt": proofs.jkt})
    htu = f"http://127.0.0.1:{chain.envoy.port}{path}"
    h = {"authorization": f"DPoP {token}", "dpop": proofs.proof(method, htu, token)}
    if content_type:
        h["content-type"] = content_type
    return h


def reason(body: bytes) -> str:
    b = json.loads(body)
    assert b["resourceType"] == "OperationOutcome", b
    return b["issue"][0]["details"]["coding"][0]["code"]


def test_one_plugin_is_one_wasm_filter_with_the_chain_root_id(upstream, issuer):
    cfg = render.render(policy_for(issuer), render.ORDER, "wasm", 1, upstream.port, 2)
    wasm = [f for f in cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    assert len(wasm) == 1
    c = wasm[0]["typed_config"]["config"]
    assert c["root_id"] == "fapi_guard" and c["vm_config"]["vm_id"] == "fapi_guard"
    assert c["vm_config"]["code"]["local"]["filename"].endswith("/fapi_guard.wasm")
    assert c["allow_on_headers_stop_iteration"] is True
    sub = render.render(policy_for(issuer), ["token", "dpop"], "wasm", 1, upstream.port, 2)
    (c,) = wasm_configs(sub)
    assert c["root_id"] == "fapi_guard:token,dpop"
    # No body to read without the FHIR scope step: the headers are not held for one.
    assert "allow_on_headers_stop_iteration" not in c


def wasm_configs(cfg):
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return [f["typed_config"]["config"] for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]


def plain_policy(issuer):
    """Keys inline (no JWKS server), DPoP optional: a Bearer token reaches every step."""
    p = policy_for(issuer)
    p["token"] = {"schemes": ["DPoP", "Bearer"]}
    p["dpop"] = {"required": False}
    return p


def v8_vms(envoy) -> int:
    return envoy.stats("wasm.envoy.wasm.runtime.v8")["wasm.envoy.wasm.runtime.v8.active"]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_chain_runs_in_one_vm_per_thread(upstream, issuer, workers):
    # Envoy keys a VM by vm_id + vm_config.configuration + code (bench/README.md, "Memory"):
    # one plugin -> one VM for the base, one on the main thread, one per worker.
    with Envoy(plain_policy(issuer), upstream.port, concurrency=workers) as e:
        tok = issuer.token("ES256", aud=AUD, scope="patient/*.rs", patient=ANNA)
        r = e.get(f"/fhir/Patient/{ANNA}", {"Authorization": f"Bearer {tok}"})
        assert r.status_code == 200, r.text
        # Each step ran (its own counters).
        assert e.counter("token.allowed") >= 1 and e.counter("dpop.allowed") >= 1
        assert e.counter("fhir_scope.allowed") >= 1
        assert v8_vms(e) == workers + 2


@pytest.mark.parametrize("root_id, want", [
    ("fapi_bogus", "unknown plugin root_id `fapi_bogus`"),
    ("", "no plugin root_id"),
    (None, "no plugin root_id"),
    ("fapi_guard:token,bogus", "plugin root_id `fapi_guard:token,bogus`: the chain plugin's steps name a step "
                               "that is not token, dpop or fhir_scope"),
    ("fapi_guard:dpop,token", "plugin root_id `fapi_guard:dpop,token`: the chain plugin's steps name steps "
                              "repeated or out of chain order"),
    ("fapi_guard:", "plugin root_id `fapi_guard:`: the chain plugin's steps name a step that is not"),
])
def test_a_root_id_naming_no_chain_is_refused_at_load(upstream, issuer, root_id, want):
    """Fail closed: Envoy refuses the listener rather than run a chain without a step it was
    told to run, or with one it does not know."""
    port, admin = free_port(), free_port()
    cfg = render.render(plain_policy(issuer), None, str(build_wasm()), port, upstream.port, admin)
    (c,) = wasm_configs(cfg)
    assert c["root_id"] == "fapi_guard"
    if root_id is None:
        del c["root_id"]
    else:
        c["root_id"] = root_id
    with pytest.raises((RuntimeError, TimeoutError)) as refused:
        EnvoyProcess(cfg, port, admin, "envoy-bad-root-id").stop()
    log = str(refused.value)
    assert want in log, log[-3000:]


def test_istio_shape_of_the_one_wasmplugin(upstream, issuer):
    """What Istio builds from the one WasmPlugin (pilot/pkg/model/extensions.go): `vm_id`
    empty, `name` = `<namespace>.<WasmPlugin name>`, `root_id` = `pluginName`; one VM per
    thread, and the chain decides."""
    port, admin = free_port(), free_port()
    cfg = render.render(plain_policy(issuer), None, str(build_wasm()), port, upstream.port, admin)
    (c,) = wasm_configs(cfg)
    c["name"] = "fhir.api-guard"
    c["vm_config"]["vm_id"] = ""
    with EnvoyProcess(cfg, port, admin, "envoy-istio-shape", concurrency=2) as e:
        tok = issuer.token("ES256", aud=AUD, scope="patient/*.rs", patient=ANNA)
        h = {"Authorization": f"Bearer {tok}"}
        assert requests.get(f"http://127.0.0.1:{e.port}/fhir/Patient/{ANNA}", headers=h, timeout=10).status_code == 200
        assert requests.get(f"http://127.0.0.1:{e.port}/fhir/Patient/{BJORN}", headers=h, timeout=10).status_code == 403
        assert e.stats("wasm.envoy.wasm.runtime.v8")["wasm.envoy.wasm.runtime.v8.active"] == 2 + 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cold_keys_search_form_for_another_patient_refused_on_the_held_body(echo_chain, upstream, proofs, transport):
    """The token step waits for keys; the form body (and trailers) arrive meanwhile and are
    held; the FHIR scope step then decides on them: refused, and the API got nothing."""
    key = echo_chain.cold()
    e, path = echo_chain.envoy, "/fhir/Observation/_search"
    hits, seen = echo_chain.jwks.hits, len(upstream.requests)
    denied_before = e.counter("fhir_scope.denied.compartment_escape") + e.counter("fhir_scope.denied.unsafe_search")
    allowed_before = e.counter("token.allowed"), e.counter("dpop.allowed")
    r = send(e.port, transport, "POST", path, headers_for(echo_chain, proofs, "POST", path, key),
             f"subject=Patient%2F{BJORN}".encode())
    assert echo_chain.jwks.hits == hits + 1, "the request did not wait for a key fetch"
    assert r.status == 403, (r.status, r.reset, r.text[:300])
    assert reason(r.body) in ("compartment_escape", "unsafe_search")
    assert len(upstream.requests) == seen, "the request reached the API"
    # Each step counted under its own name (stats prefix fapi_guard.<step>.).
    assert (e.counter("token.allowed"), e.counter("dpop.allowed")) == tuple(n + 1 for n in allowed_before)
    assert e.counter("fhir_scope.denied.compartment_escape") + e.counter(
        "fhir_scope.denied.unsafe_search") == denied_before + 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cold_keys_search_form_own_allowed_with_its_whole_body(api_chain, proofs, transport):
    """Same, allowed: the API gets the held body whole (its answer holds only Anna's
    observations, which it finds only by the form's `subject`)."""
    key = api_chain.cold()
    e, path = api_chain.envoy, "/fhir/Observation/_search"
    hits = api_chain.jwks.hits
    r = send(e.port, transport, "POST", path, headers_for(api_chain, proofs, "POST", path, key),
             f"subject=Patient%2F{ANNA}&category=laboratory".encode())
    assert api_chain.jwks.hits == hits + 1, "the request did not wait for a key fetch"
    assert r.status == 200, (r.status, r.reset, r.text[:300])
    bundle = json.loads(r.body)
    assert bundle["type"] == "searchset" and bundle.get("entry"), bundle
    for entry in bundle["entry"]:
        assert entry["resource"]["subject"]["reference"] == f"Patient/{ANNA}", entry


def obs_body(pid, oid, value):
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "valueQuantity": {"value": value, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"}}


@pytest.mark.parametrize("transport", ["h1-chunked-trailers", "h2c"])
def test_cold_keys_then_read_before_write(api_chain, api, proofs, transport):
    """Both resumes in one stream: the token step's (keys answered), then the FHIR scope
    step's (the stored read answered). A write to another patient's resource is refused and
    the API's copy is unchanged; a write to one's own goes through."""
    import requests

    def stored(path):
        return requests.get(f"http://127.0.0.1:{api}{path}", timeout=5).json()

    e = api_chain.envoy
    foreign = "/fhir/Observation/obs-bjorn-glucose"
    before = stored(foreign)
    key = api_chain.cold()
    hits = api_chain.jwks.hits
    h = headers_for(api_chain, proofs, "PUT", foreign, key, content_type="application/fhir+json")
    r = send(e.port, transport, "PUT", foreign, h, json.dumps(obs_body(ANNA, "obs-bjorn-glucose", 1.0)).encode())
    assert api_chain.jwks.hits == hits + 1
    assert r.status == 403, (r.status, r.reset, r.text[:300])
    assert reason(r.body) == "write_outside_compartment"
    assert stored(foreign) == before, "the write reached the API"

    own = "/fhir/Observation/obs-anna-glucose"
    current = stored(own)
    value = round(current["valueQuantity"]["value"] + 0.1, 1)
    current["valueQuantity"]["value"] = value
    key = api_chain.cold()
    hits = api_chain.jwks.hits
    h = headers_for(api_chain, proofs, "PUT", own, key, content_type="application/fhir+json")
    reads = e.counter("fhir_scope.stored_read")
    r = send(e.port, transport, "PUT", own, h, json.dumps(current).encode())
    assert api_chain.jwks.hits == hits + 1
    assert r.status == 200, (r.status, r.reset, r.text[:300])
    assert e.counter("fhir_scope.stored_read") == reads + 1
    assert stored(own)["valueQuantity"]["value"] == value


def test_denial_by_each_step(api_chain, proofs):
    """Each step refuses with its own answer and counter; the steps after it do not run."""
    e, path = api_chain.envoy, "/fhir/Observation/obs-anna-glucose"
    h = headers_for(api_chain, proofs, "GET", path, content_type=None)
    counts = lambda: {n: e.counter(n) for n in ("token.allowed", "dpop.allowed", "fhir_scope.allowed")}  # noqa: E731

    before = counts()
    r = send(e.port, "h2c", "GET", path, {"authorization": "DPoP not-a-token", "dpop": h["dpop"]})
    assert r.status == 401 and e.counter(f"token.denied.{reason(r.body)}") >= 1, r.text
    assert counts() == before

    r = send(e.port, "h2c", "GET", path, {"authorization": h["authorization"]})
    assert r.status == 401 and reason(r.body) == "dpop_missing", r.text
    assert e.counter("dpop.denied.dpop_missing") >= 1
    after = counts()
    assert after["token.allowed"] == before["token.allowed"] + 1
    assert after["dpop.allowed"] == before["dpop.allowed"]

    foreign = f"/fhir/Patient/{BJORN}"
    h = headers_for(api_chain, proofs, "GET", foreign, content_type=None)
    r = send(e.port, "h2c", "GET", foreign, h)
    assert r.status == 403, (r.status, r.text[:300])
    code = reason(r.body)
    assert e.counter(f"fhir_scope.denied.{code}") >= 1
    assert counts()["dpop.allowed"] == after["dpop.allowed"] + 1

    h = headers_for(api_chain, proofs, "GET", path, content_type=None)
    r = send(e.port, "h2c", "GET", path, h)
    assert r.status == 200 and json.loads(r.body)["id"] == "obs-anna-glucose", r.text[:300]


NONCE_SECRET = base64.urlsafe_b64encode(b"k" * 32).rstrip(b"=").decode()


def test_response_held_by_the_fhir_step_then_the_dpop_nonce(api, issuer, proofs):
    """Responses run in reverse chain order: the FHIR scope step holds the headers of a read
    decided on its response; only once it let them go does the DPoP step add its fresh
    `DPoP-Nonce` (RFC 9449 §9). A refused response carries nothing of the foreign resource.
    """
    p = policy_for(issuer)
    p["dpop"] = {"nonce": {"enabled": True, "secret": NONCE_SECRET, "window_seconds": 60}}
    with Envoy(p, api) as e:
        token = issuer.token("ES256", aud=AUD, scope="patient/*.rs", patient=ANNA, cnf={"jkt": proofs.jkt})

        def get(path, nonce=None):
            h = {"authorization": f"DPoP {token}",
                 "dpop": proofs.proof("GET", f"http://127.0.0.1:{e.port}{path}", token, nonce)}
            return h2_request(e.port, "GET", path, h)

        first = get("/fhir/Observation/obs-anna-hb")
        assert first.status == 401 and reason(first.body) == "use_dpop_nonce", first.text[:300]
        nonce = first.headers["dpop-nonce"]
        checked = e.counter("fhir_scope.response_checked")
        r = get("/fhir/Observation/obs-anna-hb", nonce)
        assert r.status == 200, (r.status, r.text[:300])
        assert json.loads(r.body)["subject"]["reference"] == f"Patient/{ANNA}"
        assert e.counter("fhir_scope.response_checked") == checked + 1, "not decided on the response"
        assert r.headers.get("dpop-nonce"), r.headers
        r = get("/fhir/Observation/obs-bjorn-hb", r.headers["dpop-nonce"])
        assert r.status == 403 and reason(r.body) == "response_outside_grant", (r.status, r.text[:300])
        assert "pat-bjorn" not in r.text and "15.4" not in r.text
