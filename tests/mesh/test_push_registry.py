"""tools/push_image.py against a real OCI registry: the CNCF distribution registry (Debian's
`docker-registry`) on loopback, filesystem storage in a temporary directory. The images are pushed
with skopeo, pulled back by the lock's digest, and the module inside is the one the lock names.

skopeo and docker-registry are installed by scripts/bootstrap.sh; in CI (CI set) a missing one is
a failure, elsewhere the tests skip and say what to install."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from fapi_guard_py.envoy import build_wasm, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
PUSH = REPO_ROOT / "tools" / "push_image.py"
LOCK = json.loads((REPO_ROOT / "policies" / "deploy" / "wasm-images.lock.json").read_text())


def need(tool: str) -> str:
    exe = shutil.which(tool)
    if exe:
        return exe
    msg = f"`{tool}` is not installed: run scripts/bootstrap.sh (apt-get install skopeo docker-registry)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """host:port of a fresh registry (no auth, plain HTTP, 127.0.0.1 only)."""
    exe = need("docker-registry")
    need("skopeo")
    d = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = d / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {d / 'data'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    log = (d / "registry.log").open("wb")
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"registry did not start: {(d / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def push(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PUSH), *args], capture_output=True, text=True, timeout=600)


def skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, timeout=120).stdout


@pytest.fixture(scope="module")
def pushed(registry):
    wasm_dir = build_wasm()
    out = push(f"{registry}/fapi-guard", "--tag", "rollout-test", "--wasm-dir", str(wasm_dir))
    assert out.returncode == 0, out.stderr
    return registry, out.stdout


@pytest.mark.parametrize("image", sorted(LOCK["filters"]))
def test_pushed_image_pulls_back_by_the_lock_digest(pushed, image, tmp_path):
    registry, stdout = pushed
    want = LOCK["filters"][image]["image_manifest_digest"]
    assert f"pushed {registry}/fapi-guard/{image}@{want}" in stdout
    by_digest = f"docker://{registry}/fapi-guard/{image}@{want}"
    # The manifest the registry serves under that digest hashes to it (what Istio's agent checks).
    raw = skopeo("inspect", "--raw", "--tls-verify=false", by_digest)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == want
    # The tag points at the same manifest.
    tagged = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry}/fapi-guard/{image}:rollout-test"))
    assert tagged["Digest"] == want
    # Pull it back by digest into an OCI layout; the layer's plugin.wasm is the module of the lock.
    skopeo("copy", "--quiet", "--src-tls-verify=false", by_digest, f"oci:{tmp_path / 'pulled'}:x")
    blobs = tmp_path / "pulled" / "blobs" / "sha256"
    manifest = json.loads((blobs / want.split(":", 1)[1]).read_bytes())
    layer = (blobs / manifest["layers"][-1]["digest"].split(":", 1)[1]).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        f = tar.extractfile("plugin.wasm")
        assert f is not None
        wasm = f.read()
    assert hashlib.sha256(wasm).hexdigest() == LOCK["filters"][image]["wasm_sha256"]


def test_a_build_other_than_the_lock_is_not_pushed(registry, tmp_path):
    # Another module under the lock's file name: Istio would refuse the image (spec.sha256), so
    # the tool refuses to push it, naming the field that differs.
    wasm_dir = tmp_path / "wasm"
    wasm_dir.mkdir()
    (wasm_dir / LOCK["filters"]["guard"]["wasm_file"]).write_bytes(b"\x00asm\x01\x00\x00\x00other")
    out = push(f"{registry}/fapi-guard", "--tag", "other", "--filters", "guard", "--wasm-dir", str(wasm_dir))
    assert out.returncode == 1
    assert "guard.image_manifest_digest" in out.stderr and "not the one the lock" in out.stderr
    with pytest.raises(subprocess.CalledProcessError):
        skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry}/fapi-guard/guard:other")
