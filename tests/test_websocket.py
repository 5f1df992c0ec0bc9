"""XMPP over WebSocket (RFC 7395) with a real WebSocket client: the TCP stream's
negotiation, limits and routing behind a framing of one element per message."""

from __future__ import annotations

from tests.server_helpers import DOMAIN, ServerTestCase
from tests.web_helpers import NS_BIND, NS_FRAMING, NS_SASL, NS_STREAM_ERRORS, connect_ws, parse_message

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_COMPRESS_FEATURE = "http://jabber.org/features/compress"


class WebSocketOverHTTPS(ServerTestCase):
    """wss:// with the server's own (self-signed) certificate, beside a TCP client."""

    server_args = ("--tls-optional", "--allow-plaintext-auth", "--http-port", "0",
                   "--http-interfaces", "127.0.0.1")

    async def setUp(self):
        await self.start_server()
        self.url = f"wss://127.0.0.1:{self.server.web.port}/xmpp-websocket"

    async def test_subprotocol_is_xmpp(self):
        client = await connect_ws(self, self.url)
        self.assertEqual(client.subprotocol, "xmpp")

    async def test_features_over_tls_offer_no_starttls_nor_compression(self):
        client = await connect_ws(self, self.url)
        client.open_stream()
        opening = await client.next_named("open")
        self.assertEqual((opening.uri, opening["from"], opening["version"]), (NS_FRAMING, DOMAIN, "1.0"))
        self.assertTrue(opening.getAttribute("id"))
        features = await client.next_named("features")
        self.assertIsNone(features.firstChildElement().uri == NS_TLS or None)
        mechanisms = [str(m) for m in features.elements(NS_SASL, "mechanisms").__next__().elements()]
        self.assertIn("PLAIN", mechanisms)  # TLS is the HTTPS layer
        self.assertIn("SCRAM-SHA-256", mechanisms)
        self.assertEqual([e.uri for e in features.elements() if e.uri in (NS_TLS, NS_COMPRESS_FEATURE)], [])
        # every message is a standalone document: the features declare the stream prefix
        raw = client.messages[1]
        self.assertIn("xmlns:stream='http://etherx.jabber.org/streams'", raw)

    async def test_login_presence_and_chat_with_a_tcp_client(self):
        bob = await self.connect()
        await bob.login("bob", resource="tcp")
        bob.send("<presence/>")
        alice = await connect_ws(self, self.url)
        await alice.login("alice", resource="browser")
        alice.send_text("<iq xmlns='jabber:client' type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
        await alice.wait_for(lambda e: e.getAttribute("id") == "r")
        alice.send_text("<presence xmlns='jabber:client'><show>chat</show></presence>")
        alice.send_text(f"<presence xmlns='jabber:client' type='subscribe' to='bob@{DOMAIN}'/>")
        asked = await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "subscribe")
        self.assertEqual(asked["from"], f"alice@{DOMAIN}")
        bob.send(f"<presence type='subscribed' to='alice@{DOMAIN}'/>")
        await alice.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "subscribed")
        bobs = await alice.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == bob.jid)
        self.assertEqual(bobs.uri, "jabber:client")
        # and the other way: the WebSocket client approves, the TCP client sees her presence
        bob.send(f"<presence type='subscribe' to='alice@{DOMAIN}'/>")
        await alice.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "subscribe")
        alice.send_text(f"<presence xmlns='jabber:client' type='subscribed' to='bob@{DOMAIN}'/>")
        seen = await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == alice.jid)
        self.assertEqual(str(seen.show), "chat")
        alice.send_text(f"<message xmlns='jabber:client' type='chat' to='bob@{DOMAIN}' id='m1'>"
                        "<body>hello from a browser</body></message>")
        got = await bob.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "m1")
        self.assertEqual((got["from"], str(got.body)), (alice.jid, "hello from a browser"))
        bob.send(f"<message type='chat' to='{alice.jid}' id='m2'><body>hello, websocket</body></message>")
        answer = await alice.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "m2")
        self.assertEqual((answer["from"], str(answer.body)), (bob.jid, "hello, websocket"))
        # the router's pre-serialized text leaves as a standalone document too
        for text in alice.messages:
            self.assertEqual(parse_message(text).uri in (NS_FRAMING, "jabber:client", NS_SASL,
                                                          "http://etherx.jabber.org/streams"), True, text)

    async def test_close_is_answered_with_close(self):
        client = await connect_ws(self, self.url)
        await client.login("alice")
        client.send_text(f"<close xmlns='{NS_FRAMING}'/>")
        await client.wait_for(lambda e: e.name == "close" and e.uri == NS_FRAMING)
        code, _ = await client.closed
        self.assertEqual(code, 1000)
        self.assertEqual(self.server.router.resources(f"alice@{DOMAIN}"), [])


