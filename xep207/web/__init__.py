"""The server's web face: an HTTP(S) port with XMPP over WebSocket (RFC 7395),
XEP-0156 discovery and XEP-0363 file upload. Off unless ``--http-port`` is given."""

from __future__ import annotations


def install(server, options, interfaces: list[str]):
    """Add the HTTP port to a ``Server``; None when not configured."""
    if options.get("http-port") is None:
        return None
    from xep207.web.http import WebServer
    from xep207.web.websocket import PATH, WebSocketEndpoint, websocket_factory

    web = WebServer(server, options, interfaces)
    web.add(PATH, WebSocketEndpoint(websocket_factory(server, secure=not web.plain)))
    if not options.get("no-upload"):
        from xep207.web import upload

        web.upload = upload.install(server, web, options)
    return web
