"""Differential checks: the core's JWS verification against joserfc, and its `htu`
normalisation against the WHATWG URL parser of Node, on generated inputs. Both run through
`filters/core/examples/oracle.rs` (the core's public entry points, natively).

Deliberate differences are listed where they are allowed; any other disagreement fails."""
import base64
import json
import random
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey

ROOT = Path(__file__).resolve().parent.parent
ORACLE = ROOT / "target/debug/examples/oracle"


@pytest.fixture(scope="module")
def oracle():
    subprocess.run(["cargo", "build", "-q", "-p", "fapi-guard-core", "--example", "oracle"],
                   cwd=ROOT, check=True)
    p = subprocess.Popen([str(ORACLE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(req):
        p.stdin.write(json.dumps(req) + "\n")
        p.stdin.flush()
        return json.loads(p.stdout.readline())

    yield ask
    p.stdin.close()
    p.wait(timeout=10)


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# --- JWS -------------------------------------------------------------------------------------

def keys():
    return {
        "ES256": ECKey.import_key(ec.generate_private_key(ec.SECP256R1())),
        "PS256": RSAKey.import_key(rsa.generate_private_key(65537, 2048)),
        "RS256": RSAKey.import_key(rsa.generate_private_key(65537, 2048)),
        "EdDSA": OKPKey.import_key(ed25519.Ed25519PrivateKey.generate()),
    }


def joserfc_verdict(token, key, alg):
    try:
        jws.deserialize_compact(token, key, algorithms=[alg])
        return True
    except (JoseError, ValueError, TypeError):
        return False


def mutations(rng, token):
    """(name, token) pairs: the valid token and tampered or re-encoded variants."""
    h, p, s = token.split(".")
    sig = bytearray(unb64(s))
    out = [("valid", token)]
    i = rng.randrange(len(sig))
    flipped = bytearray(sig)
    flipped[i] ^= 1 << rng.randrange(8)
    out.append(("sig-bit", f"{h}.{p}.{b64(bytes(flipped))}"))
    pay = bytearray(unb64(p))
    j = rng.randrange(len(pay))
    pay[j] ^= 0x01
    out.append(("payload-bit", f"{h}.{b64(bytes(pay))}.{s}"))
    out.append(("sig-truncated", f"{h}.{p}.{b64(bytes(sig[:-1]))}"))
    extended = b64(bytes(sig) + bytes(1))
    out.append(("sig-extended", f"{h}.{p}.{extended}"))
    out.append(("sig-empty", f"{h}.{p}."))
    out.append(("sig-zero", f"{h}.{p}.{b64(bytes(len(sig)))}"))
    out.append(("sig-padded", f"{h}.{p}.{s}=="))
    out.append(("four-parts", f"{h}.{p}.{s}.x"))
    return out


# Where the core may refuse on purpose what joserfc accepts (fail closed), by mutation name.
# Empty today: joserfc 1.8 also refuses `=` padding (RFC 7515 §2) and every other mutation.
CORE_STRICTER: set[str] = set()


def test_jws_verification_matches_joserfc(oracle):
    rng = random.Random(13)
    ks = keys()
    disagreements, compared = [], 0
    for alg, key in ks.items():
        jwks = {"keys": [{**key.as_dict(private=False), "kid": "k", "alg": alg}]}
        for n in range(12):
            claims = {"iss": "https://issuer.test", "n": n, "s": "x" * rng.randrange(40)}
            token = jws.serialize_compact({"alg": alg, "kid": "k", "typ": "at+jwt"},
                                          json.dumps(claims).encode(), key, algorithms=[alg])
            for name, t in mutations(rng, token):
                ours = oracle({"op": "verify", "jwks": jwks, "token": t})["ok"]
                theirs = joserfc_verdict(t, key, alg)
                compared += 1
                if name == "valid":
                    assert ours and theirs, (alg, ours, theirs)
                if ours != theirs and not (name in CORE_STRICTER and theirs and not ours):
                    disagreements.append((alg, name, ours, theirs))
                # Fail closed: the core never accepts what joserfc refuses.
                assert not (ours and not theirs), (alg, name, t)
    assert compared > 400
    assert not disagreements, disagreements[:10]


def test_jws_cross_key_and_alg_confusion(oracle):
    """A token signed with one key verifies against no other key or alg (RFC 8725 §3.1)."""
    ks = keys()
    for alg, key in ks.items():
        token = jws.serialize_compact({"alg": alg, "kid": "k"}, b'{"a":1}', key, algorithms=[alg])
        for other_alg, other in ks.items():
            if other is key:
                continue
            jwks = {"keys": [{**other.as_dict(private=False), "kid": "k"}]}
            assert not oracle({"op": "verify", "jwks": jwks, "token": token})["ok"]
            assert not joserfc_verdict(token, other, alg)
        # Same RSA key, other RSA alg header (PS256 <-> RS256): both refuse.
        if alg in ("PS256", "RS256"):
            swapped = "RS256" if alg == "PS256" else "PS256"
            h, p, s = token.split(".")
            hdr = b64(json.dumps({"alg": swapped, "kid": "k"}).encode())
            t2 = f"{hdr}.{p}.{s}"
            jwks = {"keys": [{**key.as_dict(private=False), "kid": "k"}]}
            assert not oracle({"op": "verify", "jwks": jwks, "token": t2})["ok"]
            assert not joserfc_verdict(t2, key, swapped)


def test_rsa_below_2048_refused_where_joserfc_accepts(oracle):
    """Deliberate difference: FAPI 2.0 §5.4 needs RSA >= 2048 bits; joserfc verifies 1024."""
    key = RSAKey.import_key(rsa.generate_private_key(65537, 1024))
    token = jws.serialize_compact({"alg": "PS256", "kid": "k"}, b'{"a":1}', key, algorithms=["PS256"])
    jwks = {"keys": [{**key.as_dict(private=False), "kid": "k"}]}
    assert joserfc_verdict(token, key, "PS256")
    got = oracle({"op": "verify", "jwks": jwks, "token": token})
    assert not got["ok"] and got["error"] == "verify:KeyMismatch"


def test_ecdsa_high_s_same_verdict(oracle):
    """ECDSA (r, n - s) is the same signature mathematically; record that both agree."""
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    key = ECKey.import_key(ec.generate_private_key(ec.SECP256R1()))
    token = jws.serialize_compact({"alg": "ES256", "kid": "k"}, b'{"a":1}', key, algorithms=["ES256"])
    h, p, s = token.split(".")
    sig = unb64(s)
    r, sv = sig[:32], int.from_bytes(sig[32:], "big")
    t2 = f"{h}.{p}.{b64(r + (n - sv).to_bytes(32, 'big'))}"
    jwks = {"keys": [{**key.as_dict(private=False), "kid": "k"}]}
    assert oracle({"op": "verify", "jwks": jwks, "token": t2})["ok"] == joserfc_verdict(t2, key, "ES256")


# --- htu -------------------------------------------------------------------------------------

NODE = r"""
const rl = require('readline').createInterface({input: process.stdin});
rl.on('line', (l) => {
  let out = null;
  try { const u = new URL(JSON.parse(l)); out = {p: u.protocol, h: u.hostname, port: u.port,
        path: u.pathname, user: u.username + u.password}; } catch (e) {}
  console.log(JSON.stringify(out));
});
"""

UNRESERVED = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def rfc3986_path(path):
    """RFC 3986 §6.2.2.1-2 on a WHATWG pathname: unreserved percent-encodings decoded, the
    others upper-cased (WHATWG leaves both as written)."""
    out, i = [], 0
    while i < len(path):
        hx = path[i + 1:i + 3]
        if path[i] == "%" and len(hx) == 2 and all(c in "0123456789abcdefABCDEF" for c in hx):
            b = int(hx, 16)
            out.append(chr(b) if b in UNRESERVED else "%" + hx.upper())
            i += 3
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def whatwg_normal(u):
    if u is None or u["p"] not in ("http:", "https:") or u["user"]:
        return None
    port = f":{u['port']}" if u["port"] else ""
    return f"{u['p'][:-1]}://{u['h']}{port}{rfc3986_path(u['path'])}"


SCHEMES = ["https", "http", "HTTPS", "HtTp"]
HOSTS = ["api.test", "API.Test", "127.0.0.1", "[::1]", "a-b.c_d.test"]
PORTS = ["", ":443", ":80", ":8443", ":08443"]
SEGMENTS = ["a", "B", ".", "..", "%7E", "%7e", "~", "%41", "%2F", "%2f", "b;c", "@", ":", "x=y",
            "%20", "%E2%82%AC", "!$&'()*+,", "", "%2D", "_-", "%2e", "%2E%2e", ".%2E"]
TAILS = ["", "?q=1", "#f", "?a/../b#c", "/"]


def gen_urls(rng, n):
    for _ in range(n):
        segs = [rng.choice(SEGMENTS) for _ in range(rng.randrange(0, 5))]
        path = "".join("/" + s for s in segs)
        yield f"{rng.choice(SCHEMES)}://{rng.choice(HOSTS)}{rng.choice(PORTS)}{path}{rng.choice(TAILS)}"


# Percent-encoding: WHATWG keeps every percent-encoding as written; `rfc3986_path` applies
# RFC 3986 §6.2.2.1-2 to its output before comparing. `%2e` counts as a dot segment in both.


def test_htu_normalisation_matches_whatwg(oracle):
    rng = random.Random(13)
    urls = list(gen_urls(rng, 1500))
    node = subprocess.run(["node", "-e", NODE], input="\n".join(json.dumps(u) for u in urls) + "\n",
                          capture_output=True, text=True, check=True, timeout=60)
    theirs = [whatwg_normal(json.loads(l)) for l in node.stdout.splitlines()]
    assert len(theirs) == len(urls)
    bad = []
    for url, t in zip(urls, theirs):
        ours = oracle({"op": "htu", "htu": url})["normal"]
        if ours != t:
            bad.append((url, ours, t))
    assert not bad, f"{len(bad)} of {len(urls)} differ, e.g. {bad[:8]}"


def whatwg(url):
    node = subprocess.run(["node", "-e", NODE], input=json.dumps(url) + "\n",
                          capture_output=True, text=True, check=True, timeout=30)
    return whatwg_normal(json.loads(node.stdout))


# Deliberate differences (fuzz/README.md). The core refuses what WHATWG repairs: an htu the
# core cannot read without guessing never matches (fail closed).
REFUSED = [
    "https://api.test\\fhir",       # WHATWG: backslash is a slash for special schemes
    "https://api.test/%zz",         # broken percent-encoding: WHATWG keeps it
    "https:/api.test/a",            # WHATWG repairs a missing slash
]
# The core keeps what WHATWG rewrites; the result can never equal a real request target.
KEPT = [
    ("https://api.test/a\tb", "https://api.test/a%09b"),  # WHATWG drops the tab
    ("https://0x7f.1/a", "https://0x7f.1/a"),             # WHATWG: IPv4 shorthand -> 127.0.0.1
]


@pytest.mark.parametrize("url", REFUSED)
def test_htu_refuses_what_whatwg_repairs(oracle, url):
    assert whatwg(url) is not None, "WHATWG accepts it"
    assert oracle({"op": "htu", "htu": url})["normal"] is None


@pytest.mark.parametrize("url,ours", KEPT)
def test_htu_keeps_what_whatwg_rewrites(oracle, url, ours):
    assert whatwg(url) not in (None, ours)
    assert oracle({"op": "htu", "htu": url})["normal"] == ours
