"""TLS for client streams: the operator's certificate, or a self-signed one made once.

TLS-level compression stays off (OpenSSL's ``OP_NO_COMPRESSION``): compressing secrets together with
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
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.python import log
from zope.interface import implementer

from xep207.startup import StartupError


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


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """An OpenSSL context for the server side of STARTTLS.

    Built directly rather than with Twisted's ``CertificateOptions``, whose
    context answered Go's TLS client (go-sendxmpp, Conversations-era stacks)
    with an internal-error alert; this one serves OpenSSL, Python and Go alike.
    """

    CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!MD5:!DSS"

    def __init__(self, cert_path: str, key_path: str):
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE
                            | getattr(SSL, "OP_NO_RENEGOTIATION", 0))
        context.set_cipher_list(self.CIPHERS)
        # An idle connection keeps no read/write buffers (about 34 KiB each
        # connection otherwise); they come back from OpenSSL's freelist on use.
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        for path in (cert_path, key_path):
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise StartupError(f"cannot read TLS file {path}: {exc.strerror or exc}") from None
        try:
            context.use_certificate_chain_file(cert_path)
        except SSL.Error:
            raise StartupError(f"TLS certificate {cert_path}: not a PEM certificate (chain)") from None
        mismatch = StartupError(f"TLS key {key_path} does not match the certificate {cert_path}")
        try:
            context.use_privatekey_file(key_path)
        except SSL.Error as exc:
            if "values mismatch" in str(exc):
                raise mismatch from None
            raise StartupError(f"TLS key {key_path}: not an unencrypted PEM private key") from None
        try:
            context.check_privatekey()
        except SSL.Error:
            raise mismatch from None
        self._context = context

    def getContext(self):
        return self._context

    def serverConnectionForTLS(self, tls_protocol):
        """The modern connection-creator interface (the legacy ``getContext`` alone
        made Twisted warn on every STARTTLS)."""
        return SSL.Connection(self._context, None)


def context_factory(domain: str, data_dir: str, cert_path: str | None = None,
                    key_path: str | None = None) -> ServerTLS:
    """TLS for the c2s listener, generating a certificate if none is configured."""
    if cert_path is None:
        cert_path = os.path.join(data_dir, "tls", f"{domain}.crt")
        key_path = os.path.join(data_dir, "tls", f"{domain}.key")
        if not os.path.exists(cert_path):
            generate_self_signed(domain, cert_path, key_path)
            log.msg(f"generated a self-signed TLS certificate for {domain} at {cert_path}; "
                    "use --tls-cert/--tls-key for a real one")
    return ServerTLS(cert_path, key_path or cert_path)
