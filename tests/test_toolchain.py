"""rust-toolchain.toml pins the exact Rust release the repository (and the committed image lock,
policies/deploy/wasm-images.lock.json) is built with, with the Wasm target and the lint tools.

The module bytes, and so the image digests Istio checks, change with rustc: a floating channel
(`stable`) would let two machines build two different images from one commit."""
from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pinned() -> dict:
    return tomllib.loads((ROOT / "rust-toolchain.toml").read_text())["toolchain"]


def run(*cmd: str, cwd: Path = ROOT) -> str:
    # Without RUSTUP_TOOLCHAIN / CARGO: what a developer's shell gets in the checkout.
    env = {k: v for k, v in os.environ.items() if k not in ("RUSTUP_TOOLCHAIN", "CARGO", "RUSTC")}
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True, timeout=120).stdout


def test_the_pin_is_an_exact_release_with_the_wasm_target_and_lint_tools():
    t = pinned()
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", t["channel"]), (
        f"channel {t['channel']!r} floats: pin the exact release the image lock was built with"
    )
    assert "wasm32-wasip1" in t["targets"]
    assert {"rustfmt", "clippy"} <= set(t["components"])


def test_the_checkout_builds_with_the_pinned_release():
    channel = pinned()["channel"]
    assert "rust-toolchain.toml" in run("rustup", "show", "active-toolchain"), "the pin is not what rustup uses here"
    assert run("rustc", "--version").startswith(f"rustc {channel} ")
    assert run("cargo", "--version").startswith(f"cargo {channel} ")
    assert run("cargo", "clippy", "--version").startswith(f"clippy 0.{channel.split('.', 1)[0]}.{channel.split('.')[1]} ")
    assert run("cargo", "fmt", "--version").startswith("rustfmt ")
    sysroot = Path(run("rustc", "--print", "sysroot").strip())
    assert (sysroot / "lib" / "rustlib" / "wasm32-wasip1").is_dir(), "the pinned toolchain lacks wasm32-wasip1"


def test_the_fuzz_crate_still_gets_nightly():
    # scripts/fuzz.sh runs `cargo +nightly fuzz`: an explicit `+toolchain` overrides the file.
    assert "-nightly" in run("cargo", "+nightly", "--version", cwd=ROOT / "fuzz")


def test_bootstrap_provides_the_pin_offline_from_the_installed_stable(tmp_path):
    """scripts/bootstrap.sh's step for the pin, in a rustup home holding only `stable` (a new
    machine: its one toolchain, nothing else can be downloaded): afterwards the checkout's cargo
    runs the pinned release, and nothing was installed (RUSTUP_AUTO_INSTALL=0)."""
    stable = Path(run("rustc", "+stable", "--print", "sysroot").strip())
    if not run("rustc", "+stable", "--version").startswith(f"rustc {pinned()['channel']} "):
        pytest.skip("the installed stable is not the pinned release: bootstrap installs it with rustup instead")
    home = tmp_path / "rustup"
    (home / "toolchains").mkdir(parents=True)
    (home / "toolchains" / stable.name).symlink_to(stable)
    real_home = Path(os.environ.get("RUSTUP_HOME", Path.home() / ".rustup"))
    (home / "settings.toml").write_text((real_home / "settings.toml").read_text())
    script = (ROOT / "scripts" / "bootstrap.sh").read_text()
    step = script[script.index("pinned=$(") : script.index("\nfi\n", script.index("pinned=$(")) + 4]
    env = {k: v for k, v in os.environ.items() if k not in ("RUSTUP_TOOLCHAIN", "CARGO", "RUSTC")}
    env |= {"RUSTUP_HOME": str(home), "RUSTUP_AUTO_INSTALL": "0"}
    before = subprocess.run(["rustc", "--version"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert before.returncode != 0, "the pinned release is already there: the test would prove nothing"
    subprocess.run(["bash", "-c", "set -euo pipefail; say() { echo \"$*\"; }; ROOT=$1; cd \"$ROOT\"\n" + step, "-", str(ROOT)],
                   cwd=ROOT, env=env, check=True, timeout=60)
    after = subprocess.run(["rustc", "--version"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert after.stdout.startswith(f"rustc {pinned()['channel']} "), after.stderr
