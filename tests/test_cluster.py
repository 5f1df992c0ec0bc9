"""The cluster layer (xep207.cluster): three processes, one PostgreSQL, one
Redis; every client of a test on the next process (``ClusterMixin``)."""

from __future__ import annotations

from twisted.trial import unittest

from tests.cluster_helpers import ClusterMixin
from tests.doors_helpers import NS_PUBSUB, DoorsTestCase
from tests.server_helpers import DOMAIN

PUBSUB = f"pubsub.{DOMAIN}"
NS_EVENT = NS_PUBSUB + "#event"


def is_message(body=None):
    def match(e):
        return e.name == "message" and (body is None or any(str(c) == body for c in e.elements()
                                                            if c.name == "body"))
    return match


def event_item(node, item_id):
    def match(e):
        if e.name != "message":
            return False
        event = next((c for c in e.elements() if c.name == "event" and c.uri == NS_EVENT), None)
        items = next((c for c in event.elements() if c.name == "items"), None) if event is not None else None
        return items is not None and items.getAttribute("node") == node and any(
            i.getAttribute("id") == item_id for i in items.elements() if i.name == "item")
    return match


class ClusterCase(ClusterMixin, DoorsTestCase):
    users = ("alice", "bob", "carol", "dave", "eve", "frank", "grace")

    def forwarded(self, key):
        return [s.cluster.stats[key] for s in self.servers]


class Routing(ClusterCase):
    async def test_chat_between_processes(self):
        alice = await self.online("alice", "a")
        bob = await self.online("bob", "b")
        self.assertEqual(len(self.servers[0].router.sessions), 1)  # alice here, bob elsewhere
        alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='m1'><body>hi bob</body></message>")
        received = await bob.wait_for(is_message("hi bob"))
        self.assertEqual(received["from"], alice.jid)
        bob.send(f"<message to='{alice.jid}' type='chat'><body>hi alice</body></message>")
        self.assertEqual((await alice.wait_for(is_message("hi alice")))["from"], bob.jid)

    async def test_highest_priority_across_processes(self):
        """RFC 6121 §8.5.2.1.1 over the cluster: the bare JID reaches only the
        highest-priority resource, whichever process holds it."""
        alice = await self.online("alice", "a")
        low = await self.connect()
        await low.login("bob", resource="low")
        low.send("<presence><priority>1</priority></presence>")
        await low.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == low.jid)
        high = await self.connect()
        await high.login("bob", resource="high")
        high.send("<presence><priority>5</priority></presence>")
        await high.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == high.jid)
        alice.send(f"<message to='bob@{DOMAIN}' type='chat'><body>to the top</body></message>")
        await high.wait_for(is_message("to the top"))
        await self.settle(alice, low, high)
        self.nothing(low, is_message("to the top"))

    async def test_same_resource_on_another_process_replaces_the_old(self):
        """RFC 6120 §7.7.2.2 across processes: the newer binding wins, the old
        session is told ``conflict``."""
        first = await self.online("bob", "same")
        await self.online("alice", "a")  # the next process is skipped
        second = await self.online("bob", "same")
        closed = await first.closed
        self.assertIn(b"conflict", closed)
        alice = await self.online("alice", "a2")
        alice.send(f"<message to='bob@{DOMAIN}/same' type='chat'><body>which one</body></message>")
        await second.wait_for(is_message("which one"))

    async def test_iq_to_a_session_elsewhere_and_back(self):
        alice = await self.online("alice", "a")
        bob = await self.online("bob", "b")
        alice.send(f"<iq type='get' to='{bob.jid}' id='v1'><query xmlns='jabber:iq:version'/></iq>")
        asked = await bob.wait_for(lambda e: e.name == "iq" and e.getAttribute("id") == "v1")
        self.assertEqual(asked["from"], alice.jid)
        bob.send(f"<iq type='result' to='{alice.jid}' id='v1'><query xmlns='jabber:iq:version'>"
                 "<name>b</name></query></iq>")
        answer = await alice.wait_for(lambda e: e.name == "iq" and e.getAttribute("id") == "v1")
        self.assertEqual(answer["from"], bob.jid)


