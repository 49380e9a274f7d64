"""Path forms (docs/checks.md "Path canonicalisation") in real Envoy, over HTTP/1.1 and
HTTP/2 (h2c prior knowledge; the listener codec is AUTO), in front of the sample FHIR API
resolving paths as a servlet
container does (tests/fhir_upstream/server.py `servlet_path`: `;` parameters dropped,
`%2F` decoded, `\\` as `/`, `//` merged, dot-segments removed, like Tomcat under HAPI FHIR).

Without a token, each request below names a public route (`/fhir/metadata`) to the raw eye
but another patient's record or a search over every patient to the upstream. Each must be
refused with no request reaching the upstream:
- with the configs render.py emits (HCM `normalize_path`, `merge_slashes`, escaped slashes
  refused): the proxy or the filters refuse;
- with an HCM without path normalisation (`normalize_paths=False`): the filters alone refuse
  (defence in depth), `400 path_not_canonical`, each filter on its own too.
"""
import http.client
import json
import socket
import threading
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from harness import Envoy, Issuer

import server as fhir_server  # tests/fhir_upstream/server.py

pytestmark = pytest.mark.e2e

AUD = "paths-e2e"
OTHER = "pat-bjorn"
ISSUER = Issuer("https://issuer.test")

# name -> request target; every one resolves, in a servlet container, to another patient's
# record (or a search over every patient) while its raw form starts with `/fhir/metadata/`.
TRICKS = {
    "dot-dot": f"/fhir/metadata/../Patient/{OTHER}",
    "dot-dot-semicolon": f"/fhir/metadata/..;/Patient/{OTHER}",
    "encoded-dots": f"/fhir/metadata/%2e%2e/Patient/{OTHER}",
    "encoded-dots-semicolon": f"/fhir/metadata/%2E%2E;/Patient/{OTHER}",
    "double-slash": f"/fhir/metadata/..//Patient/{OTHER}",
    "encoded-slash": f"/fhir/metadata/..%2FPatient%2F{OTHER}",
    "encoded-backslash": f"/fhir/metadata/..%5CPatient%5C{OTHER}",
    "backslash": f"/fhir/metadata/..\\Patient\\{OTHER}",
    "jsessionid": f"/fhir/metadata/..;jsessionid=x/Patient/{OTHER}",
    "search-dot-dot": "/fhir/metadata/../Observation?_count=100",
    "search-semicolon": "/fhir/metadata/..;/Observation?_count=100",
}
# Forms that a server decoding twice (or a decoding proxy in front of a decoding server)
# resolves the same way; this upstream decodes once, so they are only checked for refusal.
DOUBLE_DECODED = {
    "double-encoded": f"/fhir/metadata/%252e%252e/Patient/{OTHER}",
}
REFUSED = {**TRICKS, **DOUBLE_DECODED}


def policy():
    return {
        "api": {"name": "paths-e2e", "audience": AUD},
        "issuers": [{"issuer": ISSUER.iss, "jwks": ISSUER.jwks()}],
        "token": {"schemes": ["DPoP", "Bearer"]},
        "routes": [{"path_prefix": "/fhir/metadata", "methods": ["GET"], "require": "none"},
                   {"path_prefix": "/fhir/.well-known/smart-configuration", "methods": ["GET"], "require": "none"}],
        "fhir": {"base_path": "/fhir", "patient_claim": "patient",
                 "resource_types": ["Patient", "Observation"]},
    }


# ---------------------------------------------------------------- clients sending any target


