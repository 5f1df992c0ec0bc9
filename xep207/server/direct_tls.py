"""XEP-0368 direct TLS: a client port where TLS starts with the connection.

Why a second listener and not a mode: middleboxes that mangle STARTTLS pass
TLS on 5223 untouched. Everything after the handshake is the 5222 stream
(same ``ClientFactory``, policy, SASL, limits); the negotiator sees TLS
already active, so STARTTLS is not offered. ALPN ``xmpp-client`` is accepted
(XEP-0368 §3); a client offering only other protocols gets no ALPN answer
rather than a failed handshake. SRV records are the operator's (DNS) part.
"""

from __future__ import annotations

from twisted.application import internet
from twisted.python import log

ALPN = b"xmpp-client"


def _select_alpn(connection, offered: list[bytes]):
    from OpenSSL import SSL

    return ALPN if ALPN in offered else SSL.NO_OVERLAPPING_PROTOCOLS


def install(server, options, interfaces: list[str]) -> list:
    """Listen for direct TLS when a port is set (0: off) and TLS is configured."""
    port = options["c2s-direct-tls-port"]
    tls = server.policy.tls
    if not port or tls is None:
        return []
    tls.getContext().set_alpn_select_callback(_select_alpn)
    listeners = []
    for interface in interfaces:
        listener = internet.SSLServer(port, server.client_factory, tls, interface=interface)
        listener.setServiceParent(server.started)
        listeners.append(listener)
    log.msg(f"direct TLS (XEP-0368) for clients on port {port}")
    return listeners
