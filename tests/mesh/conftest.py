"""Shared helpers for the mesh tests (packaging, manifest generation, offline validation)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    path = REPO_ROOT / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, path
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def package_wasm():
    return _load("package_wasm")


@pytest.fixture(scope="session")
def gen_wasmplugins():
    return _load("gen_wasmplugins")


def fake_wasm(payload: bytes) -> bytes:
    """A byte string with the Wasm magic and version, then `payload` (packaging only looks at the header)."""
    return b"\x00asm\x01\x00\x00\x00" + payload
