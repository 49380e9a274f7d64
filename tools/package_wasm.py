#!/usr/bin/env python3
"""Package the one module (`guard`, fapi_guard.wasm: the chain plugin) as the ONE Wasm OCI image
that Istio's WasmPlugin pulls (tools/gen_wasmplugins.py), with one entry in the lock.

Image format: the "compat" variant of the Wasm image spec, which Istio's agent accepts
(pkg/wasm/imagefetcher.go: one `application/vnd.oci.image.layer.v1.tar+gzip` layer holding
`plugin.wasm`, manifest annotation `module.wasm.image/variant=compat`).

Reproducible: the layer tar has one entry with fixed owner, mode and mtime; the gzip stream has
no timestamp or name and uses stored (uncompressed) deflate blocks written here, so its bytes do
not depend on the zlib build; JSON is written with sorted keys and no spaces; the tag is kept out
of the manifest. The same .wasm therefore always gives the same manifest digest, on any machine.

Istio checks `WasmPlugin.spec.sha256` against the image *manifest* digest for `oci://` URLs
(pkg/wasm/cache.go), so that digest is what the generated WasmPlugins pin.

Usage:
  tools/package_wasm.py                      # package target/wasm32-wasip1/release/*.wasm
  tools/package_wasm.py --build              # the suite's cargo build first (path-remapped by .cargo/config.toml)
  tools/package_wasm.py --push localhost:5001/fapi-guard --tag 0.1.0
  tools/package_wasm.py --build --write-lock # after any filter change: record the digests in policies/deploy/
                                             # (then tools/gen_wasmplugins.py; tests/mesh/test_lock.py checks)
Only the Python standard library is used.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WASM_TARGET = "wasm32-wasip1"

# image name -> (cargo package, wasm file produced by `cargo build --release`), from the one
# registry (filters/registry.json): the one image, `guard`, of the one module (fapi_guard.wasm).
_REGISTRY = json.loads((REPO_ROOT / "filters" / "registry.json").read_text())
FILTERS: dict[str, tuple[str, str]] = {
    _REGISTRY["module"]["name"]: (_REGISTRY["module"]["crate"], _REGISTRY["module"]["wasm"]),
}

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
VARIANT_ANNOTATION = "module.wasm.image/variant"
WASM_SHA_ANNOTATION = "io.fapi-guard.wasm.sha256"
FILTER_ANNOTATION = "io.fapi-guard.filter"
LOCK_PATH = REPO_ROOT / "policies" / "deploy" / "wasm-images.lock.json"
LOCK_SCHEMA = 1


class PackagingError(Exception):
    pass


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layer_tar(wasm: bytes) -> bytes:
    """A tar with exactly one entry, `plugin.wasm`, and no varying metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(wasm)
        info.mode = 0o444
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def stored_gzip(data: bytes) -> bytes:
    """RFC 1952 gzip member with RFC 1951 stored blocks: byte-identical everywhere."""
    out = bytearray(b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + b"\x00\xff")  # no mtime, OS unknown
    view = memoryview(data)
    pos = 0
    while True:
        chunk = view[pos : pos + 0xFFFF]
        pos += len(chunk)
        final = pos >= len(data)
        out += bytes([1 if final else 0])  # BFINAL, BTYPE=00 (stored)
        out += struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF)
        out += chunk
        if final:
            break
    out += struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return bytes(out)


def build_image(filter_name: str, wasm: bytes) -> dict:
    """Returns the blobs and descriptors of one compat-variant image."""
    if len(wasm) < 8 or wasm[:4] != b"\x00asm":
        raise PackagingError(f"{filter_name}: not a Wasm module (bad magic number)")
    tar = layer_tar(wasm)
    layer = stored_gzip(tar)
    config = canonical_json(
        {
            "architecture": "wasm",
            "os": "wasip1",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256_hex(tar)]},
        }
    )
    wasm_sha = sha256_hex(wasm)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": "sha256:" + sha256_hex(config), "size": len(config)},
            "layers": [{"mediaType": MT_LAYER, "digest": "sha256:" + sha256_hex(layer), "size": len(layer)}],
            "annotations": {
                VARIANT_ANNOTATION: "compat",
                FILTER_ANNOTATION: filter_name,
                WASM_SHA_ANNOTATION: wasm_sha,
            },
        }
    )
    return {
        "blobs": {sha256_hex(b): b for b in (config, layer, manifest)},
        "config": config,
        "layer": layer,
        "manifest": manifest,
        "manifest_digest": "sha256:" + sha256_hex(manifest),
        "wasm_sha256": wasm_sha,
        "wasm_bytes": len(wasm),
    }


