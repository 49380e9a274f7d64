"""tools/package_wasm.py: reproducible Wasm OCI images in the layout Istio's agent pulls."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest

from conftest import fake_wasm


def write_wasm_dir(pkg, d: Path, salt: bytes) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, (_, wasm_file) in pkg.FILTERS.items():
        (d / wasm_file).write_bytes(fake_wasm(name.encode() + salt + bytes(range(256)) * 700))
    return d


def tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def blob(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest.split(":", 1)[1], "blob content does not match its name"
    return data


def istio_extract(layout: Path) -> bytes:
    """What Istio's imagefetcher does for the compat variant: last layer, OCI tar+gzip, `plugin.wasm`."""
    index = json.loads((layout / "index.json").read_bytes())
    manifest = json.loads(blob(layout, index["manifests"][0]["digest"]))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    layer = manifest["layers"][-1]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    raw = blob(layout, layer["digest"])
    assert len(raw) == layer["size"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw))) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["plugin.wasm"]
        assert members[0].mtime == 0 and members[0].uid == 0
        f = tar.extractfile(members[0])
        assert f is not None
        return f.read()


def test_same_wasm_gives_same_digest_and_bytes(package_wasm, tmp_path):
    wasm_dir = write_wasm_dir(package_wasm, tmp_path / "wasm", b"A")
    s1 = package_wasm.package(wasm_dir, tmp_path / "out1", "0.1.0", list(package_wasm.FILTERS))
    s2 = package_wasm.package(wasm_dir, tmp_path / "out2", "0.1.0", list(package_wasm.FILTERS))
    assert s1 == s2
    assert tree(tmp_path / "out1") == tree(tmp_path / "out2")
    assert list(s1["filters"]) == ["guard"], "ONE image: the one module"
    assert s1["filters"]["guard"]["wasm_file"] == "fapi_guard.wasm"


def test_tag_is_not_part_of_the_digest(package_wasm, tmp_path):
    wasm_dir = write_wasm_dir(package_wasm, tmp_path / "wasm", b"A")
    a = package_wasm.package(wasm_dir, tmp_path / "a", "0.1.0", ["guard"])
    b = package_wasm.package(wasm_dir, tmp_path / "b", "9.9.9", ["guard"])
    assert a == b


def test_changed_wasm_changes_both_digests(package_wasm, tmp_path):
    a = package_wasm.package(write_wasm_dir(package_wasm, tmp_path / "wa", b"A"), tmp_path / "a", "t", ["guard"])
    b = package_wasm.package(write_wasm_dir(package_wasm, tmp_path / "wb", b"B"), tmp_path / "b", "t", ["guard"])
    ea, eb = a["filters"]["guard"], b["filters"]["guard"]
    assert ea["image_manifest_digest"] != eb["image_manifest_digest"]
    assert ea["wasm_sha256"] != eb["wasm_sha256"]


