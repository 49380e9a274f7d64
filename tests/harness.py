"""Shared machinery for the end-to-end tests: real Envoy, real HTTP, real keys.

- `build_wasm()`, `EnvoyProcess`, `free_port()`, `Issuer`, `raw_jws()`, `sign_es256()` come from
  the shared tooling package `fapi_guard_py` (tools/fapi_guard_py; the benchmark uses it too):
  `build_wasm()` builds the filters for wasm32-wasip1 once per run.
- `Envoy` renders a bootstrap with envoy/render.py for a policy, starts the real proxy on
  loopback ports, waits until it serves, and exposes requests, stats and logs.
- `Upstream` is a tiny HTTP echo API (answers 200 with what it received).
- `JwksServer` serves a JWKS you can change at run time (rotation, outage, garbage).
- `Issuer` makes keys and tokens with joserfc, a library independent of ours.
- `Pki` (tools/dev_pki.py) writes a throwaway CA, server and client certificate.
- `Gateway` is a second Envoy in front of a sidecar (the two-proxy topology of envoy/).
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

# The shared tooling (tools/fapi_guard_py, installed by scripts/bootstrap.sh), re-exported for
# the tests; the renderer (envoy/render.py) and the PKI tool (tools/dev_pki.py) are on the
# tests' import path (pytest.ini `pythonpath`).
import render  # noqa: F401  (envoy/render.py; `harness.render` for the tests)
from dev_pki import Pki  # noqa: F401  (tools/dev_pki.py; `harness.Pki` for the tests)
from fapi_guard_py.envoy import (  # noqa: F401
    ROOT,
    WASM_DIR,
    EnvoyProcess,
    build_wasm,
    envoy_binary,
    free_port,
    validate_config,
    wait_port,
)
from fapi_guard_py.keys import Issuer, raw_jws, sign_es256  # noqa: F401


class Envoy(EnvoyProcess):
    """A real Envoy running the filters for `policy` in front of `upstream_port`."""

    def __init__(self, policy: dict, upstream_port: int, filters=None,
                 concurrency: int = 1, jwks_address: str | None = None, tls: dict | None = None,
                 log_level: str = "info", forward_client_cert: str | None = None, **render_opts):
        """`filters`: None runs what the policy configures (render.policy_steps).
        `render_opts`: more keyword arguments of `render.render` (e.g. `alpn`,
        `http1_trailers`, `upstream_h2`)."""
        self.policy = policy
        self.scheme = "https" if tls else "http"
        port, admin_port = free_port(), free_port()
        tls_cert, tls_key, client_ca = (tls or {}).get("args", (None, None, None))
        cfg = render.render(policy, None if filters is None else list(filters), str(build_wasm()), port, upstream_port, admin_port,
                            jwks_address=jwks_address, tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca,
                            forward_client_cert=forward_client_cert, **render_opts)
        super().__init__(cfg, port, admin_port, "envoy", concurrency, log_level)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, headers=None, **kw) -> requests.Response:
        kw.setdefault("timeout", 10)
        return requests.request(method, self.url + path, headers=headers or {}, **kw)

    def get(self, path: str, headers=None, **kw) -> requests.Response:
        return self.request("GET", path, headers, **kw)


class _Server:
    """A ThreadingHTTPServer on a loopback port in a daemon thread."""

    handler_cls: type

    def __init__(self):
        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._make_handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _make_handler(self):
        raise NotImplementedError

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Upstream(_Server):
    """Echo API: answers 200 JSON with method, path, headers and body it received."""

    def __init__(self):
        self.requests: list[dict] = []
        super().__init__()

    def _make_handler(self):
        server = self

        class H(BaseHTTPRequestHandler):
            def _any(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n).decode(errors="replace") if n else ""
                seen = {"method": self.command, "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                server.requests.append(seen)
                data = json.dumps(seen).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

            def log_message(self, *a):
                pass

        return H


class JwksServer(_Server):
    """Serves `self.body` at /jwks.json with `self.status`; `self.hits` counts fetches."""

    def __init__(self, jwks: dict | None = None):
        self.body = json.dumps(jwks or {"keys": []}).encode()
        self.status = 200
        self.hits = 0
        self.delay = 0.0
        super().__init__()

    def set_jwks(self, jwks: dict) -> None:
        self.body, self.status = json.dumps(jwks).encode(), 200

    def _make_handler(self):
        server = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits += 1
                if server.delay:
                    time.sleep(server.delay)
                self.send_response(server.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *a):
                pass

        return H

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"


class Gateway(EnvoyProcess):
    """An edge gateway Envoy in front of a sidecar (envoy/render.py `render_gateway`, the
    config committed as envoy/gateway-edge.yaml with other ports): TLS with optional client
    certificates (`pki`), `/api` stripped, an internal `:authority`, XFCC `SANITIZE_SET`."""

    def __init__(self, sidecar_port: int, pki, port: int | None = None, client_certs: bool = True):
        port, admin_port = port or free_port(), free_port()
        cfg = render.render_gateway(port, admin_port, sidecar_port, pki.server_cert, pki.server_key,
                                    pki.ca if client_certs else None)
        super().__init__(cfg, port, admin_port, "gateway", log_level="warning")

    @property
    def origin(self) -> str:
        """The public origin clients use (and sign in `htu`)."""
        return f"https://127.0.0.1:{self.port}"


# The committed gateway topology's public origin (envoy/gateway-edge.yaml listens on 8443).
COMMITTED_GATEWAY_ORIGIN = "https://127.0.0.1:8443"


def behind_gateway(policy: dict, gateway: Gateway | int) -> dict:
    """A copy of a committed gateway policy with the public origin moved from the committed
    port (8443) to the port of a test gateway."""
    port = gateway if isinstance(gateway, int) else gateway.port
    p = json.loads(json.dumps(policy))
    dpop = p.get("dpop") or {}
    if "public_origins" in dpop:
        dpop["public_origins"] = [f"https://127.0.0.1:{port}" if o == COMMITTED_GATEWAY_ORIGIN else o
                                  for o in dpop["public_origins"]]
    return p
