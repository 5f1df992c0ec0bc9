"""xep207.testing's running server and logged-in clients, from a trial TestCase.

(The same helpers under pytest-twisted: examples/test_embedding.py, which .ci/run runs.)
"""

import os
import tempfile

from twisted.internet import defer, error, protocol, reactor
from twisted.internet.interfaces import ISSLTransport
from twisted.trial import unittest
from twisted.words.protocols.jabber.sasl import SASLAuthError

from tests.peers import temp_dir
from xep207.testing import start_server

ACCOUNTS = {"alice": "wonderland", "bob": "builder!"}


class RunningServerTests(unittest.TestCase):
    async def setUp(self):
        self.server = await start_server(ACCOUNTS)
        self.addCleanup(self.server.stop)

    async def test_accounts_exist_and_login_is_tls_sasl_and_bind(self):
        self.assertEqual(await self.server.server.storage.list_accounts(),
                         ["alice@localhost", "bob@localhost"])
        alice = await self.server.login("alice", resource="laptop")
        self.assertEqual(alice.jid, "alice@localhost/laptop")
        self.assertTrue(ISSLTransport.providedBy(alice.stream.transport))  # STARTTLS happened
        self.assertIn("laptop", self.server.server.router.sessions["alice@localhost"])

    async def test_message_to_bare_jid_and_iq_round_trip(self):
        alice = await self.server.login("alice")
        bob = await self.server.login("bob", resource="desk")
        alice.send("<message to='bob@localhost' type='chat'><body>hello bob</body></message>")
        message = await bob.wait_for(lambda s: s.name == "message" and s.body is not None)
        self.assertEqual((message["from"], str(message.body)), (alice.jid, "hello bob"))
        ping = "<iq type='get' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>"
        reply = await alice.request(ping.format("localhost"))
        self.assertEqual(reply["type"], "result")
        error_reply = await alice.request(ping.format("nobody@localhost"))
        self.assertEqual(error_reply["type"], "error")

    async def test_each_stanza_satisfies_one_wait(self):
        alice = await self.server.login("alice")
        bob = await self.server.login("bob")
        for text in ("one", "two"):
            alice.send(f"<message to='bob@localhost/test'><body>{text}</body></message>")
        is_chat = lambda s: s.name == "message" and s.body is not None  # noqa: E731
        first, second = await bob.wait_for(is_chat), await bob.wait_for(is_chat)
        self.assertEqual([str(first.body), str(second.body)], ["one", "two"])

    async def test_wrong_password_fails_without_leaving_a_connection(self):
        with self.assertRaises(SASLAuthError) as caught:
            await self.server.login("alice", password="not the password")
        self.assertEqual(caught.exception.condition, "not-authorized")
        # trial's reactor check after this test fails on any socket left open.

    async def test_stop_closes_clients_and_port_and_removes_data(self):
        alice = await self.server.login("alice")
        ended = []
        alice.stream.addObserver("//event/stream/end", ended.append)
        await self.server.stop()
        self.assertEqual(len(ended), 1)
        self.assertFalse(os.path.exists(self.server.data_dir))
        with self.assertRaises(error.ConnectionRefusedError):
            await protocol.ClientCreator(reactor, protocol.Protocol).connectTCP(
                "127.0.0.1", self.server.port)

    async def test_disconnect_is_idempotent(self):
        alice = await self.server.login("alice")
        await defer.gatherResults([alice.disconnect(), alice.disconnect()])
        await alice.disconnect()
        self.assertFalse(alice.stream.transport.connected)

    async def test_a_wait_that_times_out_says_what_arrived(self):
        alice = await self.server.login("alice")
        with self.assertRaises(defer.TimeoutError) as caught:
            await alice.wait_for(lambda s: s.name == "never", timeout=0.1)
        self.assertIn("alice@localhost/test: no matching stanza within 0.1s", str(caught.exception))
        self.assertIn("<presence", str(caught.exception))  # its own presence, echoed at login
        self.assertEqual(alice._waiters, [])


class StartServerTests(unittest.TestCase):
    async def test_bad_options_leave_nothing_behind(self):
        from twisted.python import usage

        private = temp_dir(self)
        self.patch(tempfile, "tempdir", private)  # where start_server makes its data directory
        with self.assertRaises(usage.UsageError):
            await start_server({}, args=("--c2s-port", "nonsense"))
        self.assertEqual(os.listdir(private), [])