class FanOut(ClusterCase):
    async def test_an_event_crosses_once_per_process(self):
        """Six subscribers on two other processes: the publisher's process sends
        the event twice (once per process), not six times."""
        alice = await self.online("alice", "a")
        subscribers = [await self.online(user, "r") for user in ("bob", "carol", "dave", "eve", "frank", "grace")]
        self.assert_ok(await self.create(alice, PUBSUB, "news"))
        for client in subscribers:
            self.assert_ok(await self.subscribe(client, PUBSUB, "news"))
        before = self.servers[0].cluster.stats["events-forwarded"]
        self.assert_ok(await self.publish(alice, PUBSUB, "news", "<entry xmlns='urn:example'/>", "i1"))
        for client in subscribers:
            await client.wait_for(event_item("news", "i1"))
        self.assertEqual(self.servers[0].cluster.stats["events-forwarded"] - before, 2)

    async def test_pep_reaches_subscribers_on_other_processes(self):
        alice = await self.online("alice", "a")
        bob = await self.online("bob", "b")
        carol = await self.online("carol", "c")
        pep = f"alice@{DOMAIN}"
        self.assert_ok(await self.create(alice, pep, "urn:xmpp:tune", {"access_model": "open"}))
        for watcher in (bob, carol):
            self.assert_ok(await self.subscribe(watcher, pep, "urn:xmpp:tune"))
        self.assert_ok(await self.publish(alice, pep, "urn:xmpp:tune",
                                          "<tune xmlns='http://jabber.org/protocol/tune'/>", "current"))
        await bob.wait_for(event_item("urn:xmpp:tune", "current"))
        await carol.wait_for(event_item("urn:xmpp:tune", "current"))


class Invalidation(ClusterCase):
    server_args = ClusterCase.server_args + ("--registration",)

    async def test_account_removed_on_one_process_is_gone_on_all(self):
        bob = await self.online("bob", "b")  # on the first process
        alice = await self.online("alice", "a")  # the second: knows bob exists
        alice.send(f"<message to='bob@{DOMAIN}' type='headline'><body>warm</body></message>")
        await bob.wait_for(is_message("warm"))
        bob2 = await self.online("bob", "b2")  # the third
        bob2.send("<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>")
        await bob2.closed  # the account is gone: its sessions end…
        closed = await bob.closed  # … on the other processes too
        self.assertIn(b"not-authorized", closed)
        alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='gone'><body>anyone?</body></message>")
        error = await alice.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "gone")
        self.assertEqual(error["type"], "error")
        self.assertIn("service-unavailable", error.toXml())


    async def test_a_removal_answered_on_one_process_holds_on_the_others(self):
        """Known accounts are forgotten everywhere before XEP-0077's answer."""
        alice = await self.online("alice", "a")  # the first process: knows bob exists
        alice.send(f"<message to='bob@{DOMAIN}' type='headline'><body>warm</body></message>")
        await self.settle(alice)
        bob = await self.online("bob", "b")  # the second
        bob.send("<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>")
        self.assert_ok(await bob.wait_for(lambda e: e.name == "iq" and e.getAttribute("id") == "rm"))
        alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='late'><body>still there?</body></message>")
        error = await alice.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "late")
        self.assertIn("service-unavailable", error.toXml())

    async def test_a_password_changed_on_one_process_stops_a_login_under_way_on_another(self):
        """A stream that authenticated before the change binds on no process."""
        self._next = 1
        client = await self.connect()  # the second process
        await client.authenticate("bob")
        await self.servers[0].accounts.change_password(f"bob@{DOMAIN}", "another secret")  # the first process
        client.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                    "<resource>late</resource></bind></iq>")
        from twisted.internet import reactor

        self.assertIn(b"<reset", await client.closed.addTimeout(15, reactor))  # (bound: a bound stream stays open)

    async def test_a_photo_set_through_one_process_is_in_presence_sent_through_another(self):
        """XEP-0153: each process keeps the photo hash of the accounts online
        there; a vCard written elsewhere is the new hash before its answer."""
        from tests.test_doors_personal import IMAGE_SHA1, photo, vcard

        here = await self.online("alice", "here")  # the first process
        there = await self.online("alice", "there")  # the second: its hash ('' — no photo) is cached
        self.assert_ok(await self.iq(here, "set", None, vcard("<FN>Alice</FN>" + photo())))
        there.send("<presence><show>away</show></presence>")
        echo = await there.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == there.jid
                                    and e.show is not None)
        self.assertIn(IMAGE_SHA1, echo.toXml())


