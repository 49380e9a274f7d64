"""The audit record (docs/audit.md) in real Envoy: the guard attached as the one plugin writes
one record per request a protected route sees as filter state, and the rendered JSON access log
(render.py `audit_log`) carries it. HelseID-shaped tokens and proofs (tests/e2e/helseid_shapes.py,
joserfc) in front of the sample FHIR API (tests/fhir_upstream/server.py: `pat-anna`,
`pat-bjorn`). Every request carries its own `x-request-id`, so "exactly once" is counted per id.
"""
import gzip
import json
import os
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

import server as fhir_server  # tests/fhir_upstream/server.py (pytest.ini pythonpath)
from harness import Envoy, build_wasm, render, validate_config
from helseid_shapes import HELSEID_DPOP_ALGS, ORG_PARENT, HelseId, proof, proof_key

pytestmark = pytest.mark.e2e

AUD = "nhn:audit-e2e"
ANNA, BJORN = "pat-anna", "pat-bjorn"
HPR = "helseid://claims/hpr/hpr_number"
ORG_CHILD = "helseid://claims/client/claims/orgnr_child"
TRUST = [{"type": "nhn:tillitsrammeverk:parameters",
          "care_relationship": {"purpose_of_use": {"code": "TREAT", "system": "urn:oid:2.16.840.1.113883.1.11.20448"}}}]


def policy(helseid, mode="enforce"):
    return {
        "api": {"name": "audit-e2e", "audience": AUD, "sole_audience": True},
        "issuers": [{"issuer": "https://helseid-sts.test.nhn.no", "jwks": helseid.jwks()}],
        "token": {"schemes": ["DPoP"], "allowed_algs": ["RS256"], "require_sub": False, "allow_typ_jwt": True},
        "dpop": {"allowed_algs": HELSEID_DPOP_ALGS},
        "mode": mode,
        "routes": [{"path_prefix": "/fhir/metadata", "methods": ["GET"], "require": "none"}],
        "fhir": {"base_path": "/fhir", "patient_claim": "patient",
                 "resource_types": ["Patient", "Observation", "Condition"]},
    }


@pytest.fixture(scope="module")
def helseid():
    return HelseId()


@pytest.fixture(scope="module")
def key():
    return proof_key("ES256")


class Run:
    """One Envoy with the audit log in a file; remembers every token and proof it sent."""

    def __init__(self, helseid, api, mode, pol=None, name=None):
        self.secrets: list[str] = []
        self.helseid = helseid
        d = os.environ.get("FAPI_GUARD_AUDIT_DIR") or f"/tmp/fapi-guard-audit-{uuid.uuid4().hex}"
        os.makedirs(d, exist_ok=True)
        self.log_file = os.path.join(d, f"access-{name or mode}.log")
        self.envoy = Envoy(pol or policy(helseid, mode), api, audit_log=self.log_file,
                           log_level="info")

    def call(self, key, path, method="GET", token_claims=None, tamper_proof=False, token=True, headers=None,
             json_body=None, stream=False, data=None):
        rid = uuid.uuid4().hex
        h = {"x-request-id": rid, "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
             **(headers or {})}
        url = self.envoy.url + path
        if token:
            t = self.helseid.token(AUD, key.thumbprint(), **(token_claims or {}))
            p = proof(key, "ES256", method, url, t)
            if tamper_proof:
                head, sig = p.rsplit(".", 1)
                p = head + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
            self.secrets += [t.rsplit(".", 1)[1], p.rsplit(".", 1)[1]]
            h.update({"Authorization": f"DPoP {t}", "DPoP": p})
        r = requests.request(method, url, headers=h, timeout=10, json=json_body, stream=stream, data=data)
        return r, rid, h["traceparent"]

    def lines(self, rid=None):
        """Every line of the access log; with `rid`, waits until that request's line is written
        (Envoy flushes access-log files every 200 ms here, tools/fapi_guard_py/envoy.py), then a
        few more flush periods
        (a second line would show by then)."""
        deadline = time.time() + 8
        while True:
            with open(self.log_file, encoding="utf-8") as f:
                lines = [json.loads(line) for line in f if line.strip()]
            if rid is None or any(x.get("request_id") == rid for x in lines) or time.time() > deadline:
                break
            time.sleep(0.2)
        if rid is not None:
            time.sleep(0.6)
            with open(self.log_file, encoding="utf-8") as f:
                lines = [json.loads(line) for line in f if line.strip()]
        return lines

    def record(self, rid):
        """The one access-log line of request `rid`, and its audit record (exactly once)."""
        mine = [line for line in self.lines(rid) if line.get("request_id") == rid]
        assert len(mine) == 1, mine
        raw = mine[0].get("fapi_guard_audit")
        assert isinstance(raw, str) and raw.startswith("{"), mine[0]
        rec = json.loads(raw)
        assert rec["request_id"] == rid
        return mine[0], rec


