"""Both signature paths, the same public vectors, in real Envoy (issue 2): Envoy's
`verify_signature` foreign function (BoringSSL) for ES256/384/512 and RS256/384/512 and the
pure-Rust verifiers,
through the test-only probe filter (tests/verify-probe) that calls `HostVerifier` exactly as
the token and DPoP filters do. Every vector must give its published result on both paths."""
import base64
import json
import subprocess

import pytest

from harness import ROOT, EnvoyProcess, free_port, render

pytestmark = pytest.mark.e2e

VECTORS = ROOT / "filters" / "core" / "tests" / "data" / "vectors"
HOST_ALGS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512")
# Wycheproof files for HelseID's algorithms beyond FAPI 2.0 (issue 10): file → (alg, coordinate octets).
EXTRA = {
    "ecdsa_secp384r1_sha384_p1363_test.json": ("ES384", 48),
    "ecdsa_secp521r1_sha512_p1363_test.json": ("ES512", 66),
    "rsa_pss_2048_sha384_mgf1_48_test.json": ("PS384", 0),
    "rsa_pss_4096_sha512_mgf1_64_test.json": ("PS512", 0),
    "rsa_signature_3072_sha256_test.json": ("RS256", 0),
    "rsa_signature_3072_sha384_test.json": ("RS384", 0),
    "rsa_signature_4096_sha512_test.json": ("RS512", 0),
}


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64u_dec(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def cases():
    """(id, alg, jwk, msg bytes, sig bytes, valid)."""
    assert VECTORS.is_dir(), f"shared vectors missing at {VECTORS}"
    out = []
    rfc = json.loads((VECTORS / "jws-rfc-vectors.json").read_text())
    for v in rfc["vectors"]:
        if v["alg"] not in ("ES256", "RS256", "PS256", "EdDSA", "PS384", "ES512"):
            continue
        for compact, valid in ((v["compact"], True), (v["tampered_signature_compact"], False)):
            h, p, s = compact.split(".")
            out.append((f"{v['id']}{'' if valid else '-tampered'}", v["alg"], v["public_jwk"],
                        f"{h}.{p}".encode(), b64u_dec(s), valid))
    ecdsa = json.loads((VECTORS / "wycheproof" / "ecdsa_secp256r1_sha256_p1363_test.json").read_text())
    for g in ecdsa["testGroups"]:
        # Some groups give the key only as coordinates (hex); the JWK is the same point.
        pk = g["publicKey"]
        jwk = g.get("publicKeyJwk") or {"kty": "EC", "crv": "P-256",
                                        "x": b64u(bytes.fromhex(pk["wx"][-64:].rjust(64, "0"))),
                                        "y": b64u(bytes.fromhex(pk["wy"][-64:].rjust(64, "0")))}
        for t in g["tests"]:
            if t["result"] == "acceptable":
                continue
            out.append((f"wycheproof-ecdsa-{t['tcId']}", "ES256", jwk, bytes.fromhex(t["msg"]),
                        bytes.fromhex(t["sig"]), t["result"] == "valid"))
    for name, (alg, octets) in EXTRA.items():
        doc = json.loads((VECTORS / "wycheproof" / name).read_text())
        for g in doc["testGroups"]:
            if octets:
                pk = g["publicKey"]
                crv = {48: "P-384", 66: "P-521"}[octets]
                jwk = g.get("publicKeyJwk") or {
                    "kty": "EC", "crv": crv,
                    "x": b64u(int(pk["wx"], 16).to_bytes(octets, "big")),
                    "y": b64u(int(pk["wy"], 16).to_bytes(octets, "big"))}
            else:
                full = g.get("publicKeyJwk") or g["keyJwk"]
                jwk = {k: full[k] for k in ("kty", "n", "e")}
            for t in g["tests"]:
                if t["result"] == "acceptable":
                    continue
                out.append((f"wycheproof-{name}-{t['tcId']}", alg, jwk, bytes.fromhex(t["msg"]),
                            bytes.fromhex(t["sig"]), t["result"] == "valid"))
    return out


@pytest.fixture(scope="module")
def probe():
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1", "-p", "fapi-verify-probe", "--quiet"],
                   cwd=ROOT, check=True)
    port, admin = free_port(), free_port()
    cfg = render.render({"api": {"name": "probe"}}, [], "", port, 1, admin, direct_response=True)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    probe_filter = render.wasm_filter("token", "{}", str(ROOT / "target/wasm32-wasip1/release"))
    probe_filter["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(
        ROOT / "target/wasm32-wasip1/release/fapi_verify_probe.wasm")
    probe_filter["typed_config"]["config"]["name"] = probe_filter["typed_config"]["config"]["root_id"] = "probe"
    probe_filter["typed_config"]["config"]["vm_config"]["vm_id"] = "probe"
    hcm["http_filters"].insert(0, probe_filter)
    with EnvoyProcess(cfg, port, admin, "probe", log_level="warning") as e:
        yield e


def run_case(probe, alg, jwk, msg, sig, path):
    import requests

    body = json.dumps({"alg": alg, "jwk": jwk, "msg": msg.hex(), "sig": sig.hex(), "path": path})
    r = requests.get(f"http://127.0.0.1:{probe.port}/", headers={"x-probe": b64u(body.encode())}, timeout=10)
    assert r.status_code in (200, 401), (r.status_code, r.text)
    return r.status_code == 200, r.headers.get("x-verifier")


@pytest.mark.parametrize("path", ["host", "software"])
def test_every_vector_gives_its_published_result_on_both_paths(probe, path):
    all_cases = cases()
    assert len(all_cases) > 250
    assert {c[1] for c in all_cases} >= {"ES384", "ES512", "PS384", "PS512", "RS384", "RS512"}
    wrong, verified_by = [], set()
    for cid, alg, jwk, msg, sig, valid in all_cases:
        ok, by = run_case(probe, alg, jwk, msg, sig, path)
        if alg in HOST_ALGS:
            verified_by.add(by)
        if ok != valid:
            wrong.append(f"{cid}: expected {'valid' if valid else 'invalid'}, got {'valid' if ok else 'invalid'}")
    assert not wrong, "\n".join(wrong)
    # The host path really served ES*/RS* (and software really did in the other run).
    assert verified_by == {path}
    if path == "host":
        # Every valid ES*/RS* vector was verified by the host (malformed ones may be
        # refused before the call, e.g. a signature of the wrong length).
        must = sum(1 for _, alg, _, _, _, valid in all_cases if valid and alg in HOST_ALGS)
        assert probe.counter("verify.host") >= must > 100