class SharedPort(ClusterCase):
    """``--c2s-reuse-port``: the three processes listen on one port."""

    async def setUp(self):
        from tests.peers import free_port

        self.shared_port = free_port()
        await self.start_server("--c2s-reuse-port", "--c2s-port", str(self.shared_port))

    async def test_processes_share_the_client_port(self):
        self.assertEqual(self.ports, [self.shared_port] * 3)
        clients = [await self.online(user, "r") for user in ("alice", "bob", "carol", "dave", "eve", "frank")]
        served = [len(s.router.sessions) for s in self.servers]
        self.assertEqual(sum(served), 6)
        clients[0].send(f"<message to='{clients[-1].jid}' type='chat'><body>across</body></message>")
        await clients[-1].wait_for(is_message("across"))


class Hostile(ClusterCase):
    """What arrives from Redis is checked like anything else from the network."""

    async def test_garbage_on_a_channel_is_logged_and_ignored(self):
        alice = await self.online("alice", "a")
        bob = await self.online("bob", "b")
        cluster = self.servers[1].cluster
        channel = cluster.keys.channel(cluster.name)
        for text in ("not json", "[1, 2]", '{"t": "x"}', '{"t": "e", "e": {}, "r": []}',
                     '{"t": "r", "x": "<message"}', '{"t": "zz"}', '{"t": "s", "n": "x", "j": "@@", "i": "[]"}',
                     # (a bind's replacement: garbled, or naming nobody bound here)
                     '{"t": "k"}', '{"t": "k", "j": 5, "q": [], "n": {}}',
                     '{"t": "k", "j": "nobody@x/y", "q": "q", "n": 7}',
                     '{"t": "replaced"}', '{"t": "replaced", "q": {"a": 1}}', '{"t": "sync", "n": "x", "s": []}',
                     '{"t": "e", "e": {"service": 1}, "r": [], "q": "x", "n": "nobody"}'):
            await self.servers[0].cluster.command("PUBLISH", channel, text)
            await self.servers[0].cluster.command("PUBLISH", cluster.keys.all, text)
        alice.send(f"<message to='{bob.jid}' type='chat'><body>still fine</body></message>")
        await bob.wait_for(is_message("still fine"))
        self.flushLoggedErrors()


class Options(unittest.TestCase):
    def test_options_refuse_what_cannot_cluster(self):
        from twisted.python import usage

        from xep207.tap import Options

        for args in (["--cluster", "http://x"], ["--cluster", "redis://h/notanumber"],
                     ["--cluster", "redis://127.0.0.1/0", "--storage", "memory:"],
                     ["--cluster", "redis://127.0.0.1/0"],  # the default storage is SQLite
                     ["--cluster-timeout", "0"], ["--cluster-timeout", "-3"]):
            with self.subTest(args=args):
                with self.assertRaises(usage.UsageError):
                    Options().parseOptions(args)


class Administration(ClusterCase):
    async def test_a_kick_reaches_a_session_on_another_process(self):
        bob = await self.online("bob", "b")  # on the first process
        alice = await self.online("alice", "a")  # the second
        kicked_on = self.servers[1]  # the administrator's request lands on another process than bob's
        self.assertEqual(kicked_on.accounts.kick(f"bob@{DOMAIN}"), 1)
        self.assertIn(b"policy-violation", await bob.closed)
        self.assertEqual([s.jid for s in kicked_on.accounts.sessions(f"alice@{DOMAIN}")], [alice.jid])


