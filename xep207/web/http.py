"""The server's HTTP(S) port (``--http-port``): WebSocket, XEP-0156 discovery,
XEP-0363 uploads, on ``twisted.web``.

HTTPS with the server's own TLS certificate (the one STARTTLS presents) unless
the operator asks for plain HTTP (``--http-plain``: behind a TLS-terminating
proxy, or on loopback for tests). Listens on every interface by default: a
browser client must reach it.
"""

from __future__ import annotations

import io
from typing import Any, Callable

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
    """A request whose body may not exceed the site's ``max_body`` unless the
    site's ``grants_body`` allows this very request more (a signed upload URL
    for exactly that size): refused with 413 as soon as its Content-Length says
    so, before a byte of it is read (and 411 without a length: a chunked body
    could be endless). Anyone may connect: a large body from a stranger would be
    buffered to disk before any resource had a say."""

    refused = False

    def gotLength(self, length):
        site: Any = getattr(self.channel, "site")  # set by Site.buildProtocol
        # the request line, known to the channel before the request sees it
        method, target = getattr(self.channel, "_command", b""), getattr(self.channel, "_path", b"")
        if length is not None and (length <= site.max_body
                                   or (site.grants_body is not None and site.grants_body(method, target, length))):
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
    max_body = 64 * 1024  # any request's body
    # (method, request target, length) -> whether this request may send a larger one
    grants_body: Callable[[bytes, bytes, int], bool] | None = None

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

    def grant_large_bodies(self, grants: Callable[[bytes, bytes, int], bool]) -> None:
        """Let ``grants(method, target, length)`` admit a body above 64 KiB (uploads)."""
        self.site.grants_body = grants

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
