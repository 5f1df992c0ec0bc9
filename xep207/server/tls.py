"""TLS for client streams: the operator's certificate, or a self-signed one made once.

TLS-level compression stays off (OpenSSL's ``OP_NO_COMPRESSION``, which
Twisted's ``CertificateOptions`` sets): compressing secrets together with
attacker-chosen data leaks them (CRIME). Stream compression (XEP-0138) happens
after authentication instead, where XEP-0207 wants it.
"""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl
from twisted.python import log


def generate_self_signed(domain: str, cert_path: str, key_path: str) -> None:
    """Write a self-signed certificate for ``domain`` and its subdomains."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(domain), x509.DNSName("*." + domain)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(os.path.dirname(cert_path) or ".", exist_ok=True)
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))


def context_factory(domain: str, data_dir: str, cert_path: str | None = None,
                    key_path: str | None = None) -> ssl.CertificateOptions:
    """TLS options for the c2s listener, generating a certificate if none is configured."""
    if cert_path is None:
        cert_path = os.path.join(data_dir, "tls", f"{domain}.crt")
        key_path = os.path.join(data_dir, "tls", f"{domain}.key")
        if not os.path.exists(cert_path):
            generate_self_signed(domain, cert_path, key_path)
            log.msg(f"generated a self-signed TLS certificate for {domain} at {cert_path}; "
                    "use --tls-cert/--tls-key for a real one")
    with open(cert_path, "rb") as f:
        cert_pem = f.read()
    with open(key_path or cert_path, "rb") as f:
        key_pem = f.read()
    certificate = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
    chain = [ssl.Certificate.loadPEM(pem).original
             for pem in _split_pem(cert_pem)[1:]]
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        extraCertChain=chain or None,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


def _split_pem(data: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    return [part + marker for part in data.split(marker) if b"-----BEGIN CERTIFICATE-----" in part]