@pytest.fixture(scope="module")
def enforce(helseid, api):
    r = Run(helseid, api, "enforce")
    yield r
    r.envoy.stop()


@pytest.fixture(scope="module")
def shadow(helseid, api):
    r = Run(helseid, api, "shadow")
    yield r
    r.envoy.stop()


def user(patient=ANNA, scope=("patient/Observation.rs", "patient/Patient.rs")):
    return {"scope": scope, "patient": patient, HPR: "565501872", ORG_PARENT: "999977775",
            ORG_CHILD: "999988887", "authorization_details": TRUST}


def test_allowed_user_token_fields(enforce, key):
    r, rid, tp = enforce.call(key, f"/fhir/Observation?patient={ANNA}", token_claims=user())
    assert r.status_code == 200, r.text
    line, rec = enforce.record(rid)
    assert line["response_code"] == 200
    assert rec["decision"] == "allow" and "reason" not in rec
    assert rec["traceparent"] == tp
    assert rec["api"] == "audit-e2e" and rec["method"] == "GET" and rec["path"] == "/fhir/Observation"
    assert rec["fhir"] == {"interaction": "search-type", "resource_type": "Observation"}
    assert rec["token_verified"] is True
    assert rec["client_id"] == "7f3c2a9e-1b4d-4f6e-9a8b-2c1d0e9f8a7b"
    assert rec["sub"] == "y7kmWl2WGQ0cqC5fVJ1wxEHDu9wfVyVuf4Kf7iVLwwE="
    assert rec["hpr_number"] == "565501872" and rec["security_level"] == "4"
    assert rec["assurance_level"] == "high"
    assert rec["orgnr_parent"] == "999977775" and rec["orgnr_child"] == "999988887"
    assert rec["authorization_details_types"] == ["nhn:tillitsrammeverk:parameters"]
    assert rec["purpose_of_use"] == "TREAT"
    assert rec["patient"] == ANNA and rec["patients_named"] == [ANNA]
    assert rec["jkt"] == key.thumbprint() and len(rec["jti"]) == 32
    # The user's national identity number is not an audit field.
    assert "12345678901" not in json.dumps(line)


def test_client_credentials_without_sub(enforce, key):
    r, rid, _ = enforce.call(key, f"/fhir/Patient/{ANNA}",
                             token_claims={"sub": False, "scope": ("system/Patient.rs",)})
    assert r.status_code == 200, r.text
    _, rec = enforce.record(rid)
    assert rec["decision"] == "allow"
    assert rec["fhir"] == {"interaction": "read", "resource_type": "Patient", "id": ANNA}
    assert rec["patients_named"] == [ANNA]
    assert rec["client_id"] == "7f3c2a9e-1b4d-4f6e-9a8b-2c1d0e9f8a7b"
    for absent in ("sub", "hpr_number", "security_level", "patient"):
        assert absent not in rec, absent


