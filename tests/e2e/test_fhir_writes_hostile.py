"""Writes the compartment check cannot see (docs/checks.md §3), in real Envoy over
HTTP/1.1 and HTTP/2 (h2c prior knowledge), with curl as the client.

The upstream is the sample FHIR server (tests/fhir_upstream/server.py) made to act like real
FHIR servers do where the guard's view and the server's could differ:

- FHIRPath Patch paths are evaluated (`where()`, `select()`, `ofType()`, indexers);
- JSON Patch pointers are also read in their URI-fragment form (percent-decoded, RFC 6901 §6);
- conditional references (`Patient?identifier=...`) are resolved to the match (HAPI does);
- a conditional update with no match and a body `id` updates/creates that id (FHIR R4
  http.html#cond-update, "no matches, id provided");
- an unsupported search parameter (`performer` here) is ignored (lenient handling, §3.1.1.5.9);
- duplicate JSON member names are read first-wins (the guard's serde_json reads last-wins).

Each test shows the write refused with its reason code and the server's copy unchanged.
Every one of them fails on 83fac62 (the write passes and changes the server's copy).
"""
import copy
import json
import re
import subprocess
import threading
from http.server import ThreadingHTTPServer
from urllib.parse import unquote

import pytest

from harness import Envoy, Issuer


import server as fhir_server

pytestmark = pytest.mark.e2e

AUD = "fhir-e2e"
FHIR_JSON = "application/fhir+json"
BJORN_FNR = "urn:oid:2.16.578.1.12.4.1.4.1|02117100456"
PROTOCOLS = ["http1.1", "h2c"]


def first_wins(pairs):
    out = {}
    for k, v in pairs:
        out.setdefault(k, v)
    return out


class HostileFhir(fhir_server.Fhir):
    """The sample server, reading requests the way real FHIR servers may."""

    def __init__(self):
        super().__init__()
        self.stored_read_headers = []  # headers of GETs (the guard's stored reads)

    def handle(self, method, target, body, headers):
        if method == "GET":
            self.stored_read_headers.append(dict(headers))
        if body and body.lstrip()[:1] in (b"{", b"["):
            doc = json.loads(body, object_pairs_hook=first_wins)
            with self.store.lock:
                doc = self.resolve_conditional_refs(doc)
            body = json.dumps(doc).encode()
        return super().handle(method, target, body, headers)

    def resolve_conditional_refs(self, v):
        if isinstance(v, dict):
            out = {k: self.resolve_conditional_refs(x) for k, x in v.items()}
            ref = out.get("reference")
            if isinstance(ref, str) and "?" in ref:
                t, _, q = ref.partition("?")
                params = [tuple(p.split("=", 1)) for p in q.split("&") if "=" in p]
                found = self.store.search(t, params)["entry"]
                if len(found) == 1:
                    out["reference"] = f"{t}/{found[0]['resource']['id']}"
            return out
        if isinstance(v, list):
            return [self.resolve_conditional_refs(x) for x in v]
        return v

    def route(self, m, segs, params, body, headers):
        st = self.store
        # Lenient: `performer` is not supported here, so it is ignored.
        params = [(n, v) for n, v in params if n.split(":")[0] != "performer"]
        if m == "PUT" and len(segs) == 1 and params:
            r = json.loads(body)
            matches = st.search(segs[0], params)["entry"]
            if not matches and r.get("id"):
                return 201, st.put(r), {}  # no matches, id provided: update-as-create by id
        if m == "PATCH" and len(segs) == 2:
            cur = st.current(segs[0], segs[1])
            doc = json.loads(body) if body else None
            if cur and isinstance(doc, dict) and doc.get("resourceType") == "Parameters":
                return 200, st.put(fhirpath_patch(cur, doc)), {}
            if isinstance(doc, list):
                for op in doc:
                    for k in ("path", "from"):
                        if k in op:
                            op[k] = unquote(op[k])
                body = json.dumps(doc).encode()
        return super().route(m, segs, params, body, headers)


def fhirpath_patch(resource, params):
    """FHIRPath Patch `replace` with a small evaluator: functions that pass the focus through
    (`where(...)`, `ofType(...)`), `select(x)` as `.x`, indexers as the element."""
    r = copy.deepcopy(resource)
    for op in params["parameter"]:
        parts = {p["name"]: p for p in op["part"]}
        path = parts["path"]["valueString"]
        path = re.sub(r"\.select\((\w+)\)", r".\1", path)
        path = re.sub(r"\.(where|ofType)\([^)]*\)", "", path)
        path = re.sub(r"\[\d+\]", "", path)
        elems = path.split(".")[1:]
        value = next(v for k, v in parts["value"].items() if k.startswith("value"))
        target = r
        for e in elems[:-1]:
            target = target[e][0] if isinstance(target[e], list) else target[e]
        target[elems[-1]] = value
    return r