class Codec(unittest.TestCase):
    """What crosses between processes comes out as it went in."""

    def test_events_and_requests_round_trip(self):
        import json

        from xep207.cluster import codec
        from xep207.pubsub.events import CONFIGURATION, ITEMS, RETRACT, AuthorizationRequest, Event, Recipient
        from xep207.storage.records import PENDING, Item, NodeConfig, Subscription

        subscription = Subscription("pubsub.localhost", "n", "b@localhost/r", options={"pubsub#deliver": True,
                                                                                       "x": ["a", "b"]},
                                    via="legacy")
        events = [
            Event("pubsub.localhost", "n", ITEMS, items=(Item("i", "<p xmlns='u'>é</p>", "a@localhost/r", 1.5, 7),),
                  notification_type="normal", reply_to="a@localhost/r", replay=True, node_kind="pair"),
            Event("a@localhost", "presence", RETRACT, retracted=("r1", "r2"), note="<status>bye</status>"),
            Event("chat.localhost", "room", CONFIGURATION, config=NodeConfig(max_items=3, extra={"k": "v"},
                                                                               roster_groups_allowed=("g",))),
            Event("pubsub.localhost", "n", "subscription", subscription=subscription),
        ]
        for event in events:
            text = json.dumps(codec.event_data(event))
            self.assertEqual(codec.event_from(json.loads(text)), event)
        recipients = [Recipient("b@localhost"), Recipient("c@localhost/r", subscription)]
        self.assertEqual(codec.recipients_from(json.loads(json.dumps(codec.recipients_data(recipients)))),
                         recipients)
        request = AuthorizationRequest("a@localhost", "presence", subscription.replace(state=PENDING),
                                       ("a@localhost/r",), "presence")
        self.assertEqual(codec.request_from(json.loads(json.dumps(codec.request_data(request)))), request)
        with self.assertRaises(ValueError):
            codec.loads("[1]")


class Blocking(ClusterCase):
    async def test_a_block_made_on_one_process_holds_on_the_others(self):
        """The engine's block index is per process: a change is sent to the others."""
        import tests.test_blocking as blocking

        alice = await self.online("alice", "a")
        eve = await self.online("eve", "e")
        reply = await self.iq(alice, "set", None, f"<block xmlns='{blocking.NS_BLOCKING}'>"
                                                  f"<item jid='{blocking.EVE}'/></block>")
        self.assert_ok(reply)
        eve.send(f"<message id='m' to='{blocking.ALICE}' type='chat'><body>hello?</body></message>")
        error = await eve.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "m")
        self.assertIn("service-unavailable", error.toXml())
        self.assertEqual([sorted(s.engine.blocks.of(blocking.ALICE)) for s in self.servers], [[blocking.EVE]] * 3)
        reply = await self.iq(alice, "set", None, f"<unblock xmlns='{blocking.NS_BLOCKING}'/>")
        self.assert_ok(reply)
        await self.settle(alice, eve)
        self.assertEqual([sorted(s.engine.blocks.of(blocking.ALICE)) for s in self.servers], [[]] * 3)
        eve.send(f"<message to='{blocking.ALICE}' type='chat'><body>again</body></message>")
        await alice.wait_for(is_message("again"))

    async def test_a_block_through_xep0060_holds_everywhere_once_answered(self):
        """The other door: a blocklist item published (then retracted) is in
        every process's index before the publish is answered."""
        import tests.test_blocking as blocking

        alice = await self.online("alice", "a")
        eve = await self.online("eve", "e")  # on another process
        for round in range(3):
            self.assert_ok(await self.publish(alice, blocking.ALICE, "blocklist",
                                              f"<item xmlns='{blocking.NS_BLOCKING}' jid='{blocking.EVE}'/>",
                                              blocking.EVE))
            eve.send(f"<message id='b{round}' to='{blocking.ALICE}' type='chat'><body>hello?</body></message>")
            error = await eve.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == f"b{round}")
            self.assertIn("service-unavailable", error.toXml())
            self.assert_ok(await self.retract(alice, blocking.ALICE, "blocklist", blocking.EVE))
            eve.send(f"<message to='{blocking.ALICE}' type='chat'><body>again {round}</body></message>")
            await alice.wait_for(is_message(f"again {round}"))
        self.nothing(alice, is_message("hello?"))


