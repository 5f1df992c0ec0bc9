"""The server's HTTP(S) port (``--http-port``): WebSocket, XEP-0156 discovery,
XEP-0363 uploads, on ``twisted.web``.

HTTPS with the server's own TLS certificate (the one STARTTLS presents) unless
the operator asks for plain HTTP (``--http-plain``: behind a TLS-terminating
proxy, or on loopback for tests). Listens on every interface by default: a
browser client must reach it.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.application import internet
from twisted.python import log
from twisted.web import pages
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from xep207.web.host_meta import HostMeta


class Directory(Resource):
    """A resource with children and nothing of its own: 404 for anything else."""

    def getChild(self, path, request):
        return pages.notFound()

    def render(self, request):
        return pages.notFound().render(request)


class BoundedRequest(Request):
    """A request whose body may not exceed the site's ``max_body``: refused with
    413 as soon as its Content-Length says so, before a byte of it is read (and
    411 without a length: a chunked body could be endless)."""

    refused = False

    def gotLength(self, length):
        limit = self.site_max_body()
        if length is not None and length <= limit:
            return super().gotLength(length)
        self.refused = True
        self.content = io.BytesIO()
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the refusal
        status = b"411 Length Required" if length is None else b"413 Content Too Large"
        transport = self.channel.transport
        assert transport is not None  # the headers just came in on it
        transport.write(b"HTTP/1.1 " + status + b"\r\nConnection: close\r\n"
                                     b"Access-Control-Allow-Origin: *\r\nContent-Length: 0\r\n\r\n")
        self.channel.loseConnection()

    def site_max_body(self) -> int:
        site: Any = getattr(self.channel, "site")  # set by Site.buildProtocol
        return site.max_body

    def handleContentChunk(self, data):
        if not self.refused:
            super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if not self.refused:
            super().requestReceived(command, path, version)


class _QuietSite(Site):
    """No access log: upload URLs carry their signatures in the query string."""

    noisy = False
    displayTracebacks = False
    requestFactory = BoundedRequest
    max_body = 64 * 1024  # raised to the largest upload when uploads are on

    def log(self, request) -> None:
        pass


class WebServer:
    """The HTTP listeners of a ``Server`` and the resource tree they serve."""

    def __init__(self, server, options, interfaces: list[str]):
        self.plain = bool(options["http-plain"])
        self.domain = server.domain
        self.external_url = (options["http-external-url"] or "").rstrip("/") or None
        self.root = Directory()
        well_known = Directory()
        self.root.putChild(b".well-known", well_known)
        well_known.putChild(b"host-meta", HostMeta(self.websocket_url))
        well_known.putChild(b"host-meta.json", HostMeta(self.websocket_url, json_format=True))
        # an idle connection is dropped after a minute (twisted.web's default is 12 hours)
        self.site = _QuietSite(self.root, timeout=60)
        self.listeners: list[Any] = []
        self.upload: Any = None  # the XEP-0363 service, when on
        for interface in interfaces:
            listener: Any
            if self.plain:
                listener = internet.TCPServer(options["http-port"], self.site, interface=interface)
            else:
                listener = internet.SSLServer(options["http-port"], self.site, server.policy.tls,
                                              interface=interface)
            listener.setServiceParent(server.started)
            self.listeners.append(listener)
        scheme = "HTTP" if self.plain else "HTTPS"
        log.msg(f"{scheme} on port {options['http-port']} ({', '.join(interfaces)})")

    @property
    def max_body(self) -> int:
        return self.site.max_body

    @max_body.setter
    def max_body(self, size: int) -> None:
        self.site.max_body = size

    def add(self, path: bytes, resource) -> None:
        """Serve ``resource`` at ``/path``."""
        self.root.putChild(path, resource)

    @property
    def port(self) -> int:
        """The port actually listened on (the configured one, or the free one picked for 0)."""
        return self.listeners[0]._port.getHost().port

    @property
    def base_url(self) -> str:
        """What clients are told to use: ``--http-external-url``, or this port on the domain."""
        if self.external_url:
            return self.external_url
        return f"{'http' if self.plain else 'https'}://{self.domain}:{self.port}"

    def websocket_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return f"{'ws' if scheme == 'http' else 'wss'}://{rest}/xmpp-websocket"
