"""XEP-0368 direct TLS: TLS from the first byte on its own port, ALPN
``xmpp-client``, the same stream and policy as 5222 without STARTTLS."""

from __future__ import annotations

from twisted.internet import protocol, reactor, ssl

from tests.peers import free_port
from tests.server_helpers import DOMAIN, PASSWORD, RawClient, ServerTestCase


class DirectTLS(ServerTestCase):
    async def setUp(self):
        self.tls_port = free_port()
        await self.start_server("--c2s-direct-tls-port", str(self.tls_port))

    async def connect_tls(self, alpn=(b"xmpp-client",)) -> RawClient:
        options = ssl.CertificateOptions(verify=False, acceptableProtocols=list(alpn))
        client = await protocol.ClientCreator(reactor, RawClient).connectSSL("127.0.0.1", self.tls_port, options)
        self.addCleanup(self._close, client)
        return client

    async def test_tls_at_once_alpn_and_no_starttls(self):
        client = await self.connect_tls()
        client.header()
        features = await client.expect("</stream:features>")
        self.assertEqual(client.transport.negotiatedProtocol, b"xmpp-client")
        self.assertNotIn(b"starttls", features)
        self.assertIn(b"<mechanism>PLAIN</mechanism>", features)  # TLS is on: PLAIN may be offered
        client = await self.connect_tls()
        await client.login("alice", resource="direct")
        client.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        answer = await client.wait_for(lambda e: e.getAttribute("id") == "p")
        self.assertEqual(answer["type"], "result")
        self.assertIsNotNone(self.server.router.session(f"alice@{DOMAIN}/direct"))

    async def test_other_alpn_still_connects_without_alpn(self):
        client = await self.connect_tls(alpn=(b"h2",))
        client.header()
        await client.expect("</stream:features>")
        self.assertIsNone(client.transport.negotiatedProtocol)

    async def test_plaintext_on_the_tls_port_gets_nothing_served(self):
        client = await protocol.ClientCreator(reactor, RawClient).connectTCP("127.0.0.1", self.tls_port)
        client.header()
        await client.closed
        self.assertNotIn(b"<stream:features", client.received)

    async def test_same_policy_as_5222_failed_auth(self):
        client = await self.connect_tls()
        client.header()
        await client.expect("</stream:features>")
        from tests.server_helpers import plain_auth

        client.send(plain_auth("alice", "wrong"))
        await client.expect("<not-authorized")

    async def test_slixmpp_direct_tls(self):
        report = await self.run_client("direct_tls.py", "127.0.0.1", self.tls_port, DOMAIN, PASSWORD)
        # (slixmpp 1.17 offers no ALPN: the raw test above covers it)
        self.assertEqual((report["tls"], report["pong"]), (True, "result"))


class Off(ServerTestCase):
    async def test_zero_or_none_is_off_and_no_tls_means_none(self):
        await self.start_server("--c2s-direct-tls-port", "none")
        self.assertEqual(self.server.direct_tls_listeners, [])

    async def test_no_tls_means_no_direct_tls(self):
        await self.start_server("--no-tls", "--c2s-direct-tls-port", str(free_port()))
        self.assertEqual(self.server.direct_tls_listeners, [])