def write_layout(image: dict, out_dir: Path, tag: str) -> None:
    """An OCI image layout directory (what crane, skopeo and oras read)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    blobs = out_dir / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for hexd, data in sorted(image["blobs"].items()):
        (blobs / hexd).write_bytes(data)
    (out_dir / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [
            {
                "mediaType": MT_MANIFEST,
                "digest": image["manifest_digest"],
                "size": len(image["manifest"]),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (out_dir / "index.json").write_bytes(canonical_json(index))


def cargo_build() -> Path:
    """The one Wasm build, `scripts/build-wasm.sh --locked` (cargo build --release --target
    wasm32-wasip1, then wasm-opt) of the one module into the standard `target/`, exactly what
    the test suite builds (tests/harness.py, scripts/test.sh). Source paths are remapped by the
    repository's `.cargo/config.toml`, so the modules do not depend on where the checkout or the
    cargo home is."""
    cmd = ["bash", str(REPO_ROOT / "scripts" / "build-wasm.sh"), "--locked"]
    for pkg, _ in FILTERS.values():
        cmd += ["-p", pkg]
    print("+ " + " ".join(cmd), file=sys.stderr)
    env = {k: v for k, v in os.environ.items() if k not in ("RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR")}
    subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=True)
    return REPO_ROOT / "target" / WASM_TARGET / "release"


def path_leaks(wasm: bytes) -> list[str]:
    """Local paths a module must not hold: they make the build depend on the machine, so another
    clone (CI) would get other bytes and another digest than the lock."""
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")).resolve()
    return [str(p) for p in (REPO_ROOT, cargo_home) if str(p).encode() + b"/" in wasm]


def package(wasm_dir: Path, out_dir: Path, tag: str, filters: list[str]) -> dict:
    summary: dict = {"schema": LOCK_SCHEMA, "filters": {}}
    for name in filters:
        _, wasm_file = FILTERS[name]
        path = wasm_dir / wasm_file
        if not path.is_file():
            raise PackagingError(f"{path} not found: build with `cargo build --release --target {WASM_TARGET}` or pass --build")
        wasm = path.read_bytes()
        leaks = path_leaks(wasm)
        if leaks:
            raise PackagingError(
                f"{path} embeds local path(s) {leaks}: not reproducible. Add a --remap-path-prefix for "
                "them to .cargo/config.toml ([target.wasm32-wasip1] rustflags) and rebuild"
            )
        image = build_image(name, wasm)
        write_layout(image, out_dir / name, tag)
        summary["filters"][name] = {
            "image_manifest_digest": image["manifest_digest"],
            "wasm_file": wasm_file,
            "wasm_sha256": image["wasm_sha256"],
            "wasm_bytes": image["wasm_bytes"],
        }
    (out_dir / "digests.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


REGENERATE = "tools/package_wasm.py --build --write-lock && tools/gen_wasmplugins.py"


def lock_drift(summary: dict, lock: dict) -> list[str]:
    """What differs between a build's digests and the committed lock, one line per field."""
    out = []
    for name in sorted(set(summary.get("filters", {})) | set(lock.get("filters", {}))):
        got, want = summary.get("filters", {}).get(name, {}), lock.get("filters", {}).get(name, {})
        for field in sorted(set(got) | set(want)):
            if got.get(field) != want.get(field):
                out.append(f"{name}.{field}: build {got.get(field)!r}, lock {want.get(field)!r}")
    if summary.get("schema") != lock.get("schema"):
        out.append(f"schema: build {summary.get('schema')!r}, lock {lock.get('schema')!r}")
    return out


# ---------- pushing ----------


def _request(method: str, url: str, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        return urllib.request.urlopen(req, timeout=30)
    except urllib.error.HTTPError as e:
        return e


def builtin_push(layout: Path, ref: str) -> str:
    """Pushes an OCI layout to a plain-HTTP registry without auth (the kind local registry),
    using the OCI distribution API. Returns the digest the registry reports."""
    host, _, rest = ref.partition("/")
    name, _, tag = rest.rpartition(":")
    if not name or not tag:
        raise PackagingError(f"reference `{ref}` must be host[:port]/repository:tag")
    base = f"http://{host}/v2/{name}"
    index = json.loads((layout / "index.json").read_bytes())
    mdesc = index["manifests"][0]
    manifest_bytes = (layout / "blobs" / "sha256" / mdesc["digest"].split(":", 1)[1]).read_bytes()
    manifest = json.loads(manifest_bytes)
    for desc in [manifest["config"], *manifest["layers"]]:
        digest = desc["digest"]
        blob = (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
        if _request("HEAD", f"{base}/blobs/{digest}").status == 200:
            continue
        resp = _request("POST", f"{base}/blobs/uploads/", data=b"")
        if resp.status != 202 or not resp.headers.get("Location"):
            raise PackagingError(f"registry refused upload of {digest}: HTTP {resp.status}")
        location = urllib.parse.urljoin(f"http://{host}/", resp.headers["Location"])
        sep = "&" if "?" in location else "?"
        resp = _request(
            "PUT",
            f"{location}{sep}digest={urllib.parse.quote(digest)}",
            data=blob,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(blob))},
        )
        if resp.status != 201:
            raise PackagingError(f"registry refused blob {digest}: HTTP {resp.status}")
    resp = _request("PUT", f"{base}/manifests/{tag}", data=manifest_bytes, headers={"Content-Type": MT_MANIFEST})
    if resp.status != 201:
        raise PackagingError(f"registry refused manifest for {ref}: HTTP {resp.status}")
    got = resp.headers.get("Docker-Content-Digest", mdesc["digest"])
    if got != mdesc["digest"]:
        raise PackagingError(f"registry stored {ref} as {got}, expected {mdesc['digest']}")
    return got


