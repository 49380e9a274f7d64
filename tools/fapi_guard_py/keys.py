"""Keys and access tokens from joserfc (independent of the filters' Rust JOSE code), and
hand-made JWS for what no library will sign."""
from __future__ import annotations

import json
import time
import uuid


class Issuer:
    """An authorization server stand-in built on joserfc (independent of our Rust code)."""

    def __init__(self, iss: str = "https://issuer.test", algs=("ES256",)):
        from joserfc.jwk import ECKey, OKPKey, RSAKey

        self.iss = iss
        self.keys = {}
        for alg in algs:
            kid = f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
            self.keys[alg] = self.make_key(alg, kid)
        self._ECKey, self._OKPKey, self._RSAKey = ECKey, OKPKey, RSAKey

    @staticmethod
    def make_key(alg: str, kid: str, rsa_bits: int = 2048):
        from joserfc.jwk import ECKey, OKPKey, RSAKey

        if alg == "ES256":
            return ECKey.generate_key("P-256", parameters={"kid": kid, "alg": alg, "use": "sig"})
        if alg in ("PS256", "RS256"):
            return RSAKey.generate_key(rsa_bits, parameters={"kid": kid, "alg": alg, "use": "sig"})
        if alg == "EdDSA":
            return OKPKey.generate_key("Ed25519", parameters={"kid": kid, "alg": alg, "use": "sig"})
        raise ValueError(alg)

    def jwks(self, extra=()) -> dict:
        return {"keys": [k.as_dict(private=False) for k in list(self.keys.values()) + list(extra)]}

    def claims(self, aud="api", scope="patient/*.rs", **over) -> dict:
        now = int(time.time())
        c = {"iss": self.iss, "sub": "user-1", "aud": aud, "client_id": "client-1", "iat": now, "exp": now + 300,
             "jti": uuid.uuid4().hex, "scope": scope}
        c.update(over)
        return {k: v for k, v in c.items() if v is not None}

    def token(self, alg="ES256", key=None, header=None, **claims) -> str:
        from joserfc import jwt

        key = key or self.keys[alg]
        h = {"alg": alg, "typ": "at+jwt", "kid": key.kid}
        h.update(header or {})
        h = {k: v for k, v in h.items() if v is not None}
        return jwt.encode(h, self.claims(**claims), key, algorithms=[alg])


def sign_es256(header: dict, payload: dict, key) -> str:
    """Signs any header/payload with an ES256 joserfc key via `cryptography` directly
    (for headers joserfc refuses to produce, such as an unknown `crit`)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    unsigned = raw_jws(header, payload).rsplit(".", 1)[0]
    der = key.private_key.sign(unsigned.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return raw_jws(header, payload, r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def raw_jws(header: dict, payload: dict | bytes, signature: bytes = b"") -> str:
    """A hand-made compact JWS (for tokens no library will sign: alg none, HS256, ...)."""
    import base64

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return f"{b64(json.dumps(header).encode())}.{b64(body)}.{b64(signature)}"
