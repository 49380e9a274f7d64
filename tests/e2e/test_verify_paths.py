"""Both signature paths, the same public vectors, in real Envoy: Envoy's
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
# Every Wycheproof set for an algorithm the filters accept (the table in
# filters/core/tests/data/vectors/README.md): file → (alg, EC coordinate octets or 0 for RSA/Ed25519).
WYCHEPROOF = {
    "ecdsa_secp256r1_sha256_p1363_test.json": ("ES256", 32),
    "ecdsa_secp384r1_sha384_p1363_test.json": ("ES384", 48),
    "ecdsa_secp521r1_sha512_p1363_test.json": ("ES512", 66),
    "rsa_pss_2048_sha256_mgf1_32_test.json": ("PS256", 0),
    "rsa_pss_3072_sha256_mgf1_32_test.json": ("PS256", 0),
    "rsa_pss_4096_sha256_mgf1_32_test.json": ("PS256", 0),
    "rsa_pss_2048_sha384_mgf1_48_test.json": ("PS384", 0),
    "rsa_pss_4096_sha384_mgf1_48_test.json": ("PS384", 0),
    "rsa_pss_4096_sha512_mgf1_64_test.json": ("PS512", 0),
    "rsa_signature_2048_sha256_test.json": ("RS256", 0),
    "rsa_signature_3072_sha256_test.json": ("RS256", 0),
    "rsa_signature_4096_sha256_test.json": ("RS256", 0),
    "rsa_signature_8192_sha256_test.json": ("RS256", 0),
    "rsa_signature_2048_sha384_test.json": ("RS384", 0),
    "rsa_signature_3072_sha384_test.json": ("RS384", 0),
    "rsa_signature_4096_sha384_test.json": ("RS384", 0),
    "rsa_signature_8192_sha384_test.json": ("RS384", 0),
    "rsa_signature_2048_sha512_test.json": ("RS512", 0),
    "rsa_signature_3072_sha512_test.json": ("RS512", 0),
    "rsa_signature_4096_sha512_test.json": ("RS512", 0),
    "rsa_signature_8192_sha512_test.json": ("RS512", 0),
    "ed25519_test.json": ("EdDSA", 0),
}
CRV = {32: "P-256", 48: "P-384", 66: "P-521"}


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64u_dec(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def group_jwk(alg, octets, g):
    """The group's public key as a JWK (Wycheproof gives some only as hex coordinates)."""
    pk = g["publicKey"]
    if octets:
        return {"kty": "EC", "crv": CRV[octets],
                "x": b64u(int(pk["wx"], 16).to_bytes(octets, "big")),
                "y": b64u(int(pk["wy"], 16).to_bytes(octets, "big"))}
    if alg == "EdDSA":
        return {"kty": "OKP", "crv": "Ed25519", "x": b64u(bytes.fromhex(pk["pk"]))}
    full = g.get("publicKeyJwk") or g["keyJwk"]
    return {k: full[k] for k in ("kty", "n", "e")}


def groups():
    """[(source, alg, jwk, [(id, msg, sig, valid)])]: the RFC examples and every Wycheproof case.
    `acceptable` cases (only PKCS#1 v1.5 `MissingNull`) are expected refused: the guard accepts
    only the RFC 8017 §9.2 DigestInfo encoding (docs in the vectors README)."""
    assert VECTORS.is_dir(), f"shared vectors missing at {VECTORS}"
    out = []
    rfc = json.loads((VECTORS / "jws-rfc-vectors.json").read_text())
    for v in rfc["vectors"]:
        tests = []
        for compact, valid in ((v["compact"], True), (v["tampered_signature_compact"], False)):
            h, p, s = compact.split(".")
            tests.append((f"{v['id']}{'' if valid else '-tampered'}", f"{h}.{p}".encode(), b64u_dec(s), valid))
        out.append(("jws-rfc-vectors.json", v["alg"], v["public_jwk"], tests))
    for name, (alg, octets) in WYCHEPROOF.items():
        doc = json.loads((VECTORS / "wycheproof" / name).read_text())
        for g in doc["testGroups"]:
            tests = [(f"{name}#{t['tcId']}", bytes.fromhex(t["msg"]), bytes.fromhex(t["sig"]),
                      t["result"] == "valid") for t in g["tests"]]
            out.append((name, alg, group_jwk(alg, octets, g), tests))
    return out