class WebSocketBadInput(ServerTestCase):
    """The RFC's answers to what a browser client must not send, over plain ws:// on loopback."""

    server_args = ("--no-tls", "--allow-plaintext-auth", "--http-port", "0", "--http-plain",
                   "--http-interfaces", "127.0.0.1", "--max-pre-auth-stanza-size", "2048",
                   "--max-stanza-size", "8192", "--max-stanza-elements", "50")

    async def setUp(self):
        await self.start_server()
        self.url = f"ws://127.0.0.1:{self.server.web.port}/xmpp-websocket"
        self.bystander = await connect_ws(self, self.url)
        await self.bystander.login("bob", resource="bystander")

    async def assert_stream_error(self, client, condition: str) -> None:
        """RFC 7395 §3.5: the error in a message of its own, then <close/>, then the
        WebSocket closes; another session is still served."""
        error = await client.wait_for(lambda e: e.name == "error")
        self.assertEqual(error.uri, "http://etherx.jabber.org/streams")
        self.assertEqual(error.firstChildElement().name, condition, error.toXml())
        await client.wait_for(lambda e: e.name == "close" and e.uri == NS_FRAMING)
        code, _ = await client.closed
        self.assertEqual(code, 1000)
        self.bystander.send_text("<iq xmlns='jabber:client' type='get' id='still'><ping xmlns='urn:xmpp:ping'/></iq>")
        answer = await self.bystander.wait_for(lambda e: e.getAttribute("id") == "still")
        self.assertEqual(answer["type"], "result")

    async def opened(self):
        client = await connect_ws(self, self.url)
        await client.features()
        return client

    async def test_plain_http_offers_scram_but_not_plain_without_the_operators_consent(self):
        server = self.server
        self.assertFalse(server.web.plain is False)
        client = await connect_ws(self, self.url)
        features = await client.features()
        mechanisms = [str(m) for m in next(features.elements(NS_SASL, "mechanisms")).elements()]
        self.assertIn("SCRAM-SHA-256", mechanisms)
        # --allow-plaintext-auth is set here: PLAIN follows the operator's choice, as on TCP
        self.assertIn("PLAIN", mechanisms)

    async def test_text_that_is_not_xml(self):
        client = await self.opened()
        client.send_text("hello")
        await self.assert_stream_error(client, "not-well-formed")

    async def test_two_stanzas_in_one_message_route_neither(self):
        client = await connect_ws(self, self.url)
        await client.login("alice")
        client.send_text(f"<message xmlns='jabber:client' to='{self.bystander.jid}' id='one'><body>1</body></message>"
                         f"<message xmlns='jabber:client' to='{self.bystander.jid}' id='two'><body>2</body></message>")
        await self.assert_stream_error(client, "not-well-formed")
        self.assertFalse([m for m in self.bystander.messages if "id='one'" in m or 'id="one"' in m])

    async def test_half_a_stanza_in_a_message(self):
        client = await connect_ws(self, self.url)
        await client.login("alice")
        client.send_text("<message xmlns='jabber:client' to='bob@localhost'><body>")
        await self.assert_stream_error(client, "not-well-formed")

    async def test_text_after_the_element(self):
        client = await connect_ws(self, self.url)
        await client.login("alice")
        client.send_text("<presence xmlns='jabber:client'/>trailing")
        await self.assert_stream_error(client, "not-well-formed")

    async def test_binary_message_closes_with_1003(self):
        client = await self.opened()
        client.sendMessage(b"<presence/>", isBinary=True)
        code, _ = await client.closed
        self.assertEqual(code, 1003)

    async def test_invalid_utf8_closes_with_1007(self):
        client = await self.opened()
        client.sendMessage(b"<presence>\xff\xfe</presence>", isBinary=False)
        code, _ = await client.closed
        self.assertEqual(code, 1007)

    async def test_handshake_without_the_xmpp_subprotocol_is_refused(self):
        from tests.web_helpers import http_request

        headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        status, _, _ = await http_request("GET", self.url.replace("ws:", "http:"), headers=headers)
        self.assertEqual(status, 400)
        status, _, _ = await http_request("GET", self.url.replace("ws:", "http:"),
                                          headers={**headers, "Sec-WebSocket-Protocol": "chat, superchat"})
        self.assertEqual(status, 400)

    async def test_a_real_client_without_the_subprotocol_is_refused(self):
        with self.assertRaises(ConnectionError):
            await connect_ws(self, self.url, protocols=())

    async def test_a_stream_header_instead_of_open(self):
        client = await connect_ws(self, self.url)
        client.send_text("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                         "to='localhost' version='1.0'/>")
        await self.assert_stream_error(client, "invalid-namespace")

    async def test_open_for_another_host(self):
        client = await connect_ws(self, self.url)
        client.open_stream("elsewhere.example")
        opening = await client.next_named("open")  # RFC 7395 §3.5: the open response first
        self.assertEqual(opening["from"], DOMAIN)
        await self.assert_stream_error(client, "host-unknown")

    async def test_entity_declarations_are_refused(self):
        client = await connect_ws(self, self.url)
        client.send_text("<!DOCTYPE open [<!ENTITY a 'aaaaaaaa'>]>"
                         f"<open xmlns='{NS_FRAMING}' to='&a;' version='1.0'/>")
        await self.assert_stream_error(client, "restricted-xml")

    async def test_oversized_message_before_authentication(self):
        client = await self.opened()
        client.send_text(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{'A' * 4096}</auth>")
        await self.assert_stream_error(client, "policy-violation")

    async def test_the_tcp_limits_apply_after_authentication(self):
        client = await connect_ws(self, self.url)
        await client.login("alice")
        client.send_text(f"<message xmlns='jabber:client' to='{self.bystander.jid}'><body>{'x' * 9000}</body></message>")
        await self.assert_stream_error(client, "policy-violation")
        client = await connect_ws(self, self.url)
        await client.login("alice", resource="again")
        client.send_text(f"<message xmlns='jabber:client' to='{self.bystander.jid}'>{'<a/>' * 60}</message>")
        await self.assert_stream_error(client, "policy-violation")

    async def test_stanzas_before_authentication_are_refused(self):
        client = await self.opened()
        client.send_text("<message xmlns='jabber:client' to='bob@localhost'><body>hi</body></message>")
        await self.assert_stream_error(client, "not-authorized")

    async def test_an_open_inside_an_open_stream(self):
        client = await connect_ws(self, self.url)
        await client.login("alice")
        client.open_stream()
        await self.assert_stream_error(client, "bad-format")

    async def test_whitespace_and_an_xml_declaration_are_tolerated(self):
        client = await connect_ws(self, self.url)
        await client.login("alice")
        client.send_text(" \n ")
        client.send_text("<?xml version='1.0'?><iq xmlns='jabber:client' type='get' id='p'>"
                         "<ping xmlns='urn:xmpp:ping'/></iq>")
        answer = await client.wait_for(lambda e: e.getAttribute("id") == "p")
        self.assertEqual(answer["type"], "result")

    async def test_a_bound_resource_ends_with_the_websocket(self):
        client = await connect_ws(self, self.url)
        await client.login("alice", resource="gone")
        self.assertEqual([s.full for s in self.server.router.resources(f"alice@{DOMAIN}")],
                         [f"alice@{DOMAIN}/gone"])
        from twisted.internet import defer

        from xep207.hooks import SESSION_UNBOUND

        unbound: defer.Deferred = defer.Deferred()
        self.server.hooks.add(SESSION_UNBOUND, lambda session: unbound.called or unbound.callback(session.full))
        client.transport.abortConnection()
        self.assertEqual(await unbound, f"alice@{DOMAIN}/gone")
        self.assertEqual(self.server.router.resources(f"alice@{DOMAIN}"), [])


class SharedLimits(ServerTestCase):
    """One count of unauthenticated connections per address, whichever door they use."""

    server_args = ("--no-tls", "--allow-plaintext-auth", "--http-port", "0", "--http-plain",
                   "--http-interfaces", "127.0.0.1", "--max-unauthenticated", "1")

    async def test_unauthenticated_cap_spans_tcp_and_websocket(self):
        await self.start_server()
        url = f"ws://127.0.0.1:{self.server.web.port}/xmpp-websocket"
        waiting = await self.connect()
        waiting.header()
        await waiting.expect("</stream:features>")
        client = await connect_ws(self, url)
        client.open_stream()
        error = await client.wait_for(lambda e: e.name == "error")
        self.assertEqual(error.firstChildElement().name, "policy-violation")
        code, _ = await client.closed
        self.assertEqual(code, 1000)


class HostMeta(ServerTestCase):
    """XEP-0156: the WebSocket endpoint, and nothing else, in both formats."""

    server_args = ("--tls-optional", "--http-port", "0", "--http-interfaces", "127.0.0.1")

    async def setUp(self):
        await self.start_server()
        self.base = f"https://127.0.0.1:{self.server.web.port}"

    async def test_https_presents_the_servers_certificate(self):
        import os
        import ssl

        from twisted.internet import threads

        pem = await threads.deferToThread(ssl.get_server_certificate, ("127.0.0.1", self.server.web.port))
        with open(os.path.join(self.data_dir, "tls", f"{DOMAIN}.crt")) as f:
            self.assertEqual(ssl.PEM_cert_to_DER_cert(pem), ssl.PEM_cert_to_DER_cert(f.read()))

    async def test_xml(self):
        from xml.etree import ElementTree

        from tests.web_helpers import http_request

        status, headers, body = await http_request("GET", self.base + "/.well-known/host-meta")
        self.assertEqual(status, 200)
        self.assertEqual(headers.getRawHeaders("content-type"), ["application/xrd+xml; charset=utf-8"])
        self.assertEqual(headers.getRawHeaders("access-control-allow-origin"), ["*"])
        root = ElementTree.fromstring(body)
        links = [(link.get("rel"), link.get("href")) for link in root]
        self.assertEqual(links, [("urn:xmpp:alt-connections:websocket",
                                  f"wss://{DOMAIN}:{self.server.web.port}/xmpp-websocket")])

    async def test_json(self):
        import json

        from tests.web_helpers import http_request

        status, headers, body = await http_request("GET", self.base + "/.well-known/host-meta.json")
        self.assertEqual(status, 200)
        self.assertEqual(headers.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual(json.loads(body), {"links": [
            {"rel": "urn:xmpp:alt-connections:websocket",
             "href": f"wss://{DOMAIN}:{self.server.web.port}/xmpp-websocket"}]})

    async def test_external_url_is_announced(self):
        import json

        from tests.web_helpers import http_request

        await self.server.top.stopService()
        await self.start_server("--http-external-url", "https://chat.example.org/xmpp/")
        base = f"https://127.0.0.1:{self.server.web.port}"
        _, _, body = await http_request("GET", base + "/.well-known/host-meta.json")
        self.assertEqual(json.loads(body)["links"][0]["href"], "wss://chat.example.org/xmpp/xmpp-websocket")

    async def test_unknown_paths_are_not_found(self):
        from tests.web_helpers import http_request

        for path in ("/", "/.well-known/", "/.well-known/host-meta/x", "/xmpp-websocket/../etc/passwd"):
            status, _, body = await http_request("GET", self.base + path)
            self.assertIn(status, (400, 404), (path, status, body))
        status, headers, body = await http_request("GET", self.base + "/xmpp-websocket")
        self.assertEqual(status, 426)  # a browser visiting the endpoint: use a WebSocket
        self.assertNotIn(b"Autobahn", body)


class Options(ServerTestCase):
    def test_https_needs_tls(self):
        from twisted.python import usage

        from xep207.tap import Options as ServerOptions

        with self.assertRaises(usage.UsageError):
            ServerOptions().parseOptions(["--no-tls", "--http-port", "5281"])
        with self.assertRaises(usage.UsageError):
            ServerOptions().parseOptions(["--http-port", "5281", "--http-external-url", "ftp://x"])
        options = ServerOptions()
        options.parseOptions(["--no-tls", "--http-port", "5281", "--http-plain"])
        self.assertEqual(options["upload-domain"], "upload.localhost")

    async def test_no_http_port_by_default(self):
        await self.start_server()
        self.assertIsNone(self.server.web)