@pytest.fixture(scope="module")
def upstream():
    fhir = HostileFhir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), fhir_server.make_handler(fhir))
    httpd.daemon_threads = True
    httpd.fhir = fhir
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256",))


def policy_for(issuer, **fhir_over):
    fhir = {
        "base_path": "/fhir",
        "resource_types": ["Patient", "Observation", "Condition", "Encounter", "Practitioner"],
        "max_request_body_bytes": 65536,
    }
    fhir.update(fhir_over)
    return {
        "api": {"name": "fhir-e2e", "audience": AUD},
        "issuers": [{"issuer": issuer.iss, "jwks": issuer.jwks()}],
        "token": {"schemes": ["DPoP", "Bearer"]},
        "routes": [{"path_prefix": "/fhir/metadata", "methods": ["GET"], "require": "none"}],
        "fhir": fhir,
    }


@pytest.fixture(scope="module")
def envoy(upstream, issuer):
    pol = policy_for(issuer, read_before_write_headers=["x-tenant-id"])
    with Envoy(pol, upstream.server_address[1], filters=["token", "fhir_scope"]) as e:
        yield e


@pytest.fixture(scope="module")
def token(issuer):
    return issuer.token("ES256", aud=AUD, scope="openid launch/patient patient/*.cruds", patient="pat-anna")


def curl(envoy, proto, method, path, token, body=None, headers=None):
    """One request with curl (HTTP/1.1 or h2c prior knowledge); returns (status, body, version)."""
    args = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code} %{http_version}", "-X", method,
            "--http1.1" if proto == "http1.1" else "--http2-prior-knowledge",
            "-H", f"Authorization: DPoP {token}", "-H", "Expect:"]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        args += ["--data-binary", "@-"]
        if not any(k.lower() == "content-type" for k in (headers or {})):
            args += ["-H", f"content-type: {FHIR_JSON}"]
    args.append(envoy.url + path)
    out = subprocess.run(args, input=data, capture_output=True, timeout=20, check=True).stdout
    text, _, tail = out.rpartition(b"\n")
    status, version = tail.decode().split()
    assert version == ("1.1" if proto == "http1.1" else "2"), version
    return int(status), text


def refused(result, code, status=403):
    st, text = result
    assert st == status, (st, text[:300])
    oo = json.loads(text)
    assert oo["resourceType"] == "OperationOutcome", text
    assert oo["issue"][0]["details"]["coding"][0]["code"] == code, text


def server_copy(upstream, rtype, rid):
    return copy.deepcopy(upstream.fhir.store.current(rtype, rid))


def seed_obs(upstream, oid, pid="pat-anna", code="718-7"):
    with upstream.fhir.store.lock:
        upstream.fhir.store.put({"resourceType": "Observation", "id": oid, "status": "final",
                                 "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                                 "subject": {"reference": f"Patient/{pid}"},
                                 "performer": [{"reference": "Practitioner/prac-kari"}]})
    return server_copy(upstream, "Observation", oid)


def obs_ids(upstream):
    return sorted(r["id"] for r in upstream.fhir.store.all("Observation"))


def in_bjorns_compartment(upstream):
    return sorted(r["id"] for r in upstream.fhir.store.all("Observation")
                  if fhir_server.Fhir.in_compartment(r, "pat-bjorn"))


# ---- patches: only plain element paths ----

@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("path", ["Observation.where(true).subject", "Observation.select(subject)",
                                  "Observation.ofType(Observation).subject"])
def test_fhirpath_patch_non_plain_path_refused(envoy, upstream, token, proto, path):
    oid = f"obs-anna-fp-{proto.replace('.', '')}-{abs(hash(path)) % 10000}"
    before = seed_obs(upstream, oid)
    patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": path},
        {"name": "value", "valueReference": {"reference": "Patient/pat-bjorn"}}]}]}
    refused(curl(envoy, proto, "PATCH", f"/fhir/Observation/{oid}", token, patch), "unsafe_patch_path")
    assert server_copy(upstream, "Observation", oid) == before


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_json_patch_pointer_beyond_plain_members_refused(envoy, upstream, token, proto):
    oid = f"obs-anna-jp-{proto.replace('.', '')}"
    before = seed_obs(upstream, oid)
    patch = [{"op": "replace", "path": "/%73ubject/reference", "value": "Patient/pat-bjorn"}]
    refused(curl(envoy, proto, "PATCH", f"/fhir/Observation/{oid}", token, patch,
                 {"content-type": "application/json-patch+json"}), "unsafe_patch_path")
    assert server_copy(upstream, "Observation", oid) == before


