#!/usr/bin/env python3
"""Builds the fuzz seed corpora (fuzz/seeds/<target>/) from the core's test vectors
(filters/core/tests/data, fixtures), the shipped policies, and tokens/proofs minted here with
joserfc for the fixed clock and keys of fuzz/src/lib.rs. Small files only; run with
.venv/bin/python fuzz/make_seeds.py (it replaces fuzz/seeds/)."""
import base64
import hashlib
import json
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws
from joserfc.jwk import ECKey

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "filters/core/tests/data"
OUT = ROOT / "fuzz/seeds"
NOW = 1_800_000_000
ISS, AUD = "https://issuer.test", "api-1"
MAX_SEED = 16 * 1024


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def ec_key(seed: int) -> ECKey:
    k = ec.derive_private_key(int.from_bytes(bytes([seed]) * 32, "big"), ec.SECP256R1())
    return ECKey.import_key(k)


ISSUER, DPOP_KEY = ec_key(7), ec_key(9)
DPOP_JWK = {k: v for k, v in DPOP_KEY.as_dict(private=False).items() if k in ("kty", "crv", "x", "y")}


def sign(key, header, claims) -> str:
    return jws.serialize_compact(header, json.dumps(claims).encode(), key, algorithms=[header["alg"]])


def tsv(name):
    lines = [l for l in (DATA / name).read_text().splitlines() if l and not l.startswith("#")]
    head = lines[0].split("\t")
    return [dict(zip(head, l.split("\t"))) for l in lines[1:]]


def body(name) -> bytes:
    return b"" if name in ("-", "") else (DATA / "bodies" / name).read_bytes()


seeds: dict[str, list[bytes]] = {}


def add(target, data):
    data = data.encode() if isinstance(data, str) else data
    if len(data) <= MAX_SEED:
        seeds.setdefault(target, []).append(data)


# Tokens (docs/checks.md §1) for the fixture policy, valid and mutated.
base = {"iss": ISS, "sub": "user-1", "aud": AUD, "client_id": "c1", "iat": NOW - 10,
        "exp": NOW + 300, "jti": "j1", "scope": "patient/*.rs openid", "patient": "anna",
        "cnf": {"jkt": DPOP_KEY.thumbprint()}}
hdr = {"alg": "ES256", "typ": "at+jwt", "kid": "k1"}
variants = [
    (hdr, base),
    (hdr, {**base, "aud": [AUD, "other"]}),
    (hdr, {**base, "exp": NOW - 100}),
    (hdr, {k: v for k, v in base.items() if k != "cnf"}),
    ({**hdr, "typ": "JWT"}, base),
    ({**hdr, "crit": ["b64"], "b64": False}, base),
    (hdr, {**base, "scp": ["user/*.cruds"], "nbf": NOW + 50}),
    (hdr, {**base, "cnf": {"x5t#S256": "abc"}}),
]
tokens = [sign(ISSUER, h, c) for h, c in variants]
for i, t in enumerate(tokens):
    scheme = "Bearer" if i == 3 else "DPoP"
    add("token_validate", f"{scheme} {t}\n/fhir/Patient/anna")
    add("jws_parse", t)
    for part in t.split("."):
        add("b64", part)
add("token_validate", "Bearer a.b.c\n/fhir/Patient?access_token=x")
add("token_validate", "DPoP  \n/")
add("jws_parse", "eyJhbGciOiJub25lIn0.e30.")

# DPoP proofs (RFC 9449 §4.2) bound to the fixture token of fuzz/src/lib.rs.
ath = b64(hashlib.sha256(b"fuzz-token").digest())
htu = "https://api.test/fhir/Patient/anna"
phdr = {"typ": "dpop+jwt", "alg": "ES256", "jwk": DPOP_JWK}
pclaims = {"jti": "p1", "htm": "GET", "htu": htu, "iat": NOW, "ath": ath}
xfcc = "By=spiffe://a;Hash=" + "46" * 32 + ';Subject="/CN=x";URI=spiffe://c'
for h, c in [(phdr, pclaims), (phdr, {**pclaims, "htu": htu + "?q=1#f"}),
             (phdr, {**pclaims, "iat": NOW - 3600}), (phdr, {**pclaims, "nonce": "n"}),
             ({**phdr, "typ": "jwt"}, pclaims)]:
    proof = sign(DPOP_KEY, h, c)
    add("jws_parse", proof)
    add("dpop_evaluate", b"\x00" + f"GET\n/fhir/Patient/anna\napi.test\n{proof}\n".encode())
    add("dpop_evaluate", b"\x80" + f"GET\n/fhir/Patient/anna\napi.test\n{proof}\n{xfcc}".encode())
