"""Offline messages leave the queue only once acknowledged (XEP-0198), else at
least once, in order, with their XEP-0359 ids; live messages wait behind the
backlog (issue 12 item 3). Real streams, and a real ``kill -9`` of twistd."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.internet import protocol, reactor, threads

from tests.peers import free_port, source_env, temp_dir, twistd
from tests.server_helpers import DOMAIN, PASSWORD, RawClient, ServerTestCase
from tests.sm_helpers import NS_SM, bodies, body_of, enable, handled, server_side_gone
from xep207.legacy.offline import _Backlog

ALICE = f"alice@{DOMAIN}"
NS_SID = "urn:xmpp:sid:0"


def chat(to: str, text: str) -> str:
    return f"<message to='{to}' type='chat'><body>{text}</body></message>"


def is_body(text):
    return lambda e: e.name == "message" and body_of(e) == text


def is_iq(iq_id):
    return lambda e: e.name == "iq" and e.getAttribute("id") == iq_id


async def sync(client, iq_id="sync"):
    """A round trip: everything the server sent before the answer has arrived."""
    client.send(f"<iq type='get' id='{iq_id}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await client.wait_for(is_iq(iq_id))


async def acked_by_server(client, count: int) -> None:
    """XEP-0198: the server says it handled ``count`` stanzas of ``client``."""
    client.send(f"<r xmlns='{NS_SM}'/>")
    await client.wait_for(lambda e: e.uri == NS_SM and e.name == "a" and int(e.getAttribute("h")) >= count)


def stanza_ids(client) -> list[str]:
    return [next(c for c in e.elements() if c.uri == NS_SID and c.name == "stanza-id")["id"]
            for e in client.stanzas if e.name == "message" and body_of(e) is not None]


class ExactlyOnce(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def setUp(self):
        await self.start_server()
        self.bob = await self.connect()
        await self.bob.login("bob", resource="desk")

    async def queue(self, count: int, first: int = 0) -> None:
        for n in range(first, first + count):
            self.bob.send(chat(ALICE, f"m{n}"))
        await sync(self.bob)

    async def test_acked_half_then_connection_lost_the_rest_arrives_once(self):
        await self.queue(20)
        alice = await self.connect()
        await alice.login("alice", resource="phone")
        await enable(alice, resume=False)
        alice.send("<presence/>")
        tenth = await alice.wait_for(is_body("m9"))
        await alice.wait_for(is_body("m19"))
        first_ids = stanza_ids(alice)
        alice.send(f"<a xmlns='{NS_SM}' h='{handled(alice, tenth)}'/>")
        await sync(alice)
        gone = server_side_gone(self.server, f"{ALICE}/phone")
        alice.transport.abortConnection()
        await gone
        await self.server.quiesce()

        again = await self.connect()
        await again.login("alice", resource="phone")
        again.send("<presence/>")
        await again.wait_for(is_body("m19"))
        await sync(again)
        self.assertEqual(bodies(again), [f"m{n}" for n in range(10, 20)])
        self.assertEqual(stanza_ids(again), first_ids[10:])  # the same XEP-0359 ids as before
        # Without stream management: at least once, so the next session gets nothing more.
        await self.server.quiesce()
        third = await self.connect()
        await third.login("alice", resource="tablet")
        third.send("<presence/>")
        await sync(third)
        self.assertEqual(bodies(third), [])

    async def test_resumed_flush_completes_once(self):
        await self.queue(12)
        alice = await self.connect()
        await alice.login("alice", resource="phone")
        sm_id = (await enable(alice))["id"]
        alice.send("<presence/>")
        fourth = await alice.wait_for(is_body("m3"))
        await alice.wait_for(is_body("m11"))
        h = handled(alice, fourth)
        gone = server_side_gone(self.server, f"{ALICE}/phone")
        alice.transport.abortConnection()
        await gone

        from tests.sm_helpers import ask_resume, sm

        resumed = await self.connect()
        await ask_resume(resumed, "alice", sm_id, h)
        await resumed.wait_for(sm("resumed"))
        last = await resumed.wait_for(is_body("m11"))
        self.assertEqual(bodies(resumed), [f"m{n}" for n in range(4, 12)])
        resumed.send(f"<a xmlns='{NS_SM}' h='{(h + handled(resumed, last)) % 2 ** 32}'/>")
        await sync(resumed)
        resumed.send("</stream:stream>")
        await resumed.closed
        await self.server.quiesce()
        again = await self.connect()
        await again.login("alice", resource="laptop")
        again.send("<presence/>")
        await sync(again)
        self.assertEqual(bodies(again), [])

    async def test_live_messages_during_the_backlog_come_after_it(self):
        await self.queue(40)
        alice = await self.connect()
        await alice.login("alice", resource="phone")
        alice.send("<presence/>")
        for n in range(40, 80):  # at once, while the backlog is being written
            self.bob.send(chat(ALICE, f"m{n}"))
        await alice.wait_for(is_body("m79"))
        await sync(self.bob)
        await sync(alice)
        self.assertEqual(bodies(alice), [f"m{n}" for n in range(80)])

    async def test_live_messages_held_when_the_session_ends_wait_offline(self):
        await self.queue(5)
        alice = await self.connect()
        await alice.login("alice", resource="phone")
        offline = self.server.chat.offline
        session = self.server.router.session(f"{ALICE}/phone")
        alice.send("<presence/>")
        await alice.wait_for(is_body("m4"))
        # A live message caught behind a backlog whose session then drops.
        offline.flushing[session] = _Backlog(started=True)  # as a backlog still waiting for acks
        self.bob.send(chat(ALICE, "held"))
        await sync(self.bob)
        self.assertNotIn("held", bodies(alice))
        gone = server_side_gone(self.server, f"{ALICE}/phone")
        alice.transport.abortConnection()
        await gone
        await self.server.quiesce()
        again = await self.connect()
        await again.login("alice", resource="phone")
        again.send("<presence/>")
        await again.wait_for(is_body("held"))
        self.assertEqual(bodies(again), ["held"])


class KillMinusNine(ServerTestCase):
    """twistd killed with SIGKILL while the backlog waits for acknowledgements:
    after a restart, everything not acknowledged arrives, and nothing that was."""

    def setUp(self):
        self.dir = temp_dir(self)
        self.storage = "sqlite:///" + os.path.join(self.dir, "xep207.sqlite")
        for user in ("alice", "bob"):
            subprocess.run([sys.executable, "-m", "xep207.admin", "--storage", self.storage, "--domain", DOMAIN,
                            "adduser", user], input=PASSWORD + "\n", text=True, capture_output=True,
                           check=True, env=source_env(), cwd=self.dir, timeout=60)
        self.port = free_port()

    def start(self):
        process = twistd(["--storage", self.storage, "--data-dir", self.dir, "--c2s-port", str(self.port),
                          "--c2s-interfaces", "127.0.0.1", "--no-tls", "--allow-plaintext-auth"], self.dir)
        self.addCleanup(process.stop)
        process.wait_for(f"starting on {self.port}")
        return process

    async def connect(self, source=None) -> RawClient:
        client = await protocol.ClientCreator(reactor, RawClient).connectTCP("127.0.0.1", self.port)
        self.addCleanup(self._close, client)
        return client

    async def test_kill_9_mid_flush(self):
        count, acked = 300, 120
        server = self.start()
        bob = await self.connect()
        await bob.login("bob", resource="desk")
        for n in range(count):
            bob.send(chat(ALICE, f"m{n}"))
        await sync(bob)
        alice = await self.connect()
        await alice.login("alice", resource="phone")
        await enable(alice, resume=False)
        alice.send("<presence/>")
        upto = await alice.wait_for(is_body(f"m{acked - 1}"))
        alice.send(f"<a xmlns='{NS_SM}' h='{handled(alice, upto)}'/>")
        # The mark is stored (read in a thread: the reactor must write the <a/>).
        await threads.deferToThread(server.wait_for, f"in chat:{ALICE}:bob@{DOMAIN}: {acked} delivered")
        os.killpg(server.popen.pid, 9)
        server.popen.wait()
        await alice.closed

        self.start()
        again = await self.connect()
        await again.login("alice", resource="phone")
        again.send("<presence/>")
        await again.wait_for(is_body(f"m{count - 1}"))
        await sync(again)
        self.assertEqual(bodies(again), [f"m{n}" for n in range(acked, count)])

    async def test_kill_9_with_live_messages_unacknowledged(self):
        """Live messages written to a managed session but not acknowledged when the
        server dies: the next session gets them (the stored window), in order."""
        server = self.start()
        alice = await self.connect()
        await alice.login("alice", resource="phone")
        await enable(alice, resume=False)
        alice.send("<presence/>")
        await alice.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == alice.jid)
        bob = await self.connect()
        await bob.login("bob", resource="desk")
        await enable(bob, resume=False)
        for n in range(50):
            bob.send(chat(ALICE, f"m{n}"))
        upto = await alice.wait_for(is_body("m19"))
        await alice.wait_for(is_body("m49"))
        alice.send(f"<a xmlns='{NS_SM}' h='{handled(alice, upto)}'/>")
        await sync(alice)
        # The durability point: bob's <a h/> covers a message only once alice's
        # unacknowledged window holding it is stored. Killing before it (the
        # window's write still queued on a loaded machine) tests nothing the
        # server promises: alice's ping round trip never waited for that write.
        await acked_by_server(bob, 50)
        os.killpg(server.popen.pid, 9)
        server.popen.wait()
        await alice.closed

        self.start()
        again = await self.connect()
        await again.login("alice", resource="phone")
        again.send("<presence/>")
        await again.wait_for(is_body("m49"))
        await sync(again)
        got = bodies(again)
        # Everything not acknowledged, once, in order (and at most what was acknowledged
        # before it, when the last window move had not reached the disk).
        self.assertEqual(got[-30:], [f"m{n}" for n in range(20, 50)])
        self.assertEqual(got, [f"m{n}" for n in range(50 - len(got), 50)])
        self.assertLessEqual(50 - len(got), 20)