# ---- conditional references ----

@pytest.mark.parametrize("proto", PROTOCOLS)
def test_conditional_reference_in_create_refused(envoy, upstream, token, proto):
    before = in_bjorns_compartment(upstream)
    body = {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": "Patient/pat-anna"},
            "performer": [{"reference": f"Patient?identifier={BJORN_FNR}"}]}
    refused(curl(envoy, proto, "POST", "/fhir/Observation", token, body), "conditional_reference")
    assert in_bjorns_compartment(upstream) == before


# ---- conditional update / delete / transaction entries ----

@pytest.mark.parametrize("proto", PROTOCOLS)
def test_conditional_update_with_body_id_refused(envoy, upstream, token, proto):
    oid = f"obs-bjorn-cu-{proto.replace('.', '')}"
    before = seed_obs(upstream, oid, "pat-bjorn")
    body = {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": "Patient/pat-anna"}}
    r = curl(envoy, proto, "PUT", "/fhir/Observation?patient=pat-anna&identifier=urn:x|none", token, body)
    refused(r, "unsafe_conditional_write")
    assert server_copy(upstream, "Observation", oid) == before


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_conditional_delete_server_ignoring_the_pin_refused(envoy, upstream, token, proto):
    code = f"cd-{proto.replace('.', '')}"
    seed_obs(upstream, f"obs-anna-{code}", "pat-anna", code)
    seed_obs(upstream, f"obs-bjorn-{code}", "pat-bjorn", code)
    before = obs_ids(upstream)
    r = curl(envoy, proto, "DELETE", f"/fhir/Observation?performer=Patient/pat-anna&code={code}", token)
    refused(r, "write_outside_compartment")
    assert obs_ids(upstream) == before


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_conditional_update_in_transaction_refused(envoy, upstream, token, proto):
    oid = f"obs-bjorn-tx-{proto.replace('.', '')}"
    before = seed_obs(upstream, oid, "pat-bjorn")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "request": {"method": "PUT", "url": "Observation?patient=pat-anna&identifier=urn:x|none"},
        "resource": {"resourceType": "Observation", "status": "final",
                     "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                     "subject": {"reference": "Patient/pat-anna"}, "id": oid}}]}
    refused(curl(envoy, proto, "POST", "/fhir", token, bundle), "unsafe_conditional_write")
    assert server_copy(upstream, "Observation", oid) == before


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_conditional_delete_own_pinned_allowed(envoy, upstream, token, proto):
    """The allowed side: every stored match is Anna's, so the delete goes through."""
    code = f"ok-{proto.replace('.', '')}"
    seed_obs(upstream, f"obs-anna-{code}", "pat-anna", code)
    st, _ = curl(envoy, proto, "DELETE", f"/fhir/Observation?patient=pat-anna&code={code}", token)
    assert st == 204
    assert upstream.fhir.store.current("Observation", f"obs-anna-{code}") is None


# ---- duplicate member names ----

@pytest.mark.parametrize("proto", PROTOCOLS)
def test_duplicate_member_names_refused(envoy, upstream, token, proto):
    before = in_bjorns_compartment(upstream)
    raw = (b'{"resourceType":"Observation","status":"final",'
           b'"code":{"coding":[{"system":"http://loinc.org","code":"718-7"}]},'
           b'"subject":{"reference":"Patient/pat-bjorn"},"subject":{"reference":"Patient/pat-anna"}}')
    refused(curl(envoy, proto, "POST", "/fhir/Observation", token, raw), "duplicate_json_member", 400)
    assert in_bjorns_compartment(upstream) == before


# ---- read before write carries the tenant headers the policy names ----

@pytest.mark.parametrize("proto", PROTOCOLS)
def test_stored_read_carries_tenant_header_not_credentials(envoy, upstream, token, proto):
    oid = f"obs-anna-rbw-{proto.replace('.', '')}"
    seed_obs(upstream, oid)
    upstream.fhir.stored_read_headers.clear()
    patch = [{"op": "replace", "path": "/status", "value": "amended"}]
    st, _ = curl(envoy, proto, "PATCH", f"/fhir/Observation/{oid}", token, patch,
                 {"content-type": "application/json-patch+json", "x-tenant-id": "tenant-7",
                  "cookie": "session=s"})
    assert st == 200
    assert upstream.fhir.store.current("Observation", oid)["status"] == "amended"
    reads = upstream.fhir.stored_read_headers
    assert len(reads) == 1
    assert reads[0].get("x-tenant-id") == "tenant-7"
    assert not {"authorization", "dpop", "cookie"} & set(reads[0])
