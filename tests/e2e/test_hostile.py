"""Hostile inputs in real Envoy (issue 13). Each is answered 4xx/5xx, the proxy stays alive,
and the next valid request is served. Every case is bounded in time.

Chain: token -> fhir_scope -> a local upstream that can misbehave (reset mid-response, deeply
nested JSON). Tokens come from joserfc (harness.Issuer)."""
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import render  # envoy/render.py (pytest.ini pythonpath)
from harness import Envoy, EnvoyProcess, Issuer, JwksServer, build_wasm, free_port, sign_es256

pytestmark = pytest.mark.e2e

AUD = "hostile-e2e"
ANNA = "pat-anna"
FHIR_JSON = "application/fhir+json"
BODY_LIMIT = 4096
NESTED = b"[" * 5000 + b"]" * 5000


def obs(oid="obs-anna", pid=ANNA):
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"text": "hb"}, "subject": {"reference": f"Patient/{pid}"}}


class HostileUpstream:
    """A FHIR-ish upstream on loopback. Paths: .../reset (RST after part of the body),
    .../nested (JSON nested 5000 deep), POST /fhir (batch-response of Observations);
    anything else answers the requested Observation for pat-anna. `seen` lists the requests."""

    def __init__(self):
        self.seen = []
        server = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status, body: bytes):
                self.send_response(status)
                self.send_header("content-type", FHIR_JSON)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                server.seen.append(("GET", self.path))
                if self.path.endswith("/reset"):
                    self.send_response(200)
                    self.send_header("content-type", FHIR_JSON)
                    self.send_header("content-length", "5000")
                    self.end_headers()
                    self.wfile.write(b'{"resourceType": "Observation", "id": "re')
                    self.wfile.flush()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if self.path.endswith("/nested"):
                    return self._send(200, NESTED)
                return self._send(200, json.dumps(obs(self.path.rsplit("/", 1)[-1])).encode())

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n)
                server.seen.append(("POST", self.path, len(body)))
                entries = [{"resource": obs(), "response": {"status": "200 OK"}}
                           for _ in json.loads(body).get("entry", [])]
                self._send(200, json.dumps({"resourceType": "Bundle", "type": "batch-response",
                                            "entry": entries}).encode())

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
def upstream():
    u = HostileUpstream()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256",))


def policy_for(issuer_doc):
    return {
        "api": {"name": "hostile-e2e", "audience": AUD},
        "issuers": [issuer_doc],
        "token": {"schemes": ["DPoP", "Bearer"]},
        "fhir": {"base_path": "/fhir", "patient_claim": "patient",
                 "resource_types": ["Patient", "Observation"],
                 "max_request_body_bytes": BODY_LIMIT,
                 "response_check": {"max_body_bytes": 65536}},
    }


@pytest.fixture(scope="module")
def envoy(upstream, issuer):
    p = policy_for({"issuer": issuer.iss, "jwks": issuer.jwks()})
    with Envoy(p, upstream.port, filters=["token", "fhir_scope"]) as e:
        yield e


def auth(issuer, **claims):
    c = {"aud": AUD, "scope": "patient/*.cruds", "patient": ANNA}
    c.update(claims)
    return {"Authorization": f"Bearer {issuer.token('ES256', **c)}"}


def assert_still_serving(e, issuer):
    assert e.proc.poll() is None, "envoy exited"
    r = e.get("/fhir/Observation/obs-anna", auth(issuer))
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.json()["subject"]["reference"] == f"Patient/{ANNA}"


def raw_request(port, data: bytes, timeout=10.0) -> bytes:
    """Sends raw bytes; returns what came back until close or timeout (status line first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while b"\r\n\r\n" not in out:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return out


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


# ---- headers ----

def test_60kb_header_refused(envoy, issuer):
    h = auth(issuer)
    h["x-pad"] = "a" * 60 * 1024
    r = envoy.get("/fhir/Observation/obs-anna", h)
    assert r.status_code == 431
    assert_still_serving(envoy, issuer)


def test_10000_headers_refused(envoy, issuer):
    lines = "".join(f"x-h{i}: v\r\n" for i in range(10_000))
    raw = raw_request(envoy.port, f"GET /fhir/Observation/obs-anna HTTP/1.1\r\nhost: x\r\n{lines}\r\n".encode())
    assert status_of(raw) == 431, raw[:200]
    assert_still_serving(envoy, issuer)


def test_1mb_token_refused(envoy, issuer):
    r = envoy.get("/fhir/Observation/obs-anna", {"Authorization": "Bearer " + "A" * (1 << 20)})
    assert r.status_code == 431
    assert_still_serving(envoy, issuer)


def test_50kb_token_reaches_the_filter_and_is_refused(envoy, issuer):
    """Under Envoy's header limit the token filter itself sees the huge token."""
    big = issuer.token("ES256", aud=AUD, scope="patient/*.rs", patient=ANNA, pad="x" * 36_000)
    assert 45_000 < len(big) < 55_000
    r = envoy.get("/fhir/Observation/obs-anna", {"Authorization": "Bearer " + big})
    # A valid signature over a big payload is still a valid token: no size rule exists, so
    # it passes; a tampered one is refused. Either way the proxy answers and stays up.
    assert r.status_code == 200
    h, p, s = big.split(".")
    r = envoy.get("/fhir/Observation/obs-anna", {"Authorization": f"Bearer {h}.{p}x.{s}"})
    assert r.status_code == 401
    assert_still_serving(envoy, issuer)


