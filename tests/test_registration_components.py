"""XEP-0077 in-band registration and the XEP-0114 component listener."""

from twisted.internet import defer, reactor
from twisted.words.protocols.jabber import component as jabber_component
from twisted.words.protocols.jabber import xmlstream

from tests.server_helpers import DOMAIN, ServerTestCase
from tests.test_presence_roster import is_result


class Registration(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth", "--registration")
    users = ("taken",)

    async def setUp(self):
        await self.start_server()

    async def test_register_login_change_password_and_cancel(self):
        client = await self.connect()
        client.header()
        features = await client.expect("</stream:features>")
        self.assertIn(b"http://jabber.org/features/iq-register", features)
        client.send("<iq type='get' id='reg1'><query xmlns='jabber:iq:register'/></iq>")
        await client.expect("<username/>")
        client.send("<iq type='set' id='reg2'><query xmlns='jabber:iq:register'>"
                    "<username>taken</username><password>whatever-pass</password></query></iq>")
        await client.expect("<conflict")
        client.send("<iq type='set' id='reg3'><query xmlns='jabber:iq:register'>"
                    "<username>newbie</username><password>x</password></query></iq>")
        await client.expect("<not-acceptable")
        client.send("<iq type='set' id='reg4'><query xmlns='jabber:iq:register'>"
                    "<username>newbie</username><password>newbie-password</password></query></iq>")
        await client.expect("id='reg4' type='result'")
        self.assertIsNotNone(await self.server.storage.get_account(f"newbie@{DOMAIN}"))

        session = await self.connect()
        await session.login("newbie", "newbie-password")
        session.send("<iq type='set' id='pw'><query xmlns='jabber:iq:register'>"
                     "<username>newbie</username><password>better-password</password></query></iq>")
        self.assertEqual((await session.wait_for(is_result("pw")))["type"], "result")
        relogin = await self.connect()
        await relogin.login("newbie", "better-password")  # same resource: replaces the first session
        replaced = await session.closed
        self.assertIn(b"<conflict", replaced)
        relogin.send("<iq type='set' id='bye'><query xmlns='jabber:iq:register'><remove/></query></iq>")
        await relogin.closed.addTimeout(10, reactor)
        self.assertIsNone(await self.server.storage.get_account(f"newbie@{DOMAIN}"))
        self.assertEqual(await self.server.storage.list_nodes(f"newbie@{DOMAIN}"), [])


class RegistrationOff(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def test_not_offered_and_refused(self):
        await self.start_server()
        client = await self.connect()
        client.header()
        features = await client.expect("</stream:features>")
        self.assertNotIn(b"iq-register", features)
        client.send("<iq type='set' id='reg'><query xmlns='jabber:iq:register'>"
                    "<username>sneaky</username><password>sneaky-pass</password></query></iq>")
        await client.closed
        self.assertIsNone(await self.server.storage.get_account(f"sneaky@{DOMAIN}"))


class ExternalComponent(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth", "--component", "gateway.localhost=s3cret",
                   "--component-port", "0")

    async def setUp(self):
        await self.start_server()
        self.component_port = self.server.listeners[-1]._port.getHost().port

    def connect_component(self, name, secret):
        """A real XEP-0114 client (Twisted's); fires with its stream once authenticated."""
        factory = jabber_component.componentFactory(name, secret)
        factory.maxRetries = 0
        ready = defer.Deferred()
        factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, lambda xs: ready.called or ready.callback(xs))
        factory.addBootstrap(xmlstream.STREAM_ERROR_EVENT,
                             lambda reason: ready.called or ready.errback(reason))
        factory.addBootstrap(xmlstream.STREAM_END_EVENT,
                             lambda reason: ready.called or ready.errback(reason))
        connector = reactor.connectTCP("127.0.0.1", self.component_port, factory)
        self.addCleanup(factory.stopTrying)
        self.addCleanup(connector.disconnect)
        return ready

    async def test_configured_component_is_routed_both_ways(self):
        xs = await self.connect_component("gateway.localhost", "s3cret")
        received = defer.Deferred()
        xs.addObserver("/message", lambda m: received.called or received.callback(m))
        alice = await self.connect()
        await alice.login("alice", resource="r")
        alice.send("<message to='user@gateway.localhost' type='chat'><body>to the gateway</body></message>")
        message = await received
        self.assertEqual((message["from"], str(message.body)), (f"alice@{DOMAIN}/r", "to the gateway"))
        xs.send(f"<message from='user@gateway.localhost' to='alice@{DOMAIN}/r'><body>from the gateway</body></message>")
        back = await alice.wait_for(lambda e: e.name == "message" and e.body is not None)
        self.assertEqual(back["from"], "user@gateway.localhost")

    async def test_component_cannot_speak_for_others(self):
        xs = await self.connect_component("gateway.localhost", "s3cret")
        bob = await self.connect()
        await bob.login("bob", resource="r")
        xs.send(f"<message from='alice@{DOMAIN}/r' to='bob@{DOMAIN}/r'><body>forged</body></message>")
        xs.send(f"<message from='user@gateway.localhost' to='bob@{DOMAIN}/r'><body>genuine</body></message>")
        genuine = await bob.wait_for(lambda e: e.name == "message" and e.body is not None)
        self.assertEqual(str(genuine.body), "genuine")  # the forged one, sent first, never came
        self.assertEqual([e for e in bob.stanzas if "forged" in e.toXml()], [])

    async def test_wrong_secret_and_unknown_name_are_refused(self):
        for name, secret in (("gateway.localhost", "wrong"), ("other.localhost", "s3cret")):
            with self.assertRaises(Exception):
                await self.connect_component(name, secret)
        self.assertNotIn("other.localhost", self.server.router.routes)