@pytest.mark.parametrize("case, step, reason, status", [
    ("no_token", "token", "missing_token", 401),
    ("bad_proof", "dpop", "dpop_bad_signature", 401),
    ("other_patient", "fhir_scope", None, 403),
])
def test_denied_by_each_step(enforce, key, case, step, reason, status):
    path = f"/fhir/Observation?patient={BJORN if case == 'other_patient' else ANNA}"
    r, rid, _ = enforce.call(key, path, token_claims=user(), token=case != "no_token",
                             tamper_proof=case == "bad_proof")
    assert r.status_code == status, r.text
    line, rec = enforce.record(rid)
    assert line["response_code"] == status
    assert rec["decision"] == "deny" and rec["step"] == step
    if reason:
        assert rec["reason"] == reason
    else:
        assert rec["reason"]
    assert rec["token_verified"] is (case != "no_token")
    if case == "other_patient":
        assert rec["patients_named"] == [BJORN] and rec["patient"] == ANNA


def test_refused_before_routing(enforce, key):
    """A method override is refused before any step (a local reply without a route)."""
    r, rid, _ = enforce.call(key, f"/fhir/Observation?patient={ANNA}", method="POST", token_claims=user(),
                             headers={"X-HTTP-Method-Override": "DELETE"})
    assert r.status_code in (400, 401, 403), r.text
    _, rec = enforce.record(rid)
    assert rec["decision"] == "deny" and rec["route"] == "(refused)" and rec["reason"]


def test_refused_on_the_response(enforce, key):
    """A read by id the request cannot decide: the response names another patient."""
    r, rid, _ = enforce.call(key, "/fhir/Observation/obs-bjorn-hb", token_claims=user())
    assert r.status_code in (403, 404), r.text
    line, rec = enforce.record(rid)
    assert line["response_code"] == r.status_code
    assert rec["decision"] == "deny" and rec["step"] == "fhir_scope"
    assert rec["fhir"] == {"interaction": "read", "resource_type": "Observation", "id": "obs-bjorn-hb"}
    # And one it lets go, decided on the response too.
    r, rid, _ = enforce.call(key, "/fhir/Observation/obs-anna-hb", token_claims=user())
    assert r.status_code == 200, r.text
    assert enforce.record(rid)[1]["decision"] == "allow"


def test_refused_after_the_stored_read(enforce, key):
    """A delete by id under a patient grant: the guard reads the stored resource first (read
    before write) and refuses it there, another patient's; the record is written then."""
    reads = enforce.envoy.counter("fhir_scope.stored_read")
    r, rid, _ = enforce.call(key, "/fhir/Observation/obs-bjorn-glucose", method="DELETE",
                             token_claims=user(scope=("patient/Observation.d",)))
    assert r.status_code in (403, 404), r.text
    assert enforce.envoy.counter("fhir_scope.stored_read") == reads + 1
    line, rec = enforce.record(rid)
    assert line["response_code"] == r.status_code
    assert rec["decision"] == "deny" and rec["step"] == "fhir_scope" and rec["method"] == "DELETE"
    assert rec["fhir"] == {"interaction": "delete", "resource_type": "Observation", "id": "obs-bjorn-glucose"}


def test_client_reset_while_held(enforce, key):
    """A `_search` by POST is decided on its form body: the client sends half of it and
    closes. The stream ends in its log phase without a decision: one record, `undecided`."""
    rid = uuid.uuid4().hex
    url = enforce.envoy.url + "/fhir/Observation/_search"
    t = enforce.helseid.token(AUD, key.thumbprint(), **user())
    p = proof(key, "ES256", "POST", url, t)
    enforce.secrets += [t.rsplit(".", 1)[1], p.rsplit(".", 1)[1]]
    head = (f"POST /fhir/Observation/_search HTTP/1.1\r\nHost: 127.0.0.1:{enforce.envoy.port}\r\n"
            f"x-request-id: {rid}\r\nAuthorization: DPoP {t}\r\nDPoP: {p}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\npatient=pat-")
    with socket.create_connection(("127.0.0.1", enforce.envoy.port), timeout=5) as s:
        s.sendall(head.encode())
        time.sleep(0.5)
    line, rec = enforce.record(rid)
    assert "DC" in line["response_flags"], line
    assert rec["decision"] == "undecided" and rec["method"] == "POST" and rec["token_verified"]
    assert rec["fhir"]["interaction"] == "search-type"