fx = json.loads((ROOT / "filters/core/tests/fixtures/dpop_joserfc.json").read_text())
for p in fx.get("proofs", [])[:6]:
    if isinstance(p, dict) and "proof" in p:
        add("jws_parse", p["proof"])

# JWKS documents.
add("jwks_parse", json.dumps({"keys": [{**ISSUER.as_dict(private=False), "kid": "k1", "alg": "ES256"}]}))
add("jwks_parse", json.dumps({"keys": [p["jwk"] for p in fx.get("proofs", []) if isinstance(p, dict) and "jwk" in p][:4]}))
add("jwks_parse", json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64(b"\x01" * 32)}, {"kty": "oct", "k": "AA"}]}))

# Policies.
for p in sorted((ROOT / "policies").glob("*.json")):
    add("policy_load", p.read_bytes())
add("policy_load", (DATA / "fhir_policy.json").read_bytes())

# htu and origins.
for h, path, auth in [(htu, "/fhir/Patient/anna", "api.test"),
                      ("HTTPS://API.TEST:443/fhir/./a/../Patient/%61nna", "/fhir/Patient/anna", "api.test:443"),
                      ("https://[::1]:8443/a%2Fb;p?x#y", "/a%2fb;p", "[::1]:8443"),
                      ("http://user@api.test/", "//x/../y", "api.test:80")]:
    add("htu", f"{h}\n{path}\n{auth}")

# The canonical request path: the path forms of tests/e2e/test_path_forms.py.
for p in ["/fhir/Patient/anna", "/fhir/metadata/../Patient/pat-bjorn", "/fhir/metadata/..;/Patient/x",
          "/fhir/%2e%2E/Patient", "/fhir//Patient", "/fhir/a%2Fb", "/fhir\\Patient", "/fhir/%252e",
          "/fhir/%6Detadata?_format=json", "/fhir/Patient/anna;jsessionid=1", "/fhir/%C0%AE%C0%AE/x",
          "/orgs/{orgnr}/documents", "/fhir/Patient/anna.", "/"]:
    add("path_canonical", p)

# XFCC.
add("xfcc", xfcc)
add("xfcc", f'Hash={"ab" * 32},By=spiffe://b;Hash={"00" * 32}')
add("xfcc", f'"Hash={"ab" * 32}";Hash="x,y"')

# FHIR: interactions, scope decisions, response and stored checks (docs/checks.md §3).
for r in tsv("interactions.tsv"):
    add("fhir_classify", f"{r['method']}\n{r['target']}")
for r in tsv("scope_decisions.tsv"):
    sel = 0x00 if r["patient"] != "-" else 0x11
    ine = "" if r["if_none_exist"] == "-" else r["if_none_exist"]
    add("fhir_decide", bytes([sel]) + f"{r['method']}\n{r['target']}\n{ine}\n".encode() + body(r["body"]))
for r in tsv("responses.tsv"):
    sel = 0x00 if r["patient"] != "-" else 0x11
    status = r["status"]
    if r["method"] == "GET":
        add("fhir_response", bytes([sel]) + f"GET\n{r['target']}\n{status}\n".encode() + body(r["response_body"]))
    else:
        add("fhir_stored", bytes([sel]) + f"{r['method']}\n{r['target']}\n{status}\n".encode()
            + body(r["response_body"]).replace(b"\n", b" ") + b"\n" + body(r["request_body"]))

if OUT.exists():
    shutil.rmtree(OUT)
for target, items in sorted(seeds.items()):
    d = OUT / target
    d.mkdir(parents=True)
    for i, data in enumerate(items):
        (d / f"seed-{i:03d}").write_bytes(data)
    print(f"{target}: {len(items)} seeds")
