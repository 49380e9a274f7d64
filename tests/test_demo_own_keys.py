"""README: "To test it with your own policy and keys, any client, any token library":
`scripts/demo.sh --policy P --jwks J`. Here the keys, the token and the DPoP proofs come from
joserfc and requests-oauth2client (nothing of ours), the JWKS is theirs, and the policy is a
copy of the demo policy with another audience."""
import base64
import hashlib
import json

import pytest
import requests
from requests_oauth2client import DPoPKey

from harness import ROOT, Issuer
from test_demo import running_demo

URL = "http://127.0.0.1:10000/fhir"


@pytest.fixture(scope="module")
def own_demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("own-keys")
    policy = json.loads((ROOT / "policies" / "demo-fhir-api.json").read_text())
    policy["api"]["audience"] = "my-own-audience"
    issuer = Issuer(policy["issuers"][0]["issuer"], algs=("PS256",))
    (d / "policy.json").write_text(json.dumps(policy))
    (d / "jwks.json").write_text(json.dumps(issuer.jwks()))
    args = ["--policy", str(d / "policy.json"), "--jwks", str(d / "jwks.json")]
    with running_demo(args, d / "demo.log"):
        yield issuer


def call(token, key, path):
    ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
    proof = str(key.proof(htm="GET", htu=URL + path, ath=ath))
    return requests.get(URL + path, headers={"Authorization": f"DPoP {token}", "DPoP": proof}, timeout=10)


def test_own_keys_token_and_proofs_are_accepted_and_checked(own_demo):
    key = DPoPKey.generate(alg="ES256")
    jkt = key.private_key.public_jwk().thumbprint()
    token = own_demo.token("PS256", aud="my-own-audience", scope="patient/*.rs", patient="pat-bjorn",
                           cnf={"jkt": jkt})
    assert call(token, key, "/Patient/pat-bjorn").status_code == 200
    assert call(token, key, "/Patient/pat-anna").status_code == 403
    # The demo's own audience is not this policy's.
    other = own_demo.token("PS256", aud="demo-fhir-api", scope="patient/*.rs", patient="pat-bjorn",
                           cnf={"jkt": jkt})
    r = call(other, key, "/Patient/pat-bjorn")
    assert r.status_code == 401 and "wrong_audience" in r.text
