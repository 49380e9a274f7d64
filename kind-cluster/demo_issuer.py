#!/usr/bin/env python3
"""The kind demo's token issuer, run on your machine: keys, JWKS, DPoP-bound access tokens
(RFC 9068 + RFC 9449 `cnf.jkt`) and DPoP proofs. Only the public JWKS goes into the cluster.

  demo_issuer.py keygen DIR
  demo_issuer.py token DIR --patient pat-alice [--scope "patient/*.rs"]
  demo_issuer.py proof DIR --htm GET --htu URL [--token AT]

Needs the `cryptography` package (scripts/bootstrap.sh puts it in .venv). ES256 throughout.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "http://guard-issuer.guard-issuer.svc.cluster.local"
AUDIENCE = "fhir-demo"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict:
    n = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64u(n.x.to_bytes(32, "big")), "y": b64u(n.y.to_bytes(32, "big"))}


def thumbprint(jwk: dict) -> str:
    """RFC 7638: required members, lexicographic order, no whitespace."""
    canon = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return b64u(hashlib.sha256(canon.encode()).digest())


def sign_es256(key: ec.EllipticCurvePrivateKey, header: dict, claims: dict) -> str:
    signing_input = b64u(json.dumps(header, separators=(",", ":")).encode()) + "." + b64u(
        json.dumps(claims, separators=(",", ":")).encode()
    )
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SystemExit(f"{path}: not an EC private key")
    return key


def keygen(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name in ("issuer-key.pem", "client-key.pem"):
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        (d / name).write_bytes(pem)
        (d / name).chmod(0o600)
    issuer = load_key(d / "issuer-key.pem")
    jwk = public_jwk(issuer) | {"kid": thumbprint(public_jwk(issuer)), "alg": "ES256", "use": "sig"}
    (d / "jwks.json").write_text(json.dumps({"keys": [jwk]}, indent=2) + "\n")
    print(f"keys in {d}; public JWKS {d / 'jwks.json'}")


def token(d: Path, patient: str, scope: str, lifetime: int) -> str:
    issuer = load_key(d / "issuer-key.pem")
    client_jwk = public_jwk(load_key(d / "client-key.pem"))
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": f"user-{patient}",
        "aud": AUDIENCE,
        "client_id": "kind-demo-app",
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        "scope": scope,
        "patient": patient,
        "cnf": {"jkt": thumbprint(client_jwk)},
    }
    header = {"alg": "ES256", "typ": "at+jwt", "kid": thumbprint(public_jwk(issuer))}
    return sign_es256(issuer, header, claims)


def proof(d: Path, htm: str, htu: str, access_token: str | None) -> str:
    key = load_key(d / "client-key.pem")
    claims = {"htm": htm, "htu": htu, "iat": int(time.time()), "jti": uuid.uuid4().hex}
    if access_token:
        claims["ath"] = b64u(hashlib.sha256(access_token.encode()).digest())
    return sign_es256(key, {"alg": "ES256", "typ": "dpop+jwt", "jwk": public_jwk(key)}, claims)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen")
    k.add_argument("dir", type=Path)
    t = sub.add_parser("token")
    t.add_argument("dir", type=Path)
    t.add_argument("--patient", required=True)
    t.add_argument("--scope", default="patient/*.rs")
    t.add_argument("--lifetime", type=int, default=300)
    p = sub.add_parser("proof")
    p.add_argument("dir", type=Path)
    p.add_argument("--htm", required=True)
    p.add_argument("--htu", required=True)
    p.add_argument("--token")
    a = ap.parse_args(argv)
    if a.cmd == "keygen":
        keygen(a.dir)
    elif a.cmd == "token":
        print(token(a.dir, a.patient, a.scope, a.lifetime))
    else:
        print(proof(a.dir, a.htm, a.htu, a.token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
