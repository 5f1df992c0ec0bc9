"""A client's first burst of hundreds of KB is parsed a slice per reactor turn
(issue 12, "first-burst flood stall"): other connections are served between
slices, and the burst's stanzas are still handled in order, none lost."""

from __future__ import annotations

import re

from twisted.internet import task

from tests.server_helpers import ServerTestCase
from xep207.server.stream import PARSE_SLICE

PING = "<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"


class TurnClock(task.Clock):
    """A reactor turn at a time: ``turn`` runs what was due before it began
    (``advance(0)`` would also run what those calls schedule for "now")."""

    def turn(self) -> None:
        due = [call for call in self.calls if call.getTime() <= self.seconds()]
        for call in due:
            self.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)


class FirstBurst(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth", "--c2s-rate", "0")

    async def setUp(self):
        await self.start_server()
        self.bystander = await self.connect()
        await self.bystander.login("bob", resource="bystander")

    async def test_a_large_read_is_parsed_in_slices_in_order(self):
        # The stream's clock is ours: a slice waits until the test turns it.
        clock = TurnClock()
        self.server.client_factory.clock = clock
        flooder = await self.connect()
        await flooder.login("alice", resource="flood")
        pings = [PING.format(id=f"f{i}") for i in range(4000)]  # ~250 KB in one write
        flooder.send("".join(pings))
        await flooder.expect("id='f100'")  # the first slice of a read was answered...
        self.assertNotIn(b"id='f3999'", flooder.received)  # ...not the whole burst
        stream = self.server.router.session("alice@localhost/flood").stream
        self.assertTrue(stream._unparsed)
        # Meanwhile another connection is served, turn after turn.
        self.bystander.send(PING.format(id="meanwhile"))
        await self.bystander.expect("id='meanwhile'")
        turns = 0
        while b"id='f3999'" not in flooder.received:
            clock.turn()
            turns += 1
            self.bystander.send(PING.format(id=f"t{turns}"))
            await self.bystander.expect(f"id='t{turns}'")  # the reads of this turn happen
            self.assertLess(turns, 200)
        await flooder.expect("id='f3999'")
        # At least one turn per slice of the burst; every answer, in the order sent.
        self.assertGreaterEqual(turns, len("".join(pings)) // PARSE_SLICE - 4)
        answered = re.findall(rb"id='f(\d+)'", flooder.received)
        self.assertEqual([int(i) for i in answered], list(range(4000)))

    async def test_what_was_sent_before_the_connection_closed_is_handled(self):
        clock = task.Clock()
        self.server.client_factory.clock = clock  # slices would wait forever: the close parses them
        alice = await self.connect()
        await alice.login("alice", resource="burst")
        messages = "".join(f"<message to='bob@localhost/bystander' type='chat'><body>b{i}</body></message>"
                           for i in range(600))  # ~50 KB
        alice.send(messages)
        alice.transport.loseConnection()
        await self.bystander.expect("<body>b599</body>")
        bodies = re.findall(rb"<body>b(\d+)</body>", self.bystander.received)
        self.assertEqual([int(b) for b in bodies], list(range(600)))
