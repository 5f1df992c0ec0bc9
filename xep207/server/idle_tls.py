"""Give back the memory BIOs' buffers of a TLS stream that is quiet.

Twisted runs TLS through two OpenSSL memory BIOs per connection (bytes in,
bytes out). A memory BIO keeps the capacity of the largest amount it ever held
for as long as it lives: after the handshake that is about 2 KiB in each
direction (the ClientHello with its post-quantum key share, our certificate
flight), more after a large stanza. ``SSL_MODE_RELEASE_BUFFERS`` (xep207.server.tls)
frees OpenSSL's own record buffers, not these. So when a stream has been quiet
for ``idle_parser.QUIET_SECONDS`` (the moment it frees its parser too), an
established TLS connection whose two BIOs are empty gets two fresh, empty ones
and OpenSSL frees the old; nothing was in them, so nothing is lost or reordered.

pyOpenSSL has no public call for this: the connection's BIO attributes are
pyOpenSSL's own (``_into_ssl``, ``_from_ssl``), checked here, so that a
pyOpenSSL that renamed them only costs the saving, never the connection.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib


def tls_connection(transport: Any) -> SSL.Connection | None:
    """The OpenSSL connection under a stream's transport (STARTTLS, direct TLS,
    either under XEP-0138 compression), None for plain TCP."""
    get_handle = getattr(transport, "getHandle", None)
    if get_handle is None:
        return None
    handle = get_handle()
    return handle if isinstance(handle, SSL.Connection) else None


def _pending(bio: Any) -> int:
    return _lib.BIO_get_mem_data(bio, _ffi.NULL)


def release_buffers(connection: SSL.Connection) -> bool:
    """Swap ``connection``'s memory BIOs for fresh ones, freeing what the old
    held, if its handshake is over and neither holds a byte; True if swapped."""
    into, out = getattr(connection, "_into_ssl", None), getattr(connection, "_from_ssl", None)
    ssl = getattr(connection, "_ssl", None)
    if into is None or out is None or ssl is None or connection.get_peer_finished() is None:
        return False  # a socket-backed connection, a pyOpenSSL we do not know, a handshake going on
    if _pending(into) or _pending(out):
        return False
    fresh_in = _lib.BIO_new(_lib.BIO_s_mem())
    fresh_out = _lib.BIO_new(_lib.BIO_s_mem())
    if fresh_in == _ffi.NULL or fresh_out == _ffi.NULL:  # out of memory: keep what works
        for bio in (fresh_in, fresh_out):
            if bio != _ffi.NULL:
                _lib.BIO_free(bio)
        return False
    _lib.SSL_set_bio(ssl, fresh_in, fresh_out)  # frees the old two
    connection._into_ssl, connection._from_ssl = fresh_in, fresh_out
    return True
