"""Every committed Envoy config is what envoy/render.py makes from its policy, and
passes `envoy --mode validate` (which also loads each Wasm filter with its policy)."""
from pathlib import Path

import pytest

from harness import ROOT, build_wasm, validate_config
import render

COMMITTED = [path for path, _, _ in render.COMMITTED]


def test_every_yaml_under_envoy_is_a_committed_render():
    on_disk = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "envoy").glob("*.yaml"))
    assert on_disk == sorted(COMMITTED), "envoy/*.yaml and render.COMMITTED differ"


@pytest.mark.parametrize("path", COMMITTED)
def test_committed_config_matches_render(path):
    fresh = render.render_committed(str(ROOT))[path]
    assert (ROOT / path).read_text() == fresh, f"{path} is stale: run python3 envoy/render.py --all"


@pytest.mark.parametrize("path", COMMITTED)
def test_committed_config_validates_in_envoy(path, monkeypatch):
    build_wasm()
    monkeypatch.chdir(ROOT)
    r = validate_config(path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_validate_refuses_a_broken_policy(tmp_path, monkeypatch):
    """A policy the filter refuses makes the whole config invalid (fail closed)."""
    build_wasm()
    bad = tmp_path / "bad.json"
    bad.write_text('{"api": {"name": "x", "audience": "a"}, "issuers": [], "extra": true}')
    cfg = tmp_path / "envoy.yaml"
    args = render.parse_args(["--policy", str(bad), "--wasm-dir", str(ROOT / "target/wasm32-wasip1/release"),
                              "--filters", "token"])
    cfg.write_text(render.render_text(args))
    r = validate_config(cfg)
    assert r.returncode != 0
    assert "fapi_token" in r.stdout + r.stderr