def h1(port, target):
    """HTTP/1.1 over a raw socket: the target goes on the wire byte for byte."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        r = http.client.HTTPResponse(s)
        r.begin()
        return r.status, r.read()


def h2c(port, target):
    """HTTP/2 with prior knowledge (h2c), `:path` sent as given (no client-side checks)."""
    cfg = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                    normalize_outbound_headers=False, validate_inbound_headers=False)
    conn = h2.connection.H2Connection(config=cfg)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
                                (":path", target)], end_stream=True)
        s.sendall(conn.data_to_send())
        status, body = None, b""
        for _ in range(1000):
            data = s.recv(65536)
            if not data:
                break
            done = False
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    status = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and ev.stream_id == sid:
                    done = True
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    done = True
            s.sendall(conn.data_to_send())
            if done:
                break
        return status, body


CLIENTS = {"http1": h1, "h2c": h2c}


def reason(body):
    try:
        return json.loads(body)["issue"][0]["details"]["coding"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def upstream():
    httpd = fhir_server.serve("127.0.0.1", 0)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def normalised(upstream):
    with Envoy(policy(), upstream.server_address[1]) as e:
        yield e


@pytest.fixture(scope="module")
def unnormalised(upstream):
    with Envoy(policy(), upstream.server_address[1], normalize_paths=False) as e:
        yield e


def hits_during(upstream, fn):
    before = len(upstream.fhir.hits)
    out = fn()
    return out, upstream.fhir.hits[before:]


# ---------------------------------------------------------------- tests


def test_the_upstream_resolves_paths_like_a_servlet_container():
    """The tricks do name another patient's record to this upstream (else the tests prove nothing)."""
    for name, target in TRICKS.items():
        path = fhir_server.servlet_path(target.split("?")[0])
        want = "/fhir/Observation" if name.startswith("search") else f"/fhir/Patient/{OTHER}"
        assert path == want, (name, path)


@pytest.mark.parametrize("proto", CLIENTS)
def test_public_route_still_public(normalised, unnormalised, upstream, proto):
    """The plain public path, and one spelt with an encoded unreserved letter (decided on
    its decoded form, as the upstream reads it), reach the API without a token."""
    for envoy in (normalised, unnormalised):
        for target in ("/fhir/metadata", "/fhir/metadata?_format=json", "/fhir/%6Detadata"):
            (status, body), hits = hits_during(upstream, lambda: CLIENTS[proto](envoy.port, target))
            assert status == 200, (target, status, body[:300])
            assert json.loads(body)["resourceType"] == "CapabilityStatement"
            assert len(hits) == 1


@pytest.mark.parametrize("proto", CLIENTS)
@pytest.mark.parametrize("name", REFUSED)
def test_trick_refused_by_the_rendered_config(normalised, upstream, proto, name):
    """The config render.py emits: the proxy normalises (the request is then for a protected
    path and has no token) or refuses, or the filters refuse; the API is never reached."""
    (status, body), hits = hits_during(upstream, lambda: CLIENTS[proto](normalised.port, REFUSED[name]))
    assert hits == [], (name, status, hits)
    assert status in (400, 401, None), (name, status, body[:300])  # None: stream reset by the codec
    assert OTHER.encode() not in body


@pytest.mark.parametrize("proto", CLIENTS)
@pytest.mark.parametrize("name", REFUSED)
def test_trick_refused_by_the_filters_alone(unnormalised, upstream, proto, name):
    """Defence in depth: an HCM without path normalisation; the filters refuse the path
    themselves, before any route decision (`path_not_canonical`)."""
    before = unnormalised.counter("token.denied.path_not_canonical")
    (status, body), hits = hits_during(upstream, lambda: CLIENTS[proto](unnormalised.port, REFUSED[name]))
    assert hits == [], (name, status, hits)
    assert status == 400, (name, status, body[:300])
    assert reason(body) == "path_not_canonical", body[:300]
    assert unnormalised.counter("token.denied.path_not_canonical") == before + 1


@pytest.mark.parametrize("only", ["token", "dpop", "fhir_scope"])
def test_each_filter_refuses_on_its_own(upstream, only):
    """Every filter applies the canonical-path check first, on public routes too: a chain
    with only that filter (and no proxy normalisation) still refuses."""
    with Envoy(policy(), upstream.server_address[1], filters=[only], normalize_paths=False) as e:
        for name in ("dot-dot-semicolon", "encoded-dots", "search-dot-dot"):
            for proto, client in CLIENTS.items():
                (status, body), hits = hits_during(upstream, lambda: client(e.port, TRICKS[name]))
                assert hits == [], (only, name, proto, status)
                assert status == 400 and reason(body) == "path_not_canonical", (only, name, proto, status)
        assert e.counter(f"{only}.denied.path_not_canonical") == 6
        (status, _), hits = hits_during(upstream, lambda: h1(e.port, "/fhir/metadata"))
        assert status == 200 and len(hits) == 1


def test_long_path_refused(unnormalised, upstream):
    """The path length is capped (`path_too_long`, path::MAX_PATH_BYTES)."""
    target = "/fhir/metadata/" + "a" * 5000
    (status, body), hits = hits_during(upstream, lambda: h1(unnormalised.port, target))
    assert hits == []
    assert status == 400 and reason(body) == "path_too_long", (status, body[:300])