class OfflineAcrossProcesses(ClusterCase):
    """Issue 15: a one-to-one message whose recipient's process is gone, or
    whose session left while the message crossed, waits offline — every one
    of them, from the first (the merged tree lost the first of a burst to a
    dead process: each miss was reported after its publish, outside the
    conversation's lock, and the last report won)."""

    def believe(self, server, node, full):
        """``server``'s mirror says ``full`` is bound on ``node``: what it
        believes in the instant between a process dying (or a session
        leaving) and the news reaching it."""
        from xep207.cluster.registry import SessionInfo

        server.cluster.directory.set(node, full, SessionInfo(available=True))

    async def drained(self, server) -> None:
        """Every Redis reply this process awaited has come back, and what it
        started on them (keeping undelivered items) has finished."""
        await server.cluster.command("PING")
        await server.cluster.work.drain()
        await server.quiesce()

    async def test_a_burst_to_a_dead_process_waits_in_full(self):
        alice = await self.online("alice", "a")
        self.believe(self.servers[0], "vanished", f"bob@{DOMAIN}/b")
        for i in range(8):
            alice.send(f"<message to='bob@{DOMAIN}' type='chat'><body>while dead {i}</body></message>")
        await self.settle(alice)
        await self.drained(self.servers[0])
        self.assertGreaterEqual(self.servers[0].cluster.stats["events-undelivered"], 8)
        bob = await self.online("bob", "b")  # on another process
        for i in range(8):
            await bob.wait_for(is_message(f"while dead {i}"))
        bodies = [str(e.body) for e in bob.stanzas if is_message()(e) and e.body is not None]
        self.assertEqual(bodies, [f"while dead {i}" for i in range(8)])  # in order, once

    async def test_a_message_crossing_to_a_session_that_left_waits_offline(self):
        alice = await self.online("alice", "a")  # on the first process
        carol = await self.online("carol", "c")  # on the second
        self.believe(self.servers[0], self.servers[1].cluster.name, f"bob@{DOMAIN}/gone")
        alice.send(f"<message to='bob@{DOMAIN}' type='chat'><body>crossed</body></message>")
        # Behind the event on the same channel: once carol has it, the second process handled the event.
        alice.send(f"<iq type='get' to='{carol.jid}' id='behind'><ping xmlns='urn:xmpp:ping'/></iq>")
        await carol.wait_for(lambda e: e.name == "iq" and e.getAttribute("id") == "behind")
        await self.drained(self.servers[1])
        self.assertEqual(self.servers[1].cluster.stats["events-undelivered"], 1)
        bob = await self.online("bob", "b")  # on the third
        await bob.wait_for(is_message("crossed"))

    async def test_misses_reported_late_and_out_of_order_keep_the_earliest(self):
        """Misses come back from Redis after their publish, in any order and
        beside each other: the mark ends at the earliest, whatever came last."""
        from xep207.pubsub.events import ITEMS, Event, Recipient
        from xep207.pubsub.kinds import pair_node_id

        alice = await self.online("alice", "a")
        bob = await self.online("bob", "b")
        for i in range(3):
            alice.send(f"<message to='bob@{DOMAIN}' type='chat'><body>late {i}</body></message>")
            await bob.wait_for(is_message(f"late {i}"))
        await self.logout(bob)
        server = self.servers[0]
        node_id = pair_node_id(f"alice@{DOMAIN}", f"bob@{DOMAIN}")
        items = (await server.storage.page_items(PUBSUB, node_id)).items
        subscription = await server.storage.get_subscription(PUBSUB, node_id, f"bob@{DOMAIN}")
        recipient = Recipient(f"bob@{DOMAIN}", subscription)
        # As the replies of PUBLISHes to a process that died report them: the
        # newest first, one after the other; then two at once.
        for item in reversed(items[1:]):
            server.cluster.routing._undelivered(Event(PUBSUB, node_id, ITEMS, items=(item,), node_kind="pair"),
                                                [recipient])
            await server.cluster.work.drain()
        for item in (items[0], items[2]):
            server.cluster.routing._undelivered(Event(PUBSUB, node_id, ITEMS, items=(item,), node_kind="pair"),
                                                [recipient])
        await server.cluster.work.drain()
        bob = await self.online("bob", "b2")
        for i in range(3):
            await bob.wait_for(is_message(f"late {i}"))


