"""XEP-0156 discovery over HTTP: ``/.well-known/host-meta`` (RFC 6415 XRD) and
``host-meta.json``, listing the WebSocket endpoint — and only what is served.

Readable from any origin (XEP-0156 §3: a browser client reads it from its own page).
"""

from __future__ import annotations

import json
from typing import Callable
from xml.sax.saxutils import quoteattr

from twisted.web import pages
from twisted.web.resource import Resource

REL_WEBSOCKET = "urn:xmpp:alt-connections:websocket"
NS_XRD = "http://docs.oasis-open.org/ns/xri/xrd-1.0"


def links(websocket_url: str) -> list[tuple[str, str]]:
    """(rel, href) of every connection method this server offers over HTTP."""
    return [(REL_WEBSOCKET, websocket_url)]


class HostMeta(Resource):
    """``host-meta`` as XRD (``json=False``) or JSON (RFC 6415 appendix A)."""

    def __init__(self, websocket_url: Callable[[], str], json_format: bool = False):
        super().__init__()
        self.websocket_url = websocket_url
        self.json_format = json_format

    def getChild(self, path, request):
        return pages.notFound()

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        found = links(self.websocket_url())
        if self.json_format:
            request.setHeader(b"Content-Type", b"application/json")
            return json.dumps({"links": [{"rel": rel, "href": href} for rel, href in found]}).encode("utf-8")
        request.setHeader(b"Content-Type", b"application/xrd+xml; charset=utf-8")
        lines = [f"<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='{NS_XRD}'>"]
        lines += [f"  <Link rel={quoteattr(rel)} href={quoteattr(href)}/>" for rel, href in found]
        lines.append("</XRD>\n")
        return "\n".join(lines).encode("utf-8")

    def render_HEAD(self, request) -> bytes:
        return self.render_GET(request)
