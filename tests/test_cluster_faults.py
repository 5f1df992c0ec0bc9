"""A cluster under failure: real ``twistd xep207`` processes sharing
PostgreSQL and Redis; one killed with SIGKILL during traffic, then Redis
itself restarted during traffic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from twisted.internet import protocol, reactor
from twisted.trial import unittest

from tests.peers import free_port, source_env, temp_dir, twistd
from tests.server_helpers import DOMAIN, PASSWORD, RawClient

TIMEOUT = 3.0  # --cluster-timeout: the bound on noticing a dead process
CTL = [sys.executable, "-m", "xep207.admin"]
USERS = ("alice", "bob", "carol", "dave")


def homed_on(node: str, nodes: tuple[str, ...]) -> str:
    """A room name whose home (``Routing.home_of``'s rendezvous hash) is ``node``."""
    import hashlib

    for i in range(1000):
        name = f"lobby{i}"
        if max(nodes, key=lambda n: hashlib.sha1(f"{n}\0{name}".encode()).digest()) == node:
            return name
    raise AssertionError("no such room name")


ROOM = f"{homed_on('n1', ('n0', 'n1', 'n2'))}@chat.{DOMAIN}"  # killed below: its home moves
NS_MUC = "http://jabber.org/protocol/muc"


def presence_from(sender, type=None):
    return lambda e: e.name == "presence" and e.getAttribute("from") == sender and e.getAttribute("type") == type


def body_is(text):
    return lambda e: e.name == "message" and e.body is not None and str(e.body) == text


def result(stanza_id):
    return lambda e: e.name == "iq" and e.getAttribute("id") == stanza_id


class ClusterFaults(unittest.TestCase):
    timeout = 180

    def setUp(self):
        from tests.pg import shared_cluster
        from tests.redis_peer import RedisServer

        self.dir = temp_dir(self)
        self.redis = RedisServer()
        self.addCleanup(self.redis.destroy)
        self.storage = shared_cluster().new_database()
        for user in USERS:
            out = subprocess.run([*CTL, "--storage", self.storage, "--domain", DOMAIN, "adduser", user],
                                 input=PASSWORD + "\n", capture_output=True, text=True, cwd=self.dir,
                                 env=source_env(), timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
        self.ports = {}
        self.processes = {}
        for name in ("n0", "n1", "n2"):
            self.start(name)

    def start(self, name):
        port = self.ports.setdefault(name, free_port())
        directory = os.path.join(self.dir, name)
        os.makedirs(directory, exist_ok=True)
        process = twistd(["--domain", DOMAIN, "--storage", self.storage, "--data-dir", directory,
                          "--c2s-port", str(port), "--c2s-interfaces", "127.0.0.1", "--no-tls",
                          "--allow-plaintext-auth", "--c2s-rate", "0",
                          "--cluster", f"redis://127.0.0.1:{self.redis.port}/0", "--node-name", name,
                          "--cluster-timeout", str(TIMEOUT)], directory)
        self.addCleanup(process.stop)
        process.wait_for(f"cluster: {name} joined", timeout=60)
        process.wait_for(f"starting on {port}", timeout=30)
        self.processes[name] = process
        return process

    def kill(self, name):
        process = self.processes[name]
        os.killpg(process.popen.pid, signal.SIGKILL)
        process.popen.wait()

    async def online(self, user, node, resource="r"):
        client = await protocol.ClientCreator(reactor, RawClient).connectTCP("127.0.0.1", self.ports[node])
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        await client.login(user, resource=resource)
        client.send("<presence/>")
        await client.wait_for(presence_from(client.jid))
        return client

    async def befriend(self, a, b):
        """Mutual presence subscription between two online clients."""
        a_bare, b_bare = a.jid.split("/")[0], b.jid.split("/")[0]
        a.send(f"<presence to='{b_bare}' type='subscribe'/>")
        await b.wait_for(presence_from(a_bare, "subscribe"))
        b.send(f"<presence to='{a_bare}' type='subscribed'/>")
        await a.wait_for(presence_from(b.jid))  # b's presence, now that a may see it
        b.send(f"<presence to='{a_bare}' type='subscribe'/>")
        await a.wait_for(presence_from(b_bare, "subscribe"))
        a.send(f"<presence to='{b_bare}' type='subscribed'/>")
        await b.wait_for(presence_from(a.jid))

    async def join(self, client, nick, children=""):
        """Join; the subject, which ends the join (XEP-0045 §7.2.16)."""
        since = len(client.stanzas)
        client.send(f"<presence to='{ROOM}/{nick}'><x xmlns='{NS_MUC}'/>{children}</presence>")
        own = await client.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == f"{ROOM}/{nick}"
                                    and "code='110'" in e.toXml())
        subject = await client.wait_for(lambda e: e.name == "message" and e.subject is not None)
        self.occupant_list = [e for e in client.stanzas[since:] if e.name == "presence"
                              and e.getAttribute("from", "").startswith(ROOM + "/")
                              and e.getAttribute("from") != f"{ROOM}/{nick}"]
        if "code='201'" in own.toXml():  # a new room is locked until its owner accepts it (XEP-0045 §10.1.2)
            client.send(f"<iq type='set' id='instant-{nick}' to='{ROOM}'><query xmlns='http://jabber.org/protocol/"
                        "muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>")
            answer = await client.wait_for(lambda e: e.name == "iq" and e.getAttribute("id") == f"instant-{nick}")
            assert answer.getAttribute("type") == "result", answer.toXml()
        return subject

    def assert_room_as_left(self, subject, others: dict[str, bool]) -> None:
        """What a joiner was told: the occupants (nick → whether it is alice,
        away in a meeting, as she said when she joined) and the subject."""
        self.assertEqual(str(subject.subject), "plans")
        self.assertEqual(sorted(e["from"].split("/", 1)[1] for e in self.occupant_list), sorted(others))
        for presence in self.occupant_list:
            nick = presence["from"].split("/", 1)[1]
            if others[nick]:
                self.assertEqual((str(presence.show), str(presence.status)), ("away", "in a meeting"),
                                 presence.toXml())

    async def test_killed_room_home_others_keep_the_room(self):
        """The room's home is the process killed: the survivors' occupants
        keep chatting, a newcomer gets the occupant list (with each one's
        show and status) and the subject, here and after the home comes back."""
        await self.killed_process_scenario(offline_kept=False)

    async def test_messages_to_a_killed_process_wait_for_its_restart(self):
        await self.killed_process_scenario(offline_kept=True)

    async def killed_process_scenario(self, offline_kept: bool):
        alice = await self.online("alice", "n0", "a")
        bob = await self.online("bob", "n1", "b")
        carol = await self.online("carol", "n2", "c")
        await self.befriend(alice, bob)
        await self.befriend(carol, bob)
        await self.join(alice, "Alice", "<show>away</show><status>in a meeting</status>")
        alice.send(f"<message to='{ROOM}' type='groupchat'><subject>plans</subject></message>")
        await alice.wait_for(lambda e: e.name == "message" and e.subject is not None and str(e.subject) == "plans")
        for client, nick in ((bob, "Bob"), (carol, "Carol")):
            await self.join(client, nick)
        await alice.wait_for(presence_from(f"{ROOM}/Carol"))

        # Traffic across the processes while n1 dies.
        for i in range(10):
            alice.send(f"<message to='carol@{DOMAIN}' type='chat'><body>before {i}</body></message>")
        killed_at = time.monotonic()
        self.kill("n1")
        for i in range(5):  # to bob, whose process is gone: kept for him, not lost
            alice.send(f"<message to='bob@{DOMAIN}' type='chat'><body>while dead {i}</body></message>")
        for i in range(10):
            alice.send(f"<message to='carol@{DOMAIN}' type='chat'><body>during {i}</body></message>")

        # Contacts and rooms see bob go, once, within the timeout (plus one heartbeat period).
        await alice.wait_for(presence_from(bob.jid, "unavailable"), timeout=TIMEOUT * 4)
        await carol.wait_for(presence_from(bob.jid, "unavailable"), timeout=TIMEOUT * 4)
        await alice.wait_for(presence_from(f"{ROOM}/Bob", "unavailable"), timeout=TIMEOUT * 4)
        await carol.wait_for(presence_from(f"{ROOM}/Bob", "unavailable"), timeout=TIMEOUT * 4)
        noticed = time.monotonic() - killed_at
        self.assertLess(noticed, TIMEOUT * 4)
        for i in range(10):
            await carol.wait_for(body_is(f"before {i}"))
            await carol.wait_for(body_is(f"during {i}"))

        # The others keep serving each other, rooms included.
        carol.send(f"<message to='{ROOM}' type='groupchat'><body>still here</body></message>")
        await alice.wait_for(body_is("still here"))
        # Exactly once: one unavailable presence each, not one per surviving process.
        self.assertEqual(len([e for e in alice.stanzas if presence_from(bob.jid, "unavailable")(e)]), 1)
        self.assertEqual(len([e for e in carol.stanzas if presence_from(f"{ROOM}/Bob", "unavailable")(e)]), 1)
        # The room's new home rebuilt what it renders: a newcomer sees it as it was.
        dave = await self.online("dave", "n2", "d")
        self.assert_room_as_left(await self.join(dave, "Dave"), {"Alice": True, "Carol": False})
        await alice.wait_for(presence_from(f"{ROOM}/Dave"))

        # n1 restarts under its name and rejoins; bob gets what waited, contacts see him back.
        self.start("n1")
        bob2 = await self.online("bob", "n1", "b")
        # (A restarted process on a loaded CI box: bounded generously, never slept on.)
        if offline_kept:
            for i in range(5):
                await bob2.wait_for(body_is(f"while dead {i}"), timeout=60)
        await alice.wait_for(presence_from(bob2.jid), timeout=60)
        alice.send(f"<message to='bob@{DOMAIN}' type='chat'><body>welcome back</body></message>")
        await bob2.wait_for(body_is("welcome back"), timeout=60)
        self.assertEqual(len([e for e in alice.stanzas if presence_from(bob.jid, "unavailable")(e)]), 1)
        # The room's home is n1 again (restarted, empty-handed): it loads the room before answering.
        self.assert_room_as_left(await self.join(bob2, "Bob"), {"Alice": True, "Carol": False, "Dave": False})
        dave.send(f"<message to='{ROOM}' type='groupchat'><body>hi all</body></message>")
        for client in (alice, carol, bob2):
            await client.wait_for(body_is("hi all"))

    async def test_redis_restart_errors_then_recovers(self):
        alice = await self.online("alice", "n0", "a")
        bob = await self.online("bob", "n1", "b")
        await self.befriend(alice, bob)

        self.redis.stop()
        # While Redis is down: a clear error for what must cross, and nothing acknowledged lost.
        alice.send(f"<iq type='get' to='{bob.jid}' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        error = await alice.wait_for(result("p1"))
        self.assertEqual(error["type"], "error")
        self.assertIn("service-unavailable", error.toXml())
        alice.send(f"<message to='bob@{DOMAIN}' type='chat'><body>while redis is down</body></message>")
        # Each process still serves its own sessions.
        alice.send(f"<iq type='get' id='own'><query xmlns='jabber:iq:roster'/></iq>")
        self.assertEqual((await alice.wait_for(result("own")))["type"], "result")

        self.redis.start()
        for name in ("n0", "n1", "n2"):
            self.processes[name].wait_for(f"cluster: {name} rejoined", timeout=30)
        alice.send(f"<message to='bob@{DOMAIN}' type='chat'><body>after redis is back</body></message>")
        await bob.wait_for(body_is("after redis is back"))
        bob.send(f"<iq type='get' to='{alice.jid}' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>")
        self.assertEqual((await alice.wait_for(result("p2")))["from"], bob.jid)  # and the other way
        # The message of the outage waited for bob: his next session gets it.
        bob.transport.loseConnection()
        await bob.closed
        bob2 = await self.online("bob", "n2", "b2")
        await bob2.wait_for(body_is("while redis is down"))