def push_command(tool: str, layout: Path, ref: str, tag: str, plain_http: bool) -> list[str]:
    """The command that copies `layout` to `ref` unchanged (manifest bytes kept, so the digest is kept)."""
    if tool == "crane":
        return ["crane", "push", *(["--insecure"] if plain_http else []), str(layout), ref]
    if tool == "skopeo":
        tls = ["--dest-tls-verify=false"] if plain_http else []
        return ["skopeo", "copy", "--preserve-digests", *tls, f"oci:{layout}:{tag}", f"docker://{ref}"]
    if tool == "oras":
        return ["oras", "cp", "--from-oci-layout", *(["--to-plain-http"] if plain_http else []), f"{layout}:{tag}", ref]
    raise PackagingError(f"unknown push tool {tool}")


def push(out_dir: Path, summary: dict, repo: str, tag: str, pusher: str, plain_http: bool, dry_run: bool) -> None:
    host = repo.split("/", 1)[0]
    local = host.split(":")[0] in ("localhost", "127.0.0.1")
    plain_http = plain_http or local
    tool = pusher
    if tool == "auto":
        # `docker push` is not used: docker re-creates the manifest, which changes the digest.
        tool = next((t for t in ("crane", "skopeo", "oras") if shutil.which(t)), "builtin" if plain_http else "none")
    for name, entry in summary["filters"].items():
        ref = f"{repo}/{name}:{tag}"
        layout = out_dir / name
        digest = entry["image_manifest_digest"]
        if dry_run or tool == "none":
            why = "dry run" if dry_run else "no crane, skopeo or oras on PATH and the registry is not plain-HTTP local"
            print(f"would push {layout} -> {ref} (digest {digest}) [{why}]")
            continue
        if tool == "builtin":
            got = builtin_push(layout, ref)
        else:
            subprocess.run(push_command(tool, layout, ref, tag, plain_http), check=True)
            got = digest
        print(f"pushed {ref}@{got} with {tool}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="store_true", help="build the module first (the same build the test suite makes)")
    ap.add_argument("--wasm-dir", type=Path, help=f"where the .wasm files are (default target/{WASM_TARGET}/release)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "target" / "wasm-oci", help="output directory")
    ap.add_argument("--tag", default="0.1.0", help="image tag (not part of the digest)")
    ap.add_argument("--filters", default=",".join(FILTERS), help="the images to package: " + ",".join(FILTERS))
    ap.add_argument("--push", metavar="REGISTRY/REPOSITORY", help="push the image to REGISTRY/REPOSITORY/<image>:<tag>")
    ap.add_argument("--pusher", default="auto", choices=["auto", "crane", "skopeo", "oras", "builtin"])
    ap.add_argument("--plain-http", action="store_true", help="registry speaks HTTP (implied for localhost)")
    ap.add_argument("--dry-run", action="store_true", help="say what would be pushed, push nothing")
    ap.add_argument("--check-lock", action="store_true", help="exit 1 if the lock differs from this build")
    ap.add_argument("--write-lock", action="store_true", help=f"record digests in {LOCK_PATH.relative_to(REPO_ROOT)}")
    args = ap.parse_args(argv)

    filters = [f for f in args.filters.split(",") if f]
    unknown = [f for f in filters if f not in FILTERS]
    if unknown:
        ap.error(f"unknown image(s): {', '.join(unknown)}; the one image is {', '.join(FILTERS)} (fapi_guard.wasm, "
                 "the chain plugin: the filters of earlier versions are its steps)")
    try:
        if args.build:
            wasm_dir = cargo_build()
        else:
            wasm_dir = args.wasm_dir or REPO_ROOT / "target" / WASM_TARGET / "release"
        summary = package(wasm_dir, args.out, args.tag, filters)
        for name, e in summary["filters"].items():
            print(f"{name:11} image {e['image_manifest_digest']}  wasm sha256:{e['wasm_sha256']}  ({e['wasm_bytes']} bytes)")
        print(f"OCI layouts and digests.json in {args.out}")
        if args.check_lock:
            drift = lock_drift(summary, json.loads(LOCK_PATH.read_text()))
            for line in drift:
                print(f"lock drift: {line}", file=sys.stderr)
            if drift:
                print(f"the lock is stale; regenerate with: {REGENERATE}", file=sys.stderr)
                return 1
            print("lock matches this build")
        if args.write_lock:
            LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
            LOCK_PATH.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
            print(f"wrote {LOCK_PATH.relative_to(REPO_ROOT)}")
        if args.push:
            push(args.out, summary, args.push.rstrip("/"), args.tag, args.pusher, args.plain_http, args.dry_run)
    except (PackagingError, subprocess.CalledProcessError, OSError) as e:
        print(f"package_wasm: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
