"""The cluster layer (xep207.cluster): three processes, one PostgreSQL, one Redis."""

from __future__ import annotations

from tests.cluster_helpers import ClusterMixin
from tests.server_helpers import DOMAIN, ServerTestCase


def is_message(body=None):
    def match(e):
        return e.name == "message" and (body is None or any(str(c) == body for c in e.elements()
                                                            if c.name == "body"))
    return match


class Basics(ClusterMixin, ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth")
    users = ("alice", "bob", "carol")

    async def setUp(self):
        await self.start_server()

    async def test_chat_between_processes(self):
        alice = await self.connect()
        await alice.login("alice", resource="a")
        bob = await self.connect()
        await bob.login("bob", resource="b")
        alice.send("<presence/>")
        bob.send("<presence/>")
        await alice.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == alice.jid)
        alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='m1'><body>hi bob</body></message>")
        received = await bob.wait_for(is_message("hi bob"))
        self.assertEqual(received["from"], alice.jid)
