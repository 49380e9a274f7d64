#!/usr/bin/env python3
"""Push the filters' Wasm OCI images to a registry with skopeo, and prove what landed.

  tools/push_image.py REGISTRY/REPOSITORY [--tag 0.1.0] [--filters guard,token,...]
                      [--wasm-dir DIR] [--authfile FILE] [--plain-http]

For each image (default: every image in policies/deploy/wasm-images.lock.json):
  1. packages target/wasm32-wasip1/release/<module> exactly as tools/package_wasm.py does (an
     OCI image layout, compat variant: what Istio's agent pulls);
  2. refuses to push a build whose manifest digest differs from the lock: the generated
     WasmPlugins pin the lock's digests (`spec.sha256`), and Istio refuses any other image;
  3. `skopeo copy --preserve-digests oci:<layout>:<tag> docker://REGISTRY/REPOSITORY/<image>:<tag>`
     (skopeo keeps the manifest bytes, so the digest; `docker push` would rebuild the manifest);
  4. reads the manifest back from the registry by tag (`skopeo inspect --raw`) and checks that its
     sha256 is the lock's digest, then prints the pinned reference `...@sha256:...`.

The registry is plain HTTP for localhost/127.0.0.1 or with --plain-http (skopeo
`--dest-tls-verify=false`); credentials come from skopeo's usual auth file (`skopeo login`) or
--authfile. Exit 1 on any refusal, with the reason. Needs Debian's `skopeo` (scripts/bootstrap.sh).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import package_wasm  # noqa: E402  (the one packager: same layout, same digests as the lock)

LOCK_PATH = package_wasm.LOCK_PATH


class PushError(Exception):
    pass


def is_plain_http(repo: str, plain_http: bool) -> bool:
    host = repo.split("/", 1)[0].rsplit(":", 1)[0]
    return plain_http or host in ("localhost", "127.0.0.1", "[::1]")


def skopeo(*args: str) -> bytes:
    exe = shutil.which("skopeo")
    if not exe:
        raise PushError("skopeo not found: install it (Debian package `skopeo`; scripts/bootstrap.sh does)")
    proc = subprocess.run([exe, *args], capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise PushError(f"skopeo {args[0]} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def push_one(layout: Path, ref: str, tag: str, want: str, plain_http: bool, authfile: str | None) -> str:
    """Copies the layout to `ref` and returns the digest of the manifest the registry serves."""
    tls = ["--dest-tls-verify=false"] if plain_http else []
    auth = ["--dest-authfile", authfile] if authfile else []
    skopeo("copy", "--quiet", "--preserve-digests", *tls, *auth, f"oci:{layout}:{tag}", f"docker://{ref}")
    src_tls = ["--tls-verify=false"] if plain_http else []
    src_auth = ["--authfile", authfile] if authfile else []
    raw = skopeo("inspect", "--raw", *src_tls, *src_auth, f"docker://{ref}")
    got = "sha256:" + hashlib.sha256(raw).hexdigest()
    if got != want:
        raise PushError(f"{ref}: the registry serves manifest {got}, not the lock's {want}")
    return got


def run(repo: str, tag: str, filters: list[str], wasm_dir: Path, lock: dict, plain_http: bool,
        authfile: str | None) -> list[str]:
    """Returns the pushed references, pinned by digest."""
    missing = [f for f in filters if f not in lock.get("filters", {})]
    if missing:
        raise PushError(f"{', '.join(missing)}: not in the lock {LOCK_PATH.relative_to(package_wasm.REPO_ROOT)}")
    pushed = []
    with tempfile.TemporaryDirectory(prefix="fapi-push-") as tmp:
        summary = package_wasm.package(wasm_dir, Path(tmp), tag, filters)
        drift = package_wasm.lock_drift(summary, {"schema": lock.get("schema"),
                                                  "filters": {f: lock["filters"][f] for f in filters}})
        if drift:
            raise PushError(
                "this build is not the one the lock (and the generated WasmPlugins) pin, so Istio would refuse it:\n  "
                + "\n  ".join(drift) + f"\nbuild with scripts/build-wasm.sh, or regenerate: {package_wasm.REGENERATE}"
            )
        for name in filters:
            want = lock["filters"][name]["image_manifest_digest"]
            ref = f"{repo}/{name}:{tag}"
            got = push_one(Path(tmp) / name, ref, tag, want, plain_http, authfile)
            pushed.append(f"{repo}/{name}@{got}")
    return pushed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repository", metavar="REGISTRY/REPOSITORY", help="e.g. registry.example.org/fapi-guard")
    ap.add_argument("--tag", default="0.1.0", help="tag to push (not part of the digest)")
    ap.add_argument("--filters", help="comma-separated images (default: every image in the lock)")
    ap.add_argument("--wasm-dir", type=Path, default=package_wasm.REPO_ROOT / "target" / package_wasm.WASM_TARGET / "release")
    ap.add_argument("--lock", type=Path, default=LOCK_PATH)
    ap.add_argument("--authfile", help="skopeo auth file (default: skopeo's own, see `skopeo login`)")
    ap.add_argument("--plain-http", action="store_true", help="the registry speaks HTTP (implied for localhost)")
    args = ap.parse_args(argv)
    repo = args.repository.rstrip("/")
    if "/" not in repo:
        ap.error("give REGISTRY/REPOSITORY, e.g. 127.0.0.1:5000/fapi-guard")
    try:
        lock = json.loads(args.lock.read_text())
        filters = [f for f in (args.filters or ",".join(sorted(lock.get("filters", {})))).split(",") if f]
        for ref in run(repo, args.tag, filters, args.wasm_dir, lock, is_plain_http(repo, args.plain_http), args.authfile):
            print(f"pushed {ref}")
    except (PushError, package_wasm.PackagingError, OSError, ValueError, subprocess.TimeoutExpired) as e:
        print(f"push_image: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
