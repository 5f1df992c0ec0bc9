"""Write to a plain TCP connection at once when nothing is queued before it.

Twisted's ``transport.write`` never sends: it queues the bytes, registers the
socket for writing (an ``epoll_ctl``), and sends on the next reactor
iteration, then unregisters (another ``epoll_ctl``), with a logging context
around each step. A fan-out writes to a hundred sockets per event, so that
is three system calls and some forty Python calls per delivery where one
``send`` does. ``write_now`` sends straight away when the connection's queue
is empty and hands whatever the kernel did not take (and every error) to
``transport.write``, which keeps order, back-pressure and error handling as
they were: the fast path is only taken where it cannot change what the peer
receives.

Only Twisted's own plaintext TCP server connections qualify; a TLS, a
compressed or a WebSocket transport is written to as before.
"""

from __future__ import annotations

from twisted.internet import tcp

__all__ = ["write_now"]

_DIRECT = (tcp.Server,)


def write_now(transport, data: bytes) -> None:
    """``transport.write(data)``, sent at once where that is safe."""
    if type(transport) in _DIRECT and data and not transport.TLS and transport.connected \
            and not transport.disconnecting and not transport.dataBuffer and not transport._tempDataBuffer:
        try:
            sent = transport.socket.send(data)
        except OSError:  # would block, or the connection failed: the usual path finds out
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
