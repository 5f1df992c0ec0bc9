"""``--c2s-reuse-port``: several processes on one machine share the client
port (Linux ``SO_REUSEPORT``: the kernel spreads new connections over them),
so a single-machine cluster needs no load balancer."""

from __future__ import annotations

import socket

from twisted.application import internet


class ReusePortServer(internet.TCPServer):
    """``TCPServer`` whose socket is opened with ``SO_REUSEPORT``."""

    def _getPort(self):
        from twisted.internet import reactor

        port, factory = self.args[0], self.args[1]
        interface = self.kwargs.get("interface", "")
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((interface, port))
            sock.listen(self.kwargs.get("backlog", 50))
            sock.setblocking(False)
            return reactor.adoptStreamPort(sock.fileno(), family, factory)  # type: ignore[attr-defined]
        finally:
            sock.close()  # the reactor holds its own duplicate
