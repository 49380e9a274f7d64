"""Every committed Envoy config is what envoy/render.py makes from its policy, and
passes `envoy --mode validate` (which also loads each Wasm filter with its policy, and the
gateway's certificate files: those come from `tools/dev_pki.py --dir run/pki`)."""
import subprocess
import sys

import pytest
import yaml

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


@pytest.fixture(scope="module")
def dev_pki():
    """run/pki as the README says to make it (kept when already there and valid)."""
    r = subprocess.run([sys.executable, "tools/dev_pki.py", "--dir", render.DEV_PKI], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip()) == 43, r.stdout  # base64url SHA-256, the client's x5t#S256
    return ROOT / render.DEV_PKI


@pytest.mark.parametrize("path", COMMITTED)
def test_committed_config_validates_in_envoy(path, monkeypatch, dev_pki):
    build_wasm()
    monkeypatch.chdir(ROOT)
    r = validate_config(path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_gateway_validate_needs_the_certificate_files(tmp_path):
    """The gateway's validate step really reads the TLS files (a missing one fails it)."""
    cfg = yaml.safe_load((ROOT / "envoy/gateway-edge.yaml").read_text())
    tls = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
    tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"] = str(tmp_path / "missing.pem")
    out = tmp_path / "gw.yaml"
    out.write_text(yaml.safe_dump(cfg))
    r = validate_config(out)
    assert r.returncode != 0
    assert "missing.pem" in r.stdout + r.stderr


def test_two_proxy_topology_is_wired_together():
    """gateway-edge.yaml forwards to the port sidecar-behind-gateway.yaml listens on; the
    sidecar forwards the gateway's XFCC and its policy names the gateway's public origin."""
    import json

    gw = yaml.safe_load((ROOT / "envoy/gateway-edge.yaml").read_text())
    sc = yaml.safe_load((ROOT / "envoy/sidecar-behind-gateway.yaml").read_text())
    gw_listener = gw["static_resources"]["listeners"][0]
    sc_listener = sc["static_resources"]["listeners"][0]
    sidecar_cluster = [c for c in gw["static_resources"]["clusters"] if c["name"] == "sidecar"][0]
    target = sidecar_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert target["socket_address"] == sc_listener["address"]["socket_address"]
    gw_hcm = gw_listener["filter_chains"][0]["filters"][0]["typed_config"]
    sc_hcm = sc_listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert gw_hcm["forward_client_cert_details"] == "SANITIZE_SET"
    assert sc_hcm["forward_client_cert_details"] == "ALWAYS_FORWARD_ONLY"
    policy = json.loads([f for f in sc_hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"][0]
                        ["typed_config"]["config"]["configuration"]["value"])
    port = gw_listener["address"]["socket_address"]["port_value"]
    assert policy["dpop"]["public_origins"] == [f"https://127.0.0.1:{port}"]
    assert policy["dpop"]["mtls"]["client_cert_source"] == "xfcc"
    route = gw_hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    assert route["match"]["prefix"] == policy["dpop"]["stripped_path_prefix"] + "/"


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
    assert "Wasm plugin fapi_guard:token" in r.stdout + r.stderr


def test_render_options_are_keywords_and_the_cli_passes_each_by_name():
    # With 13 positional parameters, the CLI's `--no-path-normalization` landed
    # in `alpn` and the normalisation stayed on. Options are now a RenderOptions or keywords.
    a = render.parse_args(["--policy", "policies/demo-fhir-api.json", "--no-path-normalization"])
    assert "normalize_path" not in render.render_text(a, str(ROOT))
    a = render.parse_args(["--policy", "policies/demo-fhir-api.json"])
    assert "normalize_path: true" in render.render_text(a, str(ROOT))
    with pytest.raises(TypeError):
        render.render({"api": {"name": "x"}}, ["token"], "/w", 1, 2, 3, "127.0.0.1:8082")
    opts = render.RenderOptions(direct_response=True)
    cfg = render.render({"api": {"name": "x"}}, ["token"], "/w", 1, 2, 3, opts, vm_env={"K": "V"})
    route = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]["routes"][0]
    assert "direct_response" in route
