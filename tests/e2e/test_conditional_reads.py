"""Conditional reads (RFC 9110 §13.1, §13.2.1) on reads decided on the response, in real Envoy.

`If-None-Match` / `If-Modified-Since` (and `If-Match`, `If-Unmodified-Since`, `If-Range`,
`Range`) make an API answer about a resource without sending it (304, 412, 206). On a read the
filter decides on the response body that answer cannot be checked, yet it tells another
patient's resource exists and its version. The filter removes those headers from such reads
(the API then sends the whole resource, which is checked) and refuses a 304/412/206 to them
whatever the API does. Over HTTP/1.1 and h2c; the API is the sample FHIR server, which answers
conditional reads with 304 as HAPI FHIR does; a second, HTTP/2 upstream (tests/h2_tools.py)
records what reached it.
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from fhir_e2e import ANNA, AUD, BJORN, policy_for
from h2_tools import h2_request
from harness import Envoy, Issuer

pytestmark = pytest.mark.e2e

FAR_FUTURE = "Sun, 01 Jan 2090 00:00:00 GMT"


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256",))


@pytest.fixture(scope="module")
def envoy(recorder, issuer):
    with Envoy(policy_for(issuer), recorder.port, filters=["token", "fhir_scope"], upstream_h2=True) as e:
        yield e


@pytest.fixture(scope="module")
def hidden(api, issuer):
    with Envoy(policy_for(issuer, hide_foreign_as_not_found=True), api, filters=["token", "fhir_scope"]) as e:
        yield e


def etag(api, path):
    return requests.get(f"http://127.0.0.1:{api}{path}", timeout=5).headers["etag"]


@pytest.fixture(params=["h1", "h2c"])
def get(request, issuer):
    """GET over HTTP/1.1 (requests) or h2c (PyPI h2) as Anna (patient/*.rs)."""
    token = issuer.token("ES256", aud=AUD, scope="patient/*.rs", patient=ANNA)

    def call(envoy, path, headers):
        h = {"authorization": f"Bearer {token}", **headers}
        if request.param == "h2c":
            a = h2_request(envoy.port, "GET", path, h)
            return a.status, a.body
        r = requests.get(envoy.url + path, headers=h, timeout=10)
        return r.status_code, r.content

    return call


def reason(body):
    return json.loads(body)["issue"][0]["details"]["coding"][0]["code"]


CONDITIONS = [
    lambda tag: {"if-none-match": tag},
    lambda tag: {"if-modified-since": FAR_FUTURE},
    lambda tag: {"if-none-match": "*"},
]


@pytest.mark.parametrize("cond", CONDITIONS, ids=["if-none-match", "if-modified-since", "if-none-match-star"])
def test_conditional_read_of_another_patient_refused_not_304(api, envoy, get, cond):
    path = "/fhir/Observation/obs-bjorn-hb"
    status, body = get(envoy, path, cond(etag(api, path)))
    assert status == 403, (status, body[:300])
    assert reason(body) == "response_outside_grant"
    assert b"15.4" not in body and BJORN.encode() not in body


def test_conditional_read_hidden_as_not_found(api, hidden, get):
    path = "/fhir/Observation/obs-bjorn-bp"
    status, body = get(hidden, path, {"if-none-match": etag(api, path)})
    assert status == 404, (status, body[:300])
    assert reason(body) == "response_outside_grant"
    # Same answer as for an id that does not exist: nothing tells the resource exists.
    status2, _ = get(hidden, "/fhir/Observation/obs-nobody", {"if-none-match": 'W/"1"'})
    assert status2 == 404


def test_conditional_own_read_gets_full_body(api, envoy, get, recorder):
    path = "/fhir/Observation/obs-anna-hb"
    status, body = get(envoy, path, {"if-none-match": etag(api, path), "if-modified-since": FAR_FUTURE,
                                     "if-match": 'W/"7"', "range": "bytes=0-3", "if-range": 'W/"1"'})
    assert status == 200, (status, body[:300])
    assert json.loads(body)["id"] == "obs-anna-hb"
    method, seen_path, headers = recorder.requests[-1]
    assert seen_path == path
    for h in ("if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range", "range"):
        assert h not in headers, f"{h} reached the API"


def test_conditional_headers_kept_where_the_request_decides(api, envoy, get, recorder):
    # Anna reading her own Patient is decided on the request: no response check, so her
    # conditional read works as the API means it.
    path = "/fhir/Patient/pat-anna"
    status, body = get(envoy, path, {"if-none-match": etag(api, path)})
    assert status == 304, (status, body[:300])
    assert recorder.requests[-1][2].get("if-none-match") == etag(api, path)


class Always304(BaseHTTPRequestHandler):
    """An API that answers every read 304 (ignores that the conditions were removed)."""
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(304)
        self.send_header("etag", 'W/"1"')
        self.end_headers()

    def log_message(self, *a):
        pass


def test_304_to_a_response_checked_read_fails_closed(issuer, get):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Always304)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with Envoy(policy_for(issuer), httpd.server_address[1], filters=["token", "fhir_scope"]) as e:
            status, body = get(e, "/fhir/Observation/obs-bjorn-hb", {})
            assert status == 403, (status, body[:300])
            assert reason(body) == "response_outside_grant"
            assert e.counter("fhir_scope.denied.response_outside_grant") >= 1
    finally:
        httpd.shutdown()
        httpd.server_close()