@pytest.fixture(scope="module")
def probe():
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1", "-p", "fapi-verify-probe", "--quiet"],
                   cwd=ROOT, check=True)
    port, admin = free_port(), free_port()
    # Batches are POST bodies, so the route cannot answer directly (it would answer at the
    # headers); its upstream is this Envoy's admin, which waits for a body the probe holds:
    # the probe's local answer is the only one.
    cfg = render.render({"api": {"name": "probe"}}, [], "", port, admin, admin)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    probe_filter = render.wasm_filter(["token"], "{}", str(ROOT / "target/wasm32-wasip1/release"))
    probe_filter["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(
        ROOT / "target/wasm32-wasip1/release/fapi_verify_probe.wasm")
    probe_filter["typed_config"]["config"]["name"] = probe_filter["typed_config"]["config"]["root_id"] = "probe"
    probe_filter["typed_config"]["config"]["vm_config"]["vm_id"] = "probe"
    hcm["http_filters"].insert(0, probe_filter)
    with EnvoyProcess(cfg, port, admin, "probe", log_level="warning") as e:
        yield e


def group_size(group):
    return sum(2 * (len(m) + len(s)) for _, m, s, _ in group[3])


def run_batch(probe, path, batch):
    """One POST per batch of groups; one `<valid|invalid> <verifier>` line back per test."""
    import requests

    body = {"path": path, "groups": [{"alg": alg, "jwk": jwk, "tests": [[m.hex(), s.hex()] for _, m, s, _ in tests]}
                                     for _, alg, jwk, tests in batch]}
    r = requests.post(f"http://127.0.0.1:{probe.port}/", json=body, timeout=60)
    assert r.status_code == 200, (r.status_code, r.text[:200])
    lines = r.text.splitlines()
    assert len(lines) == sum(len(g[3]) for g in batch)
    return [line.split() for line in lines]


@pytest.mark.parametrize("path", ["host", "software"])
def test_every_vector_gives_its_published_result_on_both_paths(probe, path):
    all_groups = groups()
    assert {name for name, *_ in all_groups} == {"jws-rfc-vectors.json", *WYCHEPROOF}
    wrong, verified_by, per_file = [], {}, {}
    host_before = probe.counter("verify.host")
    i, must_host = 0, 0
    while i < len(all_groups):
        # Groups until ~300 KB of hex per request: well under Envoy's 1 MiB buffer limit
        # (one 8192-bit group is ~530 KB and goes alone).
        batch, size = [], 0
        while i < len(all_groups) and (not batch or size + group_size(all_groups[i]) < 300_000):
            batch.append(all_groups[i])
            size += group_size(all_groups[i])
            i += 1
        answers = iter(run_batch(probe, path, batch))
        for name, alg, _, tests in batch:
            for cid, _, _, valid in tests:
                got, by = next(answers)
                verified_by.setdefault(alg, set()).add(by)
                per_file[name] = per_file.get(name, 0) + 1
                must_host += valid and alg in HOST_ALGS
                if (got == "valid") != valid:
                    wrong.append(f"{cid} ({alg}): expected {'valid' if valid else 'invalid'}, got {got}")
    assert not wrong, "\n".join(wrong)
    # Case counts as in the vectors README table (Wycheproof numberOfTests, all results).
    for name in WYCHEPROOF:
        assert per_file[name] == json.loads((VECTORS / "wycheproof" / name).read_text())["numberOfTests"], name
    assert sum(per_file.values()) == 4914
    # The host path really served ES*/RS* (and software really did in the other run);
    # PS*/EdDSA are always software (BoringSSL cannot do them through verify_signature).
    for alg, by in verified_by.items():
        assert by == {path if alg in HOST_ALGS else "software"}, (alg, by)
    if path == "host":
        # Every valid ES*/RS* vector was verified by the host (malformed ones may be
        # refused before the call, e.g. a signature of the wrong length).
        assert probe.counter("verify.host") - host_before >= must_host > 100
