"""tools/gen_wasmplugins.py and a policy's `cors` section: a sidecar gets an EnvoyFilter that puts
Envoy's CORS filter before the AUTHN-phase WasmPlugins and sets the CORS policy on the inbound
virtual hosts (docs/platform-guide.md, "CORS"), valid against Istio's EnvoyFilter CRD; a gateway
is told to use its VirtualService `corsPolicy`."""

from __future__ import annotations

import pytest

from test_manifests import DEPLOY, GATEWAY, LOCK, PLACEHOLDER_POLICY, make_root, run_gen_all
from test_validation import istio_errors

CORS = {"allowed_origins": ["https://app.example.org"], "allow_credentials": False}


def cors_docs(gen, tmp_path, deploy):
    policy = PLACEHOLDER_POLICY | {"cors": CORS}
    return [d for d in run_gen_all(gen, make_root(tmp_path, policy=policy, deploy=deploy))
            if d["metadata"]["name"].endswith("-cors")]


def test_sidecar_gets_the_cors_filter_first_and_the_policy(gen_wasmplugins, tmp_path):
    (ef,) = cors_docs(gen_wasmplugins, tmp_path, DEPLOY | {"match_ports": [8080]})
    assert ef["kind"] == "EnvoyFilter" and not istio_errors(ef), istio_errors(ef)
    assert ef["spec"]["workloadSelector"] == {"labels": {"app": "placeholder"}}
    first, hcm, vhost = ef["spec"]["configPatches"]
    assert first["applyTo"] == "HTTP_FILTER" and first["patch"]["operation"] == "INSERT_FIRST"
    assert first["match"]["context"] == "SIDECAR_INBOUND" and first["match"]["listener"]["portNumber"] == 8080
    assert first["patch"]["value"]["name"] == "envoy.filters.http.cors"
    # Denials made on the response bypass the CORS filter: the local-reply mapper adds the headers.
    assert hcm["applyTo"] == "NETWORK_FILTER" and hcm["patch"]["operation"] == "MERGE"
    mapper = hcm["patch"]["value"]["typed_config"]["local_reply_config"]["mappers"][0]
    assert mapper["filter"]["header_filter"]["header"] == {"name": "origin", "string_match": {"exact": "https://app.example.org"}}
    assert mapper["headers_to_add"][0]["header"] == {"key": "access-control-allow-origin", "value": "%REQ(origin)%"}
    assert vhost["applyTo"] == "VIRTUAL_HOST" and vhost["patch"]["operation"] == "MERGE"
    p = vhost["patch"]["value"]["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert p["allow_origin_string_match"] == [{"exact": "https://app.example.org"}]
    # The schema's defaults: what a SMART app sends and must read.
    assert {"Authorization", "DPoP", "Prefer", "If-Match"} <= set(p["allow_headers"].split(","))
    assert {"DPoP-Nonce", "WWW-Authenticate", "ETag", "Location"} <= set(p["expose_headers"].split(","))


def test_no_cors_section_no_envoyfilter(gen_wasmplugins, tmp_path):
    docs = run_gen_all(gen_wasmplugins, make_root(tmp_path))
    assert not [d for d in docs if d["metadata"]["name"].endswith("-cors")]


def test_cors_at_a_gateway_points_to_the_virtualservice(gen_wasmplugins, tmp_path):
    policy = PLACEHOLDER_POLICY | {"cors": CORS}
    with pytest.raises(gen_wasmplugins.GenError, match="corsPolicy"):
        gen_wasmplugins.generate([make_root(tmp_path, policy=policy, deploy=GATEWAY)], LOCK)
