#!/usr/bin/env python3
"""A throwaway local PKI for the two-proxy topology, the demo and the e2e tests.

Writes PEM files into a directory:
  ca.pem                        a self-signed CA (its key is not kept: nothing else is ever signed)
  server.pem, server-key.pem    the gateway's TLS certificate (127.0.0.1, localhost, api.example.test)
  client.pem, client-key.pem    a client certificate (URI SAN spiffe://example.test/client-1)

and prints the client certificate's RFC 8705 §3.1 thumbprint (`x5t#S256`: base64url of the
SHA-256 of the DER certificate), the value a certificate-bound token carries in `cnf`.

  python3 tools/dev_pki.py --dir run/pki          # keeps existing, still valid files

Idempotent: when all five files exist and the certificates are valid for at least another
hour, nothing is rewritten (the thumbprint stays the same, so tokens minted earlier keep
matching). Otherwise all five are made afresh. For local testing only.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import ipaddress
import os
import sys
import tempfile
from pathlib import Path

FILES = ("ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem")


def x5t_s256(cert) -> str:
    """RFC 8705 §3.1: base64url(SHA-256(DER certificate)), no padding."""
    from cryptography.hazmat.primitives import serialization

    der = cert.public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


class Pki:
    """A CA with a server and a client certificate as PEM files in `directory` (a fresh
    temporary directory when none is given). Existing, still valid files are kept.

    Attributes: `dir`, `ca`, `server_cert`, `server_key`, `client_cert`, `client_key` (paths as
    str) and `client_x5t_s256` (the RFC 8705 thumbprint of the client certificate)."""

    def __init__(self, directory: Path | str | None = None, days: int = 30):
        self.dir = Path(directory or tempfile.mkdtemp(prefix="fapi-pki-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = str(self.dir / "ca.pem")
        self.server_cert, self.server_key = str(self.dir / "server.pem"), str(self.dir / "server-key.pem")
        self.client_cert, self.client_key = str(self.dir / "client.pem"), str(self.dir / "client-key.pem")
        client = self._load_valid()
        self.created = client is None
        if client is None:
            client = self._create(days)
        self.client_x5t_s256 = x5t_s256(client)

    def _load_valid(self):
        """The client certificate when every file is there and still valid for an hour, else None."""
        from cryptography import x509

        if not all((self.dir / f).is_file() for f in FILES):
            return None
        soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        try:
            certs = [x509.load_pem_x509_certificate((self.dir / f).read_bytes())
                     for f in ("ca.pem", "server.pem", "client.pem")]
        except ValueError:
            return None
        if any(c.not_valid_after_utc < soon for c in certs):
            return None
        return certs[2]

    def _create(self, days: int):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.timezone.utc)
        start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

        def name(cn):
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        def write(file, data, private=False):
            path = self.dir / file
            # Keys are written owner-only (the CA key is never written).
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (x509.CertificateBuilder().subject_name(name("fapi-guard test CA")).issuer_name(name("fapi-guard test CA"))
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(start).not_valid_after(end)
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))

        def leaf(cn, sans, usage, file):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
                    .public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(start).not_valid_after(end)
                    .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                    .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                    .sign(ca_key, hashes.SHA256()))
            write(f"{file}-key.pem", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()), private=True)
            write(f"{file}.pem", cert.public_bytes(serialization.Encoding.PEM))
            return cert

        leaf("api.example.test", [x509.DNSName("api.example.test"), x509.DNSName("localhost"),
                                  x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
             ExtendedKeyUsageOID.SERVER_AUTH, "server")
        client = leaf("client-1", [x509.UniformResourceIdentifier("spiffe://example.test/client-1")],
                      ExtendedKeyUsageOID.CLIENT_AUTH, "client")
        # The CA last: a run cut short leaves no ca.pem, so the next run starts over.
        write("ca.pem", ca.public_bytes(serialization.Encoding.PEM))
        return client


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="where the PEM files go (created if missing)")
    ap.add_argument("--days", type=int, default=30, help="validity of newly made certificates (default 30)")
    a = ap.parse_args(argv)
    pki = Pki(a.dir, days=a.days)
    print(f"{'created' if pki.created else 'kept'} {pki.dir}/{{{','.join(FILES)}}}", file=sys.stderr)
    print(pki.client_x5t_s256)
    return 0


if __name__ == "__main__":
    sys.exit(main())