# ---- bodies ----

def padded_batch(size: int) -> bytes:
    b = json.dumps({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/obs-anna"}}]}).encode()
    assert len(b) <= size
    return b + b" " * (size - len(b))  # trailing whitespace is still JSON (RFC 8259 §2)


@pytest.mark.parametrize("size,ok", [(BODY_LIMIT, True), (BODY_LIMIT + 1, False)])
def test_bundle_at_and_over_the_size_limit(envoy, issuer, upstream, size, ok):
    h = {**auth(issuer), "content-type": FHIR_JSON}
    before = len(upstream.seen)
    r = envoy.request("POST", "/fhir", h, data=padded_batch(size))
    if ok:
        assert r.status_code == 200, r.text[:300]
        assert r.json()["type"] == "batch-response"
    else:
        # The denial table answers request_too_large as a bad FHIR request (400).
        assert r.status_code == 400, (r.status_code, r.text[:300])
        assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "request_too_large"
        assert len(upstream.seen) == before, "an oversized bundle reached the upstream"
    assert_still_serving(envoy, issuer)


def test_nested_json_request_body_refused(envoy, issuer, upstream):
    h = {**auth(issuer), "content-type": FHIR_JSON}
    before = len(upstream.seen)
    r = envoy.request("POST", "/fhir", h, data=b"[" * 2000 + b"]" * 2000)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert len(upstream.seen) == before
    assert_still_serving(envoy, issuer)


def test_nested_json_response_refused(envoy, issuer):
    r = envoy.get("/fhir/Observation/nested", auth(issuer))
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert b"[[[[" not in r.content
    assert_still_serving(envoy, issuer)


def test_nested_json_claims_refused(envoy, issuer):
    key = issuer.keys["ES256"]
    now = int(time.time())
    payload = (json.dumps({"iss": issuer.iss, "sub": "u", "aud": AUD, "client_id": "c", "iat": now,
                           "exp": now + 300, "jti": "j", "scope": "patient/*.rs"})[:-1]
               + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}").encode()
    tok = sign_es256({"alg": "ES256", "typ": "at+jwt", "kid": key.kid}, payload, key)
    r = envoy.get("/fhir/Observation/obs-anna", {"Authorization": f"Bearer {tok}"})
    assert r.status_code == 401, (r.status_code, r.text[:300])
    assert_still_serving(envoy, issuer)


# ---- invalid UTF-8 ----

def test_invalid_utf8_in_path(envoy, issuer, upstream):
    tok = auth(issuer)["Authorization"]
    before = len(upstream.seen)
    raw = raw_request(envoy.port, b"GET /fhir/Observation/\xff\xfe\xc0\xaf HTTP/1.1\r\nhost: x\r\n"
                      + f"authorization: {tok}\r\nconnection: close\r\n\r\n".encode())
    assert 400 <= status_of(raw) < 500, raw[:300]
    assert len(upstream.seen) == before
    assert_still_serving(envoy, issuer)


def test_invalid_utf8_in_claims(envoy, issuer):
    key = issuer.keys["ES256"]
    now = int(time.time())
    payload = (b'{"iss": "' + issuer.iss.encode() + b'", "sub": "\xff\xfe", "aud": "' + AUD.encode()
               + b'", "client_id": "c", "iat": ' + str(now).encode() + b', "exp": '
               + str(now + 300).encode() + b', "jti": "j", "scope": "patient/*.rs", "patient": "pat-\xc0\xaf"}')
    tok = sign_es256({"alg": "ES256", "typ": "at+jwt", "kid": key.kid}, payload, key)
    r = envoy.get("/fhir/Observation/obs-anna", {"Authorization": f"Bearer {tok}"})
    assert r.status_code == 401, (r.status_code, r.text[:300])
    assert_still_serving(envoy, issuer)


# ---- upstream reset during a response check ----

def test_upstream_reset_during_response_check(envoy, issuer):
    r = envoy.get("/fhir/Observation/reset", auth(issuer))
    assert 500 <= r.status_code < 600, (r.status_code, r.text[:300])
    assert b'"re' not in r.content, "a partial, unchecked body was released"
    assert_still_serving(envoy, issuer)


# ---- slow bodies (timeouts apply) ----

class TimedEnvoy(EnvoyProcess):
    """The same render as `Envoy`, with connection-manager timeouts added in the test
    (`stream_idle_timeout`/`request_timeout`, Envoy HCM): what bounds a held body."""

    def __init__(self, policy, upstream_port, filters, **hcm_extra):
        port, admin = free_port(), free_port()
        cfg = render.render(policy, list(filters), str(build_wasm()), port, upstream_port, admin)
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm.update(hcm_extra)
        self.policy = policy
        super().__init__(cfg, port, admin, "envoy")

    def get(self, path, headers=None, **kw):
        import requests
        return requests.get(f"http://127.0.0.1:{self.port}{path}", headers=headers or {}, timeout=10, **kw)


def test_slow_body_on_a_body_decided_request_times_out(upstream, issuer):
    p = policy_for({"issuer": issuer.iss, "jwks": issuer.jwks()})
    with TimedEnvoy(p, upstream.port, ["token", "fhir_scope"], request_timeout="3s") as e:
        tok = auth(issuer)["Authorization"]
        before = len(upstream.seen)
        t0 = time.time()
        with socket.create_connection(("127.0.0.1", e.port), timeout=15) as s:
            s.sendall(f"POST /fhir HTTP/1.1\r\nhost: x\r\nauthorization: {tok}\r\n"
                      f"content-type: {FHIR_JSON}\r\ncontent-length: 1000\r\n\r\n".encode()
                      + b'{"resourceType": "Bundle", ')
            raw = b""
            while b"\r\n\r\n" not in raw:
                chunk = s.recv(65536)
                if not chunk:
                    break
                raw += chunk
        assert status_of(raw) == 408, raw[:300]
        assert time.time() - t0 < 14
        assert len(upstream.seen) == before, "a partial body reached the upstream"
        assert_still_serving(e, issuer)


# ---- JWKS endpoint that hangs or answers 10 MB ----

def remote(issuer, server):
    return policy_for({"issuer": issuer.iss, "jwks_uri": server.uri, "jwks_cluster": "issuer_jwks",
                       "jwks_refresh_seconds": 300, "jwks_min_refetch_seconds": 1,
                       "jwks_fetch_timeout_ms": 1000})


def wait_for(pred, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("failure", ["hang", "10mb_garbage"])
def test_jwks_endpoint_hangs_or_answers_10mb(upstream, issuer, failure):
    server = JwksServer(issuer.jwks())
    try:
        if failure == "hang":
            server.delay = 8.0  # longer than jwks_fetch_timeout_ms (1 s)
        else:
            server.body = b'{"keys": [' + b" " * (10 << 20)  # 10 MB, never a JSON document
        with Envoy(remote(issuer, server), upstream.port, filters=["token", "fhir_scope"]) as e:
            assert wait_for(lambda: e.counter("token.jwks.fetch_failed") >= 1), e.stats()
            r = e.get("/fhir/Observation/obs-anna", auth(issuer))
            assert r.status_code == 503, (r.status_code, r.text[:300])
            assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "jwks_unavailable"
            assert e.proc.poll() is None
            # The endpoint recovers: the next fetch installs the keys and requests are served.
            server.delay = 0.0
            server.set_jwks(issuer.jwks())
            assert wait_for(lambda: e.get("/fhir/Observation/obs-anna", auth(issuer)).status_code == 200, 20)
            assert_still_serving(e, issuer)
    finally:
        server.delay = 0.0
        server.stop()


def test_jwks_of_10mb_with_valid_keys_is_used(upstream, issuer):
    """Recorded behaviour: no size cap on a JWKS answer. A 10 MB document holding the right
    keys (plus a large unknown member) is parsed, shared and used; the proxy stays up. A cap
    (e.g. 1 MB, `jwks_store`) is an open item in fuzz/README.md."""
    server = JwksServer(issuer.jwks())
    server.body = json.dumps({**issuer.jwks(), "pad": "x" * (10 << 20)}).encode()
    try:
        with Envoy(remote(issuer, server), upstream.port, filters=["token", "fhir_scope"]) as e:
            assert wait_for(lambda: e.counter("token.jwks.fetch_ok") >= 1), e.stats()
            assert_still_serving(e, issuer)
    finally:
        server.stop()
