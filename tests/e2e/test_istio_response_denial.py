"""What a client sees when a read is refused on its response body where the host cannot hold
headers (Istio's WasmPlugin: no `allow_on_headers_stop_iteration`, so the policy sets
`fhir.hold_headers_while_buffering: false`). docs/api-owner-guide.md, "Reads refused on the
response body (Istio)", states exactly this; the test keeps it true:
- HTTP/1.1: `200` and the upstream's headers (with its `content-length`), then the connection
  closes with none of the body (curl exit 18, `requests` raises ChunkedEncodingError);
- HTTP/2: the stream is reset (RST_STREAM INTERNAL_ERROR; curl exit 92), no body;
- never any byte of the foreign resource; the proxy logs `denied reason=response_outside_grant`.
And with `allow_on_headers_stop_iteration` (plain Envoy, or an EnvoyFilter in Istio) the
client gets a clean 403 OperationOutcome instead."""
import subprocess
import threading

import pytest
import requests

from harness import Envoy, Issuer

import server as fhir_server  # tests/fhir_upstream/server.py (pytest.ini pythonpath)

pytestmark = pytest.mark.e2e

AUD = "istio-resp"
FOREIGN = "/fhir/Observation/obs-bjorn-hb"


def policy(issuer, hold):
    return {"api": {"name": "istio-resp", "audience": AUD},
            "issuers": [{"issuer": issuer.iss, "jwks": issuer.jwks()}],
            "token": {"schemes": ["Bearer"]},
            "fhir": {"base_path": "/fhir", "resource_types": ["Patient", "Observation"],
                     "hold_headers_while_buffering": hold}}


@pytest.fixture(scope="module")
def upstream():
    httpd = fhir_server.serve("127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def curl(url, token, *proto):
    return subprocess.run(["curl", "-sS", "-i", *proto, "-H", f"Authorization: Bearer {token}", url],
                          capture_output=True, text=True, timeout=30)


def test_istio_style_host_resets_after_200_headers(upstream, monkeypatch):
    import render

    orig = render.wasm_filter

    def as_istio(*a, **kw):  # what a WasmPlugin renders: no allow_on_headers_stop_iteration
        f = orig(*a, **kw)
        f["typed_config"]["config"].pop("allow_on_headers_stop_iteration", None)
        return f

    monkeypatch.setattr(render, "wasm_filter", as_istio)
    issuer = Issuer("https://issuer.test", algs=("ES256",))
    tok = issuer.token("ES256", aud=AUD, scope="patient/*.rs", patient="pat-anna")
    with Envoy(policy(issuer, False), upstream.server_address[1], filters=["token", "fhir_scope"]) as e:
        h1 = curl(e.url + FOREIGN, tok, "--http1.1")
        assert h1.returncode == 18, (h1.returncode, h1.stderr)
        assert h1.stdout.startswith("HTTP/1.1 200"), h1.stdout
        assert "content-length:" in h1.stdout.lower() and "pat-bjorn" not in h1.stdout
        h2 = curl(e.url + FOREIGN, tok, "--http2-prior-knowledge")
        assert h2.returncode == 92 and "INTERNAL_ERROR" in h2.stderr, (h2.returncode, h2.stderr)
        assert "pat-bjorn" not in h2.stdout
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(e.url + FOREIGN, headers={"Authorization": f"Bearer {tok}"}, timeout=10)
        assert "denied reason=response_outside_grant" in e.logs()


def test_with_header_hold_the_client_gets_a_clean_403(upstream):
    issuer = Issuer("https://issuer.test", algs=("ES256",))
    tok = issuer.token("ES256", aud=AUD, scope="patient/*.rs", patient="pat-anna")
    with Envoy(policy(issuer, True), upstream.server_address[1], filters=["token", "fhir_scope"]) as e:
        for proto in ("--http1.1", "--http2-prior-knowledge"):
            r = curl(e.url + FOREIGN, tok, proto)
            assert r.returncode == 0 and " 403" in r.stdout.splitlines()[0], r.stdout
            assert "response_outside_grant" in r.stdout and "pat-bjorn" not in r.stdout
