"""envoy/render.py and a policy's `cors` section (envoy/cors_config.py): Envoy's CORS filter
before the Wasm filters and the virtual host's CorsPolicy, accepted by `envoy --mode validate` on
the newest and the oldest supported Envoy (1.40, 1.36); the policy's `cors` is validated at load
by the filters (a bad one fails the config) and by policies/schema."""
import json
import subprocess

import pytest

from harness import ROOT, build_wasm
import render
from test_policy_schema import validator

OLDEST = ROOT / ".venv-envoy-1.36" / "bin" / "envoy"
NEWEST = ROOT / ".venv" / "bin" / "envoy"
CORS = {"allowed_origins": ["https://app.example.org", "http://localhost:3000"]}


def policy(cors):
    p = json.loads((ROOT / "policies" / "smart-patient-api.json").read_text())
    p["cors"] = cors
    return p


def hcm(cfg):
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def test_cors_filter_comes_before_the_guard():
    h = hcm(render.render(policy(CORS), render.ORDER, "/w", 1, 2, 3))
    names = [f["name"] for f in h["http_filters"]]
    assert names[0] == "envoy.filters.http.cors"
    assert names[1:-1] == ["envoy.filters.http.wasm"]
    vhost = h["route_config"]["virtual_hosts"][0]
    p = vhost["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert p["@type"] == "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
    assert p["allow_origin_string_match"] == [{"exact": o} for o in CORS["allowed_origins"]]
    assert p["allow_credentials"] is False and p["max_age"] == "600"
    # Without `cors`, no CORS at all.
    plain = hcm(render.render(policy(CORS) | {"cors": None}, render.ORDER, "/w", 1, 2, 3))
    assert "envoy.filters.http.cors" not in [f["name"] for f in plain["http_filters"]]
    assert "typed_per_filter_config" not in plain["route_config"]["virtual_hosts"][0]


@pytest.mark.parametrize("envoy", [NEWEST, OLDEST], ids=["1.40", "1.36"])
@pytest.mark.parametrize("cors,ok", [
    (CORS, True),
    (CORS | {"allowed_headers": ["Authorization", "DPoP"], "exposed_headers": [], "max_age_seconds": 0,
             "allow_credentials": True}, True),
    (CORS | {"allowed_origins": ["https://*.example.org"]}, False),
    (CORS | {"allowed_headers": ["*"]}, False),
    (CORS | {"unknown": 1}, False),
], ids=["defaults", "explicit", "wildcard-origin", "wildcard-header", "unknown-field"])
def test_rendered_cors_config_validates_in_envoy(envoy, cors, ok, tmp_path):
    if not envoy.exists():
        pytest.fail(f"{envoy} missing: run scripts/bootstrap.sh")
    build_wasm()
    p = tmp_path / "policy.json"
    p.write_text(json.dumps(policy(cors)))
    a = render.parse_args(["--policy", str(p), "--wasm-dir", str(ROOT / "target/wasm32-wasip1/release")])
    cfg = tmp_path / "envoy.yaml"
    cfg.write_text(render.render_text(a))
    r = subprocess.run([str(envoy), "--mode", "validate", "-c", str(cfg), "--use-dynamic-base-id", "-l", "error"],
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode == 0) == ok, r.stdout[-2000:] + r.stderr[-2000:]
    if not ok:
        assert "cors" in r.stdout + r.stderr


def test_schema_agrees_on_cors():
    v = validator()
    assert not list(v.iter_errors(policy(CORS)))
    for bad in ({"allowed_origins": []}, {"allowed_origins": ["*"]}, {"allowed_origins": ["https://a/"]},
                CORS | {"allowed_headers": ["*"]}, CORS | {"allowed_methods": ["TRACE"]},
                CORS | {"max_age_seconds": 86401}, CORS | {"extra": True}):
        assert list(v.iter_errors(policy(bad))), bad
