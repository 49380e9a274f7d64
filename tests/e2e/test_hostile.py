"""Hostile inputs in real Envoy. Each is answered 4xx/5xx, the proxy stays alive,
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
from harness import Envoy, Issuer, JwksServer, sign_es256

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
#
# The FHIR scope filter holds a body-decided request (a batch) until its body is complete. A
# client that sends half the body and stalls is bounded by the connection manager's stream
# timeouts, which envoy/render.py sets by default (STREAM_TIMEOUTS); here each is set short, one
# at a time, so the answer comes within seconds: 408 (or the stream reset), nothing reaches the
# upstream, and the next request is served. The client waits at most SLOW_CLIENT_WAIT: with
# Envoy's defaults (no request timeout, 300 s idle) no answer comes in that time and these fail.

SLOW_CLIENT_WAIT = 20.0
SLOW_BOUNDS = {
    "request_timeout": {"request_timeout": "3s", "stream_idle_timeout": None},
    "stream_idle_timeout": {"request_timeout": None, "stream_idle_timeout": "3s"},
}


def half_a_batch() -> tuple[bytes, int]:
    """The first half of a valid batch, and the full length the client announces."""
    body = padded_batch(1000)
    return body[:500], len(body)


def slow_h1(port, tok) -> tuple[int, bool]:
    """HTTP/1.1: headers and half the body, then nothing. (status, connection closed)."""
    part, total = half_a_batch()
    with socket.create_connection(("127.0.0.1", port), timeout=SLOW_CLIENT_WAIT) as s:
        s.sendall(f"POST /fhir HTTP/1.1\r\nhost: x\r\nauthorization: {tok}\r\n"
                  f"content-type: {FHIR_JSON}\r\ncontent-length: {total}\r\n\r\n".encode() + part)
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = s.recv(65536)  # socket.timeout (a failure) if nothing comes in time
            if not chunk:
                break
            raw += chunk
        return status_of(raw), not raw


def slow_h2(port, tok) -> tuple[int, bool]:
    """h2c (prior knowledge): HEADERS and half the body in DATA without END_STREAM, then
    nothing. (status, stream reset before any response)."""
    import h2.config
    import h2.connection
    import h2.events

    part, total = half_a_batch()
    with socket.create_connection(("127.0.0.1", port), timeout=SLOW_CLIENT_WAIT) as s:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":path", "/fhir"), (":scheme", "http"),
                                (":authority", f"127.0.0.1:{port}"), ("authorization", tok),
                                ("content-type", FHIR_JSON), ("content-length", str(total))])
        conn.send_data(sid, part, end_stream=False)
        s.sendall(conn.data_to_send())
        for _ in range(1000):
            data = s.recv(65536)  # socket.timeout (a failure) if nothing comes in time
            if not data:
                return 0, True
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    return int(dict(ev.headers)[":status"]), False
                if isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    return 0, True
                if isinstance(ev, h2.events.ConnectionTerminated):
                    return 0, True
            out = conn.data_to_send()
            if out:
                s.sendall(out)
        raise AssertionError("no answer to the stalled stream")


@pytest.fixture(scope="module", params=sorted(SLOW_BOUNDS))
def timed_envoy(request, upstream, issuer):
    p = policy_for({"issuer": issuer.iss, "jwks": issuer.jwks()})
    with Envoy(p, upstream.port, filters=["token", "fhir_scope"], **SLOW_BOUNDS[request.param]) as e:
        yield e


@pytest.mark.parametrize("proto", ["http1", "h2c"])
def test_slow_body_on_a_body_decided_request_times_out(timed_envoy, upstream, issuer, proto):
    e = timed_envoy
    tok = auth(issuer)["Authorization"]
    before = len(upstream.seen)
    t0 = time.time()
    status, reset = (slow_h1 if proto == "http1" else slow_h2)(e.port, tok)
    took = time.time() - t0
    # Envoy answers a request or idle timeout before any response with 408 (or resets).
    assert status == 408 or (status == 0 and reset), (status, reset, round(took, 1))
    assert len(upstream.seen) == before, "a partial body reached the upstream"
    assert_still_serving(e, issuer)
    # The same bundle, sent whole, is decided and served.
    r = e.request("POST", "/fhir", {**auth(issuer), "content-type": FHIR_JSON}, data=padded_batch(1000))
    assert r.status_code == 200, (r.status_code, r.text[:300])


def test_rendered_configs_bound_slow_requests():
    """Every rendered connection manager (sidecar and gateway) carries the stream timeouts."""
    cfg = render.render({"api": {"name": "x", "audience": "x"}, "issuers": []}, ["token"], "w", 1, 2, 3)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for k, v in render.STREAM_TIMEOUTS.items():
        assert hcm[k] == v, k
    gw = render.render_gateway(1, 2, 3, "c", "k")
    hcm = gw["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert all(hcm[k] == v for k, v in render.STREAM_TIMEOUTS.items())


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


@pytest.mark.parametrize("oversize", ["10mb", "101_keys"])
def test_jwks_over_the_size_caps_keeps_the_old_keys(upstream, issuer, oversize):
    """`issuers[i].jwks_max_bytes` (64 KiB) and `jwks_max_keys` (100), docs/checks.md §1.4: a
    JWKS answer over a cap is refused (counters `jwks.fetch_failed` and
    `jwks.refused_<why>`), the last good keys stay: the old key still verifies, a token
    signed with a key only the oversize document holds is refused (`unknown_key`)."""
    server = JwksServer(issuer.jwks())
    new = Issuer.make_key("ES256", "rotated-in-oversize-doc")
    if oversize == "10mb":
        body = json.dumps({"keys": [new.as_dict(private=False)], "pad": "x" * (10 << 20)}).encode()
        counter = "token.jwks.refused_too_large"
    else:
        keys = [Issuer.make_key("ES256", f"k{i}").as_dict(private=False) for i in range(100)]
        body = json.dumps({"keys": keys + [new.as_dict(private=False)]}).encode()
        assert len(body) < 64 * 1024
        counter = "token.jwks.refused_too_many_keys"
    try:
        with Envoy(remote(issuer, server), upstream.port, filters=["token", "fhir_scope"]) as e:
            assert wait_for(lambda: e.counter("token.jwks.fetch_ok") >= 1), e.stats()
            assert_still_serving(e, issuer)
            server.body = body
            hits = server.hits
            # The new kid is unknown: the filter refetches (min_refetch 1 s), gets the
            # oversize answer, refuses it and keeps the old keys.
            tok = issuer.token("ES256", key=new, aud=AUD, scope="patient/*.rs", patient=ANNA)
            r = e.get("/fhir/Observation/obs-anna", {"Authorization": f"Bearer {tok}"})
            assert r.status_code == 401, (r.status_code, r.text[:300])
            assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "unknown_key"
            assert server.hits > hits, "no refetch happened"
            assert wait_for(lambda: e.counter(counter) >= 1), e.stats()
            assert e.counter("token.jwks.fetch_failed") >= 1
            assert_still_serving(e, issuer)
    finally:
        server.stop()