class Uploads(ClusterCase):
    """XEP-0363 with ``--upload-dir`` shared by the processes: a file PUT
    through one process is served by every other, and a slot one process
    signed is accepted by another (a load balancer may send the PUT anywhere)."""

    async def setUp(self):
        from tests.peers import temp_dir

        self.upload_dir = temp_dir(self)
        await self.start_server("--http-port", "0", "--http-interfaces", "127.0.0.1", "--http-plain",
                                "--upload-dir", self.upload_dir)

    def at(self, url: str, server) -> str:
        from urllib.parse import urlsplit, urlunsplit

        return urlunsplit(urlsplit(url)._replace(netloc=f"127.0.0.1:{server.web.port}"))

    async def slot(self, client, size: int):
        from xep207.web.upload import NS_UPLOAD

        reply = self.assert_ok(await self.iq(client, "get", f"upload.{DOMAIN}",
                                             f"<request xmlns='{NS_UPLOAD}' filename='cat.png' size='{size}' "
                                             "content-type='image/png'/>"))
        return reply.slot.put["url"], reply.slot.get["url"]

    async def test_put_through_one_process_get_through_the_others(self):
        import os

        from tests.web_helpers import http_request

        alice = await self.online("alice", "a")  # the slot comes from the first process
        body = os.urandom(5000)
        put, get = await self.slot(alice, len(body))
        first, second, third = self.servers
        status, _, _ = await http_request("PUT", self.at(put, second), body, {"Content-Type": "image/png"})
        self.assertEqual(status, 201)  # signed by the first, stored by the second
        for server in (third, first, second):
            status, _, data = await http_request("GET", self.at(get, server))
            self.assertEqual((status, data), (200, body))
        # One upload per slot, whichever process is asked again.
        status, _, _ = await http_request("PUT", self.at(put, third), body, {"Content-Type": "image/png"})
        self.assertEqual(status, 409)
        # The quota counts what every process stored; expiry on one removes it for all.
        self.assertEqual(third.web.upload.store.used_by(f"alice@{DOMAIN}"), len(body))
        # An upload another process is writing stays; one its dead process left a day ago goes.
        writing, abandoned = (os.path.join(self.upload_dir, f"{c * 32}.part") for c in "ab")
        for path in (writing, abandoned):
            with open(path, "wb") as f:
                f.write(b"half")
        os.utime(abandoned, (0, 0))
        first.web.upload.store.expire(first.web.upload.clock.seconds() + 10 ** 7, 1)
        status, _, _ = await http_request("GET", self.at(get, second))
        self.assertEqual(status, 404)
        self.assertEqual(sorted(os.listdir(self.upload_dir)), [os.path.basename(writing), "slot-secret"])
        # A slot id that is no file, and the secret, are never served.
        for path in ("/upload/slot-secret/x", f"/upload/{'c' * 32}/cat.png", "/upload/../slot-secret"):
            status, _, _ = await http_request("GET", f"http://127.0.0.1:{second.web.port}{path}")
            self.assertEqual(status, 404, path)

    async def test_the_quota_counts_slots_issued_by_every_process(self):
        """A slot issued but not yet used counts against the quota on every
        process: one account's sessions on two processes get no more than the
        quota between them (each process's own count let a second session take
        another quota's worth)."""
        import dataclasses

        for server in self.servers:
            upload = server.web.upload
            upload.policy = dataclasses.replace(upload.policy, quota=6000)
        here = await self.online("alice", "a")  # the first process
        there = await self.online("alice", "b")  # the second
        await self.slot(here, 5000)
        reply = await self.iq(there, "get", f"upload.{DOMAIN}",
                              "<request xmlns='urn:xmpp:http:upload:0' filename='dog.png' size='5000'/>")
        self.assertEqual(reply["type"], "error")
        self.assertIsNotNone(reply.error.firstChildElement())
        self.assertEqual(reply.error.firstChildElement().name, "resource-constraint")
        await self.slot(there, 1000)  # what is left of it is granted

    async def test_a_cluster_without_a_shared_upload_dir_does_not_start(self):
        from xep207.server.tap import Server
        from xep207.startup import StartupError
        from xep207.tap import Options

        options = Options()
        options.parseOptions([*self.server_argv[:-2], "--cluster", self.redis_url, "--node-name", "lonely",
                              "--data-dir", self.data_dir])
        self.assertNotIn("--upload-dir", options.get("upload-dir") or "")
        with self.assertRaises(StartupError) as raised:
            Server(options)
        self.assertIn("--upload-dir", str(raised.exception))