def test_public_route_has_no_record(enforce, key):
    r, rid, _ = enforce.call(key, "/fhir/metadata", token=False)
    line = [x for x in enforce.lines(rid) if x.get("request_id") == rid]
    assert len(line) == 1 and line[0]["fapi_guard_audit"] is None, line


def test_shadow_denials(shadow, key):
    r, rid, _ = shadow.call(key, f"/fhir/Observation?patient={ANNA}", token=False)
    assert r.status_code != 401
    _, rec = shadow.record(rid)
    assert rec["decision"] == "shadow_deny" and rec["reason"] == "missing_token" and rec["step"] == "token"
    r, rid, _ = shadow.call(key, "/fhir/Observation/obs-bjorn-hb", token_claims=user())
    assert r.status_code == 200, r.text
    _, rec = shadow.record(rid)
    assert rec["decision"] == "shadow_deny" and rec["step"] == "fhir_scope" and rec["token_verified"]
    r, rid, _ = shadow.call(key, f"/fhir/Observation?patient={ANNA}", token_claims=user())
    assert shadow.record(rid)[1]["decision"] == "allow"


def test_access_log_converts_to_balp_audit_events(enforce):
    """tools/audit_to_fhir.py on this run's access log: one AuditEvent per record, each valid
    for an independent FHIR model library (fhir.resources, R4B's AuditEvent = R4's)."""
    import audit_to_fhir  # tools/ (pytest.ini pythonpath)
    from fhir.resources.R4B.auditevent import AuditEvent

    with open(enforce.log_file, encoding="utf-8") as f:
        pairs = list(audit_to_fhir.records(f))
    assert len(pairs) >= 8
    outcomes = set()
    for rec, line in pairs:
        ev = audit_to_fhir.audit_event(rec, line)
        AuditEvent.model_validate(ev)
        outcomes.add(ev["outcome"])
    assert outcomes == {"0", "4", "8"}


