"""HelseID-shaped tokens and DPoP proofs minted by joserfc (independent of our Rust code), for
the HelseID e2e tests. Shapes from HelseID's public JWKS/discovery and NHN's developer portal:
an RSA 3072 issuer key, `alg` RS256, its JWKS entry with `x5c`/`x5t`/`x5t#S256` and a hex
thumbprint `kid`; the Duende IdentityServer claim layout (`client_id`, `jti`, `scope` as array or
string, `cnf.jkt`, no `sub` on client-credentials tokens); proofs in every alg of HelseID's
`dpop_signing_alg_values_supported`."""
import base64
import datetime
import hashlib
import json
import time
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from joserfc import jws, jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

ISS = "https://helseid-sts.test.nhn.no"
HELSEID_DPOP_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
SL = "helseid://claims/identity/security_level"
ORG_PARENT = "helseid://claims/client/claims/orgnr_parent"


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class HelseId:
    """The issuer: RSA 3072, RS256, x5c in the JWKS."""

    def __init__(self):
        self.key = RSAKey.generate_key(3072)
        pk = self.key.private_key
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HelseID test signing")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pk.public_key())
                .serial_number(1).not_valid_before(datetime.datetime(2023, 1, 1))
                .not_valid_after(datetime.datetime(2033, 1, 1)).sign(pk, hashes.SHA256()))
        der = cert.public_bytes(serialization.Encoding.DER)
        self.kid = hashlib.sha1(der).hexdigest().upper()
        jwk = {k: v for k, v in self.key.as_dict(private=False).items() if k != "kid"}
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256", "x5c": [base64.b64encode(der).decode()],
                    "x5t": b64u(hashlib.sha1(der).digest()), "x5t#S256": b64u(hashlib.sha256(der).digest()),
                    "issuer": ISS})
        self.jwk = jwk

    def jwks(self) -> dict:
        return {"keys": [self.jwk]}

    def token(self, aud: str, jkt: str | None, sub: bool = True, scope=("read",), scope_as="array",
              **extra) -> str:
        now = int(time.time())
        c = {"iss": ISS, "aud": aud, "nbf": now, "iat": now, "exp": now + 300,
             "client_id": "7f3c2a9e-1b4d-4f6e-9a8b-2c1d0e9f8a7b", "jti": uuid.uuid4().hex.upper(),
             "scope": list(scope) if scope_as == "array" else " ".join(scope),
             "helseid://claims/client/client_name": "Sample EPJ"}
        if jkt:
            c["cnf"] = {"jkt": jkt}
        if sub:
            c.update({"sub": "y7kmWl2WGQ0cqC5fVJ1wxEHDu9wfVyVuf4Kf7iVLwwE=",
                      "helseid://claims/identity/pid": "12345678901", SL: "4",
                      "helseid://claims/identity/assurance_level": "high"})
        c.update(extra)
        c = {k: v for k, v in c.items() if v is not None}
        return jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": self.kid}, c, self.key, algorithms=["RS256"])


def proof_key(alg: str):
    if alg.startswith("ES"):
        return ECKey.generate_key({"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg])
    if alg in ("Ed25519", "EdDSA"):
        return OKPKey.generate_key("Ed25519")
    return RSAKey.generate_key(3072 if alg.endswith("384") else 4096 if alg.endswith("512") else 2048)


def proof(key, alg: str, htm: str, htu: str, token: str) -> str:
    h = {"typ": "dpop+jwt", "alg": alg, "jwk": {k: v for k, v in key.as_dict(private=False).items() if k != "kid"}}
    c = {"jti": uuid.uuid4().hex, "htm": htm, "htu": htu, "iat": int(time.time()),
         "ath": b64u(hashlib.sha256(token.encode()).digest())}
    return jws.serialize_compact(h, json.dumps(c).encode(), key, algorithms=[alg])


def reason(r) -> str:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]["details"]["coding"][0]["code"]