class AcknowledgedAcrossProcesses(ClusterCase):
    """XEP-0198 across processes: a sender's ``<a h/>`` covers a one-to-one
    message only once the process holding the recipient handled it (written,
    its unacknowledged window stored) — or, if that process never says so,
    once it is kept offline. A process killed between receiving a message and
    handling it cannot lose one that was acknowledged."""

    async def mute_process(self, name: str):
        """A process that hears its channel and never answers (as one does
        that dies after reading a message and before handling it)."""
        from twisted.internet import protocol, reactor

        from xep207.cluster.link import RedisAddress

        address = RedisAddress.parse(self.redis_url)
        channel = self.servers[0].cluster.keys.channel(name)
        heard: list[bytes] = []

        class Mute(protocol.Protocol):
            def connectionMade(self):
                self.transport.write(f"SUBSCRIBE {channel}\r\n".encode())

            def dataReceived(self, data):
                heard.append(data)

        client = await protocol.ClientCreator(reactor, Mute).connectTCP(address.host, address.port)
        self.addCleanup(client.transport.loseConnection)
        while not any(b"subscribe" in chunk for chunk in heard):  # its SUBSCRIBE answered
            await self.servers[0].cluster.command("PING")
        return heard

    async def acked(self, client, count: int):
        from tests.sm_helpers import NS_SM

        client.send(f"<r xmlns='{NS_SM}'/>")
        answer = await client.wait_for(lambda e: e.uri == NS_SM and e.name == "a"
                                       and int(e.getAttribute("h")) >= count)
        return int(answer["h"])

    async def test_an_acknowledged_message_waits_for_the_other_process(self):
        from tests.sm_helpers import enable

        alice = await self.online("alice", "a")  # the first process
        carol = await self.online("carol", "c")  # the second
        await enable(alice, resume=False)
        first = self.servers[0].cluster
        # Handled there: confirmed, nothing kept offline.
        alice.send(f"<message to='carol@{DOMAIN}' type='chat'><body>to carol</body></message>")
        await carol.wait_for(is_message("to carol"))
        self.assertEqual(await self.acked(alice, 1), 1)
        self.assertEqual((first.stats["crossings-handled"], first.stats["crossings-unanswered"]), (1, 0))
        # Heard and never handled: the ack waits until it is kept offline for bob.
        heard = await self.mute_process("mute")
        from xep207.cluster.registry import SessionInfo

        first.directory.set("mute", f"bob@{DOMAIN}/b", SessionInfo(available=True))
        alice.send(f"<message to='bob@{DOMAIN}' type='chat'><body>acknowledged</body></message>")
        self.assertEqual(await self.acked(alice, 2), 2)
        self.assertTrue(any(b"acknowledged" in chunk for chunk in heard))  # it did reach the mute process
        self.assertEqual(first.stats["crossings-unanswered"], 1)
        first.directory.set("mute", f"bob@{DOMAIN}/b", None)
        bob = await self.online("bob", "b")  # the third process
        await bob.wait_for(is_message("acknowledged"))


class RoomHomes(ClusterCase):
    async def test_a_room_whose_home_just_died_is_served_by_the_next(self):
        """A process whose heartbeat has not gone stale here yet, but that
        hears nothing (killed): its rooms' stanzas go to their next home."""
        import hashlib

        first = self.servers[0].cluster
        first.live.add("ghost")  # dead, not yet noticed
        nodes = first.live | {first.name}
        room = next(name for name in (f"room{i}" for i in range(1000))
                    if max(nodes, key=lambda n: hashlib.sha1(f"{n}\0{name}".encode()).digest()) == "ghost")
        alice = await self.online("alice", "a")  # on the first process
        alice.send(f"<presence to='{room}@chat.{DOMAIN}/Alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
        joined = await alice.wait_for(lambda e: e.name == "presence" and e.getAttribute("from", "").startswith(room))
        self.assertIsNone(joined.getAttribute("type"), joined.toXml())
        self.assertNotIn("ghost", first.live)
        self.assertEqual(first.stats["room-homes-unreachable"], 1)