def test_stdout_audit_log_validates(helseid, tmp_path):
    """`--audit-log stdout`: Envoy's stdout access logger with the same JSON format."""
    cfg = render.render(policy(helseid), None, str(build_wasm()), 10000, 8080, 9901,
                        audit_log="stdout")
    (log,) = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["access_log"]
    assert log["name"] == "envoy.access_loggers.stdout"
    assert log["typed_config"]["log_format"]["json_format"]["fapi_guard_audit"] == \
        "%FILTER_STATE(wasm.fapi_guard.audit:PLAIN)%"
    path = tmp_path / "stdout.json"
    path.write_text(json.dumps(cfg))
    r = validate_config(path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_token_or_proof_in_any_log(enforce, shadow):
    """Runs last in this file: every token signature and proof signature sent above is absent
    from the Envoy logs (info level, the harness default) and the access logs."""
    secrets = enforce.secrets + shadow.secrets
    assert len(secrets) >= 10
    for run in (enforce, shadow):
        texts = [run.envoy.logs(), open(run.log_file, encoding="utf-8").read()]
        for text in texts:
            assert len(text) > 100
            for s in secrets:
                assert s not in text
            # Nor any other compact JWS (token or proof: both start with a JSON header).
            assert not re.search(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}", text)


# ---- Patients the bodies name (docs/audit.md "Patients") ----

class ChunkedFhir:
    """The sample FHIR API (tests/fhir_upstream/server.py) answering with a chunked body
    (RFC 9112 §7.1) in two chunks, as HAPI FHIR streams a response it writes through the
    servlet's writer. With `Accept-Encoding: gzip` it compresses the answer, as HAPI's
    `RestfulServerUtils.determineResponseEncodingWithDefault`/`GZIPOutputStream` path does;
    `_format=xml` answers FHIR XML (`application/fhir+xml`, R4 http.html "Content Types").
    A request with `x-test-wait: 1` gets its second chunk only once `go` is set (or after
    5 s, noted in `timed_out`), so a test sees whether the first bytes went by early."""

    def __init__(self):
        self.fhir = fhir_server.Fhir()
        self.go = threading.Event()
        self.timed_out = False
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, res, _ = outer.fhir.handle(self.command, self.path, body, headers)
                data = json.dumps(res).encode() if res is not None else b""
                ctype = "application/fhir+json; charset=utf-8"
                if "_format=xml" in self.path:
                    ctype = "application/fhir+xml; charset=utf-8"
                    data = b'<Bundle xmlns="http://hl7.org/fhir"><type value="searchset"/></Bundle>'
                self.send_response(status)
                if "gzip" in (headers.get("accept-encoding") or ""):
                    data = gzip.compress(data)
                    self.send_header("content-encoding", "gzip")
                self.send_header("content-type", ctype)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                half = len(data) // 2
                for i, part in enumerate((data[:half], data[half:])):
                    if i == 1 and headers.get("x-test-wait") == "1":
                        outer.timed_out = not outer.go.wait(5)
                    if part:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                        self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def chunked():
    u = ChunkedFhir()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def bodies(helseid, chunked):
    r = Run(helseid, chunked.port, "enforce", name="bodies")
    yield r
    r.envoy.stop()


IDENTITY = {"Accept-Encoding": "identity"}
PRACTITIONER = {"scope": ("user/Observation.cruds", "user/Patient.rs"), HPR: "565501872",
                "authorization_details": TRUST}


def test_user_search_names_every_patient_of_the_searchset(bodies, key):
    r, rid, _ = bodies.call(key, "/fhir/Observation?code=718-7", token_claims=PRACTITIONER, headers=IDENTITY)
    assert r.status_code == 200, r.text
    assert {e["resource"]["subject"]["reference"] for e in r.json()["entry"]} == \
        {f"Patient/{ANNA}", f"Patient/{BJORN}"}
    _, rec = bodies.record(rid)
    assert rec["decision"] == "allow" and "patient" not in rec
    assert rec["patients_named"] == [ANNA, BJORN]
    assert rec["patients_complete"] is True and "patients_unread" not in rec
    # Ids only: nothing of the bodies.
    assert "718-7" not in json.dumps(rec) and "Hemoglobin" not in json.dumps(rec)


def test_user_create_names_the_subject_of_its_body(bodies, key):
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": f"Patient/{BJORN}"}}
    r, rid, _ = bodies.call(key, "/fhir/Observation", method="POST", token_claims=PRACTITIONER,
                            json_body=obs, headers={"Content-Type": "application/fhir+json", **IDENTITY})
    assert r.status_code == 201, r.text
    _, rec = bodies.record(rid)
    assert rec["fhir"]["interaction"] == "create"
    assert rec["patients_named"] == [BJORN] and rec["patients_complete"] is True


def test_user_form_search_names_the_patient_of_its_body(bodies, key):
    # FHIR R4 http.html#search: a `POST _search` form body holds search parameters.
    r, rid, _ = bodies.call(key, "/fhir/Observation/_search?code=718-7", method="POST",
                            token_claims=PRACTITIONER, data=f"patient={BJORN}",
                            headers={"Content-Type": "application/x-www-form-urlencoded", **IDENTITY})
    assert r.status_code == 200, r.text
    assert {e["resource"]["subject"]["reference"] for e in r.json()["entry"]} == {f"Patient/{BJORN}"}
    _, rec = bodies.record(rid)
    assert rec["fhir"]["interaction"] == "search-type"
    assert rec["patients_named"] == [BJORN] and rec["patients_complete"] is True, rec
    assert "718-7" not in json.dumps(rec)


def test_patient_grant_refusal_names_the_other_patient(bodies, key):
    r, rid, _ = bodies.call(key, "/fhir/Observation/obs-bjorn-hb", token_claims=user(), headers=IDENTITY)
    assert r.status_code in (403, 404), r.text
    _, rec = bodies.record(rid)
    assert rec["decision"] == "deny" and rec["step"] == "fhir_scope"
    assert rec["patient"] == ANNA and rec["patients_named"] == [BJORN]


@pytest.mark.parametrize("case, unread", [("xml", "response_not_json"), ("gzip", "response_encoded")])
def test_what_the_record_cannot_read_is_said(bodies, key, case, unread):
    path = "/fhir/Observation?code=718-7" + ("&_format=xml" if case == "xml" else "")
    r, rid, _ = bodies.call(key, path, token_claims=PRACTITIONER,
                            headers={"Accept-Encoding": "gzip" if case == "gzip" else "identity"})
    assert r.status_code == 200, r.text
    if case == "gzip":
        assert r.headers["content-encoding"] == "gzip" and r.json()["resourceType"] == "Bundle"
    _, rec = bodies.record(rid)
    assert rec["decision"] == "allow" and "patients_named" not in rec
    assert rec["patients_complete"] is False and rec["patients_unread"] == unread


def test_the_observed_response_is_not_held(bodies, chunked, key):
    """The first chunk reaches the client while the upstream still holds back the second:
    the guard observes the body (user grant, nothing to check), it does not buffer it."""
    chunked.go.clear()
    r, rid, _ = bodies.call(key, "/fhir/Observation?code=718-7", token_claims=PRACTITIONER,
                            headers={"x-test-wait": "1", "Accept-Encoding": "identity"}, stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    parts = r.iter_content(chunk_size=1)
    first = next(parts)
    early = not chunked.timed_out
    chunked.go.set()
    rest = first + b"".join(parts)
    assert early, "the first bytes came only after the upstream gave up waiting"
    assert json.loads(rest)["resourceType"] == "Bundle"
    _, rec = bodies.record(rid)
    assert rec["patients_named"] == [ANNA, BJORN] and rec["patients_complete"] is True


REST_AUD = "nhn:audit-rest-e2e"


def test_rest_route_names_its_patient(helseid, chunked, key):
    """A plain REST API: `routes[].audit.patient_path_param` names the patient of the path."""
    pol = {
        "api": {"name": "audit-rest-e2e", "audience": REST_AUD, "denial_format": "problem+json"},
        "issuers": [{"issuer": "https://helseid-sts.test.nhn.no", "jwks": helseid.jwks()}],
        "token": {"schemes": ["DPoP"], "allowed_algs": ["RS256"], "require_sub": False, "allow_typ_jwt": True},
        "dpop": {"allowed_algs": HELSEID_DPOP_ALGS},
        "routes": [{"path_prefix": "/patients/{pid}/notes", "require": "token",
                    "audit": {"patient_path_param": "pid"}},
                   {"path_prefix": "/journal", "require": "token",
                    "audit": {"patient_query_param": "patient"}}],
    }
    run = Run(helseid, chunked.port, "enforce", pol, name="rest")
    try:
        for path, pid in (("/patients/p-77/notes/3", "p-77"), ("/journal?x=1&patient=p%2D88", "p-88")):
            rid = uuid.uuid4().hex
            url = run.envoy.url + path
            t = helseid.token(REST_AUD, key.thumbprint(), scope=("nhn:sample-rest/read",))
            h = {"x-request-id": rid, "Authorization": f"DPoP {t}", "DPoP": proof(key, "ES256", "GET", url, t)}
            r = requests.get(url, headers=h, timeout=10)
            assert r.status_code == 404, r.text  # the upstream has no such path; the guard let it go
            _, rec = run.record(rid)
            assert rec["decision"] == "allow" and rec["patients_named"] == [pid]
            assert "fhir" not in rec and "patients_complete" not in rec
    finally:
        run.envoy.stop()


def test_record_false_writes_no_record(helseid, chunked, key):
    """`"audit": {"record": false}`: no record is built, the access-log line stays."""
    pol = {**policy(helseid), "audit": {"record": False}}
    run = Run(helseid, chunked.port, "enforce", pol, name="norecord")
    try:
        r, rid, _ = run.call(key, "/fhir/Observation?code=718-7", token_claims=PRACTITIONER, headers=IDENTITY)
        assert r.status_code == 200, r.text
        mine = [x for x in run.lines(rid) if x.get("request_id") == rid]
        assert len(mine) == 1 and mine[0]["fapi_guard_audit"] is None, mine
    finally:
        run.envoy.stop()