def test_layer_holds_the_exact_module_as_istio_reads_it(package_wasm, tmp_path):
    name = "guard"
    wasm_dir = write_wasm_dir(package_wasm, tmp_path / "wasm", b"C")
    summary = package_wasm.package(wasm_dir, tmp_path / "out", "0.1.0", [name])
    original = (wasm_dir / package_wasm.FILTERS[name][1]).read_bytes()
    assert istio_extract(tmp_path / "out" / name) == original
    assert summary["filters"][name]["wasm_sha256"] == hashlib.sha256(original).hexdigest()
    layout = tmp_path / "out" / name
    index = json.loads((layout / "index.json").read_bytes())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "0.1.0"
    assert json.loads((layout / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}


@pytest.mark.parametrize(
    "size", [0, 1, 0xFFFF - 1, 0xFFFF, 0xFFFF + 1, 3 * 0xFFFF + 17], ids=lambda n: f"{n}-bytes"
)
def test_stored_gzip_round_trips_at_block_edges(package_wasm, size):
    data = bytes((i * 7) % 251 for i in range(size))
    out = package_wasm.stored_gzip(data)
    assert gzip.decompress(out) == data
    assert out[4:8] == b"\x00\x00\x00\x00", "gzip header must carry no mtime"


def test_not_wasm_is_refused(package_wasm, tmp_path):
    d = tmp_path / "wasm"
    d.mkdir()
    (d / "fapi_guard.wasm").write_bytes(b"#!/bin/sh\n")
    with pytest.raises(package_wasm.PackagingError, match="not a Wasm module"):
        package_wasm.package(d, tmp_path / "out", "t", ["guard"])


def test_missing_module_is_refused(package_wasm, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(package_wasm.PackagingError, match="not found"):
        package_wasm.package(tmp_path / "empty", tmp_path / "out", "t", ["guard"])


class _Registry(http.server.BaseHTTPRequestHandler):
    """The part of the OCI distribution API a push uses, in memory; checks every digest."""

    blobs: dict[str, bytes] = {}
    manifests: dict[str, bytes] = {}
    uploads = 0

    def log_message(self, *a):  # quiet
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_HEAD(self):
        digest = self.path.rsplit("/", 1)[1]
        self.send_response(200 if digest in self.blobs else 404)
        self.end_headers()

    def do_POST(self):
        self._body()
        type(self).uploads += 1
        self.send_response(202)
        self.send_header("Location", f"/v2/upload/{self.uploads}")
        self.end_headers()

    def do_PUT(self):
        body = self._body()
        if self.path.startswith("/v2/upload/"):
            digest = self.path.split("digest=", 1)[1].replace("%3A", ":")
            ok = digest == "sha256:" + hashlib.sha256(body).hexdigest()
            if ok:
                self.blobs[digest] = body
            self.send_response(201 if ok else 400)
            self.end_headers()
            return
        manifest = json.loads(body)
        missing = [d["digest"] for d in [manifest["config"], *manifest["layers"]] if d["digest"] not in self.blobs]
        if missing or self.headers["Content-Type"] != manifest["mediaType"]:
            self.send_response(400)
            self.end_headers()
            return
        self.manifests[self.path] = body
        self.send_response(201)
        self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(body).hexdigest())
        self.end_headers()


def test_builtin_push_keeps_the_digest(package_wasm, tmp_path):
    wasm_dir = write_wasm_dir(package_wasm, tmp_path / "wasm", b"D")
    summary = package_wasm.package(wasm_dir, tmp_path / "out", "0.1.0", list(package_wasm.FILTERS))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        repo = f"127.0.0.1:{server.server_address[1]}/fapi-guard"
        package_wasm.push(tmp_path / "out", summary, repo, "0.1.0", "builtin", False, False)
    finally:
        server.shutdown()
    assert set(_Registry.manifests) == {f"/v2/fapi-guard/{n}/manifests/0.1.0" for n in package_wasm.FILTERS}
    for name, entry in summary["filters"].items():
        body = _Registry.manifests[f"/v2/fapi-guard/{name}/manifests/0.1.0"]
        assert "sha256:" + hashlib.sha256(body).hexdigest() == entry["image_manifest_digest"]


def test_dry_run_push_says_what_it_would_do(package_wasm, tmp_path, capsys):
    wasm_dir = write_wasm_dir(package_wasm, tmp_path / "wasm", b"E")
    summary = package_wasm.package(wasm_dir, tmp_path / "out", "0.2.0", ["guard"])
    package_wasm.push(tmp_path / "out", summary, "registry.example/fapi-guard", "0.2.0", "auto", False, True)
    out = capsys.readouterr().out
    assert "would push" in out and "registry.example/fapi-guard/guard:0.2.0" in out
    assert summary["filters"]["guard"]["image_manifest_digest"] in out


@pytest.mark.parametrize("tool", ["crane", "skopeo", "oras"])
def test_external_push_commands_copy_the_layout_unchanged(package_wasm, tool, tmp_path):
    cmd = package_wasm.push_command(tool, tmp_path / "token", "localhost:5001/fapi-guard/token:1", "1", True)
    joined = " ".join(cmd)
    assert cmd[0] == tool
    assert str(tmp_path / "token") in joined
    if tool == "skopeo":
        assert "--preserve-digests" in cmd
