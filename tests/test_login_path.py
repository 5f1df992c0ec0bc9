"""The login path's shortcuts (issue 13) against the general code they stand in
for, and logins end to end where a shortcut could go wrong: SCRAM through
the storage cache (password changed, account gone, unknown users), binding
(odd ids, conflicts), stream restarts with junk, and nothing left for the
garbage collector once a stream is gone."""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import os
import re

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.words.protocols.jabber import jid, xmlstream
from twisted.words.xish import domish

from tests.server_helpers import DOMAIN, PASSWORD, STREAM_HEADER, ServerTestCase, quiet_server_stream
from xep207.hooks import Hooks
from xep207.server import idle_parser
from xep207.server.c2s import NS_BIND, NS_CLIENT, NS_SASL, RateWindow, bind_result, sasl_text
from xep207.server.stream import NS_STREAMS, _opening

ODD = ["plain", "it's", 'say "hi"', "a<b>&c", "&amp;", "caf\u00e9 \u2603", " spaced ", "\t"]


def negotiating_stream():
    """A stream set up as ``ClientNegotiator.streamStarted`` sets it (what ``serialize`` depends on)."""
    stream = quiet_server_stream()
    stream.namespace = NS_CLIENT
    stream.prefixes = {NS_STREAMS: "stream"}
    return stream


class WrittenAsSerialized(unittest.TestCase):
    """Texts written directly are exactly what serializing the element wrote."""

    def test_sasl_challenge_and_success(self):
        stream = negotiating_stream()
        for name in ("challenge", "success"):
            for data in ("", "=", base64.b64encode(os.urandom(40)).decode("ascii"), "dj1hYmM="):
                element = domish.Element((NS_SASL, name))
                if data:
                    element.addContent(data)
                self.assertEqual(sasl_text(name, data), stream.serialize(element))

    def test_bind_result_for_odd_requests(self):
        stream = negotiating_stream()
        fulls = [f"alice@{DOMAIN}/phone", f"alice@{DOMAIN}/a&b<c>'\"d", f"alice@{DOMAIN}/\u2603 x"]
        requests = [{}, {"id": "b1"}, {"id": ""}, {"to": DOMAIN}, {"to": ""}, {"from": "alice@localhost/x"}]
        requests += [{"id": odd} for odd in ODD] + [{"id": odd, "to": odd, "from": odd} for odd in ODD]
        for attributes in requests:
            for full in fulls:
                iq = domish.Element((NS_CLIENT, "iq"), attribs={"type": "set", **attributes})
                iq.addElement((NS_BIND, "bind")).addElement("resource", content="ignored")
                expected = xmlstream.toResponse(iq, "result")
                expected.addElement((NS_BIND, "bind")).addElement("jid", content=full)
                self.assertEqual(bind_result(iq, full), stream.serialize(expected), (attributes, full))

    def test_usual_client_header_for_the_idle_parser(self):
        roots = []
        parser = domish.elementStream()
        parser.DocumentStartEvent = roots.append
        parser.parse(STREAM_HEADER.format(domain=DOMAIN).encode())
        self.assertEqual(idle_parser.header_for(roots[0]), idle_parser.derived_header(roots[0]))
        # Another spelling of the same header (prefix order, other quotes): the same answer.
        parser = domish.elementStream()
        parser.DocumentStartEvent = roots.append
        parser.parse(b'<stream:stream xmlns:stream="http://etherx.jabber.org/streams" to="x" '
                     b'xmlns="jabber:client">')
        self.assertEqual(idle_parser.header_for(roots[1]), idle_parser.derived_header(roots[1]))
        # Anything else is derived (here: one more declaration).
        parser = domish.elementStream()
        parser.DocumentStartEvent = roots.append
        parser.parse(b"<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams' "
                     b"xmlns:x='urn:x'>")
        self.assertEqual(idle_parser.header_for(roots[2]), idle_parser.derived_header(roots[2]))
        self.assertIn(b"xmlns:x=", idle_parser.header_for(roots[2]))


    def test_usual_client_header_for_more_hosts_than_are_kept(self):
        """The header's start is quoted once per host and kept for a bounded
        number of hosts: past the bound, each host still gets its own."""
        def header(host: str, general: bool) -> tuple[tuple, bytes]:
            stream = negotiating_stream()
            transport = StringTransport()
            stream.makeConnection(transport)
            stream.initiating = False  # (a client's stream, as ``streamStarted`` leaves it)
            stream.thisEntity = jid.JID(host)
            stream.sid = "s1"
            stream.version = (1, 0)
            if general:
                stream.sendHeader()
            else:
                stream.send_header("")
            roots: list[domish.Element] = []
            parser = domish.elementStream()
            parser.DocumentStartEvent = roots.append
            parser.parse(transport.value())
            return (roots[0].uri, roots[0].defaultUri, roots[0].attributes), transport.value()

        hosts = [f"host{i}.example" for i in range(150)] + ["caf\u00e9.example"]
        for host in hosts + hosts[:10]:  # (again: from what is kept, or quoted anew)
            meaning, written = header(host, general=False)
            self.assertEqual(meaning, header(host, general=True)[0])  # (domish quotes the id otherwise)
            self.assertEqual(meaning[2]["from"], host)
            self.assertTrue(written.startswith(_opening(NS_CLIENT, host).encode()))
        self.assertEqual(_opening.cache_info().currsize, _opening.cache_info().maxsize)


class ThrottleWindows(unittest.TestCase):
    """A key nobody failed as is answered without a look at the window: as before."""

    def test_unseen_keys(self):
        clock = task.Clock()
        self.assertFalse(RateWindow(clock, 3, 60).exceeded("10.0.0.1"))
        self.assertTrue(RateWindow(clock, 0, 60).exceeded("10.0.0.1"))  # a limit of none: always over

    def test_keys_that_failed(self):
        clock = task.Clock()
        window = RateWindow(clock, 2, 60)
        window.record("a")
        self.assertFalse(window.exceeded("a"))
        window.record("a")
        self.assertTrue(window.exceeded("a"))
        clock.advance(61)
        self.assertFalse(window.exceeded("a"))
        self.assertFalse(window.exceeded("a"))  # forgotten meanwhile: the unseen case again


class HandlersDoneAlready(unittest.TestCase):
    """``Hooks.fire`` waits only for what has not happened yet."""

    def test_fired_deferreds_are_not_waited_for_and_failures_still_logged(self):
        hooks = Hooks()
        later: defer.Deferred = defer.Deferred()
        hooks.add("event", lambda: defer.succeed("done"))
        hooks.add("event", lambda: defer.fail(ValueError("broken")))
        hooks.add("event", lambda: later)
        fired = hooks.fire("event")
        self.assertFalse(fired.called)  # the one still running
        later.callback(None)
        self.assertTrue(fired.called)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertTrue(Hooks().fire("event").called)
        hooks = Hooks()
        hooks.add("event", lambda: defer.succeed(None))
        self.assertTrue(hooks.fire("event").called)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class ScramSha1:
    """The client side of SCRAM-SHA-1 (RFC 5802), as the benchmark's clients log in."""

    def __init__(self, user: str, password: str = PASSWORD):
        self.user, self.password = user, password
        self.first_bare = f"n={user},r={os.urandom(9).hex()}"

    def auth(self) -> str:
        return f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>{b64(('n,,' + self.first_bare).encode())}</auth>"

    def response(self, challenge: bytes) -> str:
        text = challenge.rsplit(b"<challenge", 1)[1].split(b">", 1)[1].split(b"<", 1)[0]
        self.server_first = base64.b64decode(text).decode()
        fields = dict(part.split("=", 1) for part in self.server_first.split(","))
        self.salt, self.iterations = base64.b64decode(fields["s"]), int(fields["i"])
        salted = hashlib.pbkdf2_hmac("sha1", self.password.encode(), self.salt, self.iterations)
        client_key = hmac.new(salted, b"Client Key", "sha1").digest()
        without_proof = f"c=biws,r={fields['r']}"
        auth_message = f"{self.first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.new(hashlib.sha1(client_key).digest(), auth_message, "sha1").digest()
        server_key = hmac.new(salted, b"Server Key", "sha1").digest()
        self.server_signature = hmac.new(server_key, auth_message, "sha1").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        return f"<response xmlns='{NS_SASL}'>{b64(f'{without_proof},p={b64(proof)}'.encode())}</response>"


class ScramLogins(ServerTestCase):
    """SCRAM-SHA-1 + bind over real sockets, on the default storage (SQLite,
    where the cache answers logins)."""

    storage = "sqlite"
    server_args = ("--no-tls", "--allow-plaintext-auth", "--max-auth-failures", "1000",
                   "--max-account-auth-failures", "1000")

    async def setUp(self):
        await self.start_server()

    async def attempt(self, user: str, password: str = PASSWORD) -> tuple[str, ScramSha1, object]:
        """One SCRAM exchange: its outcome ('success' or the failure's condition)."""
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        scram = ScramSha1(user, password)
        client.send(scram.auth())
        client.send(scram.response(await client.expect("</challenge>")))
        start = client._cursor
        while True:  # tag by tag: a success or a failure, whichever comes
            await client.expect(">")
            text = client.received[start:client._cursor]
            if b"</success>" in text:
                return "success", scram, client
            failure = re.search(rb"<failure[^>]*><([a-z-]+)", text)
            if failure and b"</failure>" in text:
                return failure.group(1).decode(), scram, client

    async def test_success_proves_the_server_and_binds(self):
        outcome, scram, client = await self.attempt("alice")
        self.assertEqual(outcome, "success")
        self.assertEqual(scram.iterations, 4096)
        success = client.received.rsplit(b"<success", 1)[1]
        self.assertIn(f">{b64(b'v=' + b64(scram.server_signature).encode())}</success>".encode(), success)
        client.header()
        features = await client.expect("</stream:features>")
        self.assertIn(f"<bind xmlns='{NS_BIND}'/>".encode(), features)

    async def test_the_account_is_read_once_and_every_change_is_seen(self):
        backend = self.server.storage.backend
        reads = []
        original = backend.get_account

        def counted(jid):
            reads.append(jid)
            return original(jid)

        backend.get_account = counted
        for _ in range(3):
            self.assertEqual((await self.attempt("alice"))[0], "success")
        self.assertEqual(reads, [f"alice@{DOMAIN}"])  # then from the cache
        self.assertEqual((await self.attempt("alice", "not-the-password"))[0], "not-authorized")
        await self.server.accounts.change_password(f"alice@{DOMAIN}", "a new password")
        self.assertEqual((await self.attempt("alice"))[0], "not-authorized")
        self.assertEqual((await self.attempt("alice", "a new password"))[0], "success")
        await self.server.accounts.delete_user(f"alice@{DOMAIN}")
        self.assertEqual((await self.attempt("alice", "a new password"))[0], "not-authorized")
        await self.server.accounts.add_user(f"alice@{DOMAIN}", "the third one")
        self.assertEqual((await self.attempt("alice", "the third one"))[0], "success")

    async def test_unknown_users_get_the_same_exchange(self):
        outcomes = []
        for _ in range(2):  # the second from the cache: the same decoy
            outcome, scram, _ = await self.attempt("nobody")
            outcomes.append((outcome, scram.salt, scram.iterations))
        self.assertEqual(outcomes[0], outcomes[1])
        self.assertEqual(outcomes[0][0], "not-authorized")
        self.assertEqual((len(outcomes[0][1]), outcomes[0][2]), (16, 4096))
        await self.server.accounts.add_user(f"nobody@{DOMAIN}", "now somebody")
        self.assertEqual((await self.attempt("nobody", "now somebody"))[0], "success")


class Binding(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def setUp(self):
        await self.start_server()

    async def bind(self, client, resource: str | None, ident: str = "b") -> domish.Element:
        await client.authenticate("alice")
        requested = "" if resource is None else f"<resource>{resource}</resource>"
        client.send(f"<iq type='set' id={quoted(ident)}><bind xmlns='{NS_BIND}'>{requested}</bind></iq>")
        start = client._cursor
        await client.expect("</iq>")
        return parsed(client.received[start:client._cursor])

    async def test_odd_ids_come_back_exactly(self):
        for ident in ODD[:-1]:  # (not the tab: an attribute's tab is read as a space)
            client = await self.connect()
            answer = await self.bind(client, "phone" + str(ODD.index(ident)), ident)
            self.assertEqual((answer["type"], answer.getAttribute("id")), ("result", ident))
            jid = str(answer.bind.jid)
            self.assertEqual(jid, f"alice@{DOMAIN}/phone{ODD.index(ident)}")

    async def test_generated_and_escaped_resources(self):
        client = await self.connect()
        answer = await self.bind(client, None)
        self.assertRegex(str(answer.bind.jid), rf"^alice@{DOMAIN}/[0-9a-f]{{12}}$")
        client = await self.connect()
        answer = await self.bind(client, "a&amp;b&lt;c&gt;'\"")
        self.assertEqual(str(answer.bind.jid), f"alice@{DOMAIN}/a&b<c>'\"")

    async def test_a_second_connection_with_the_resource_replaces_the_first(self):
        first, second = await self.connect(), await self.connect()
        self.assertEqual((await self.bind(first, "phone"))["type"], "result")
        answer = await self.bind(second, "phone")
        self.assertEqual(answer["type"], "result")
        self.assertIn(b"<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", await first.closed)
        self.assertIs(self.server.router.session(f"alice@{DOMAIN}/phone").stream,
                      self.server.router.session(f"alice@{DOMAIN}/phone").stream)
        second.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        start = second._cursor
        await second.expect("/>")
        self.assertEqual(parsed(second.received[start:second._cursor])["type"], "result")

    async def test_junk_instead_of_the_restarted_header(self):
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        token = b64(f"\0alice\0{PASSWORD}".encode())
        client.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        await client.expect("<success")
        client.send("<<not xml at all")
        self.assertIn(b"<not-well-formed", await client.closed)
        self.assertEqual(self.server.router.resources(f"alice@{DOMAIN}"), [])

    async def test_bytes_after_the_auth_belong_to_the_old_stream(self):
        """A client that sends its restarted header in the same packet as
        ``<auth/>`` (RFC 6120 §6.4.6: the new stream starts after
        ``<success/>``): an element there is dropped with the old stream; an
        XML declaration there is not well-formed in the old one."""
        token = b64(f"\0alice\0{PASSWORD}".encode())
        header = STREAM_HEADER.format(domain=DOMAIN)
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        client.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>" + header.split("?>", 1)[1])
        await client.expect("<success")
        client.header()
        await client.expect("</stream:features>")
        self.assertEqual(client.received.count(b"<stream:stream"), 2)  # one header per stream we started
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        client.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>" + header)
        self.assertIn(b"<not-well-formed", await client.closed)


def parsed(text: bytes) -> domish.Element:
    """The one stanza in ``text``, read as a client reads it."""
    stanzas = []
    parser = domish.elementStream()
    parser.DocumentStartEvent = lambda root: None
    parser.ElementEvent = stanzas.append
    parser.parse(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
                 + text.strip())
    assert len(stanzas) == 1, text
    return stanzas[0]


def quoted(value: str) -> str:
    return "'" + domish.escapeToXml(value, 1) + "'"


class NothingForTheCollector(ServerTestCase):
    """A login and its logout leave no cycle of the server's stream objects behind."""

    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def setUp(self):
        await self.start_server()

    async def test_streams_parsers_and_negotiators_are_freed_at_once(self):
        from xep207.server.c2s import ClientNegotiator
        from xep207.server.stream import ServerStream

        warm = await self.connect()
        await warm.login("alice", resource="warm")
        gc.collect()
        self.addCleanup(gc.set_debug, 0)
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for n in range(3):
                client = await self.connect()
                await client.login("alice", resource=f"r{n}")
                client.send("</stream:stream>")
                await client.closed
            await self.server.router.in_flight.drain()
            gc.collect()
            ours = [o for o in gc.garbage if isinstance(o, (ServerStream, ClientNegotiator))
                    or type(o).__name__ == "xmlparser" and "ServerStream" in getattr(
                        getattr(o, "StartElementHandler", None), "__qualname__", "")]
        finally:
            del gc.garbage[:]
        self.assertEqual(ours, [])


class CacheWhileTheDatabaseFails(unittest.TestCase):
    """Logins are answered from memory only while the database works: once it
    has failed, they ask it (and are refused as everything else is) until it
    answers again."""

    async def test_logins_go_to_a_failing_database(self):
        import sqlite3

        from tests.peers import temp_dir
        from xep207.metrics import TimedStorage
        from xep207.storage.cache import CachingStorage
        from xep207.storage.interface import StorageUnavailable
        from xep207.storage.sqlite import SQLiteStorage
        from xep207.testing.contract import account

        path = os.path.join(temp_dir(self), "x.sqlite")
        storage = CachingStorage(TimedStorage(SQLiteStorage(f"sqlite:///{path}?busy_timeout=50")))
        await storage.start()
        self.addCleanup(storage.stop)
        await storage.create_account(account())
        self.assertIsNotNone(await storage.get_login_account("juliet@example.org"))  # now remembered
        self.assertEqual(await storage.get_entity_subscriptions("juliet@example.org"), [])  # this too
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            self.assertIsNotNone(await storage.get_login_account("juliet@example.org"))  # not known to fail yet
            with self.assertRaises(StorageUnavailable):
                await storage.get_node("s", "n")  # anything that finds the database unusable
            with self.assertRaises(StorageUnavailable):
                await storage.get_login_account("juliet@example.org")
            with self.assertRaises(StorageUnavailable):
                await storage.get_entity_subscriptions("juliet@example.org")
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        self.assertIsNotNone(await storage.get_login_account("juliet@example.org"))  # asked, and it answered
        self.assertFalse(storage.backend.unavailable)


class NamedEvents(unittest.TestCase):
    """A stream's named events (connected, started, ended) go to their
    observers as before; with none registered at all, nothing is walked."""

    def test_named_events_with_and_without_observers(self):
        stream = quiet_server_stream()
        self.assertFalse(stream.dispatch(None, xmlstream.STREAM_END_EVENT))
        seen = []
        stream.addObserver(xmlstream.STREAM_END_EVENT, seen.append)
        self.assertTrue(stream.dispatch("gone", xmlstream.STREAM_END_EVENT))
        self.assertFalse(stream.dispatch("other", xmlstream.STREAM_START_EVENT))
        stream.removeObserver(xmlstream.STREAM_END_EVENT, seen.append)
        self.assertFalse(stream.dispatch("again", xmlstream.STREAM_END_EVENT))
        stream.addOnetimeObserver(xmlstream.STREAM_START_EVENT, seen.append)
        self.assertTrue(stream.dispatch("once", xmlstream.STREAM_START_EVENT))
        self.assertFalse(stream.dispatch("twice", xmlstream.STREAM_START_EVENT))
        self.assertEqual(seen, ["gone", "once"])


class CacheBounds(unittest.TestCase):
    """The subscriptions kept are bounded by how many there are, not by how
    many entities: a few large rosters cannot fill memory."""

    async def test_large_answers_are_not_kept_and_small_ones_make_room(self):
        from xep207.storage.cache import CachingStorage
        from xep207.storage.memory import MemoryStorage
        from xep207.storage.records import Node, NodeConfig, Subscription

        backend = MemoryStorage()
        storage = CachingStorage(backend, max_subscriptions=10)
        reads: list[str] = []
        original = backend.get_entity_subscriptions

        def counted(entity, *args):
            reads.append(entity)
            return original(entity, *args)

        backend.get_entity_subscriptions = counted
        for i in range(12):
            await storage.create_node(Node("s", f"n{i}", NodeConfig(), "o@x"))
            await storage.set_subscription(Subscription("s", f"n{i}", "big@x"))
        for i in range(3):
            await storage.set_subscription(Subscription("s", f"n{i}", f"small{i}@x"))
        for _ in range(2):
            self.assertEqual(len(await storage.get_entity_subscriptions("big@x")), 12)
        self.assertEqual(reads.count("big@x"), 2)  # 13 > 10: never kept
        for entity in ("small0@x", "small1@x", "small0@x", "small1@x"):
            self.assertEqual(len(await storage.get_entity_subscriptions(entity)), 1)
        self.assertEqual(reads.count("small0@x") + reads.count("small1@x"), 2)  # kept: 2 + 2 of 10
        for entity in ("small2@x", "small0@x"):
            await storage.get_entity_subscriptions(entity)
        self.assertEqual(reads.count("small0@x"), 1)
        for i in range(5):  # 6 units kept, 5 more: the least recently used (small1) goes
            await storage.get_entity_subscriptions(f"none{i}@x")
        await storage.get_entity_subscriptions("small1@x")
        self.assertEqual(reads.count("small1@x"), 2)


class MechanismSteps(unittest.TestCase):
    """A step answers at once when the account is at hand, and the same
    answer later when it is still being read (PostgreSQL, a cache miss)."""

    def exchange(self, mechanism, user: str, password: str, pending: defer.Deferred | None, account):
        """(server-first, outcome) of a SCRAM-SHA-1 exchange; the outcome a
        Success or the SASLFailure's condition."""
        from xep207.server import sasl

        first = mechanism.start(f"n,,n={user},r=client".encode())
        if pending is not None:
            self.assertIsInstance(first, defer.Deferred)
            self.assertFalse(first.called)
            pending.callback(account)
            first = self.successResultOf(first)
        self.assertIsInstance(first, sasl.Challenge)
        scram = ScramSha1(user, password)
        scram.first_bare = f"n={user},r=client"
        response = scram.response(b"<challenge>" + b64(first.data).encode() + b"</challenge>")
        data = base64.b64decode(response.split(">", 1)[1].split("<", 1)[0])
        try:
            return first.data, mechanism.respond(data)
        except sasl.SASLFailure as failure:
            return first.data, failure.condition

    def test_scram_at_once_and_later(self):
        from xep207.server import sasl

        account = sasl.make_account("alice", DOMAIN, PASSWORD)
        for user, password, known in (("alice", PASSWORD, account), ("alice", "wrong", account),
                                      ("nobody", PASSWORD, None)):
            at_once = sasl.Scram("SCRAM-SHA-1", lambda u: defer.succeed(known), nonce=lambda: "N", secret=b"s" * 32)
            pending: defer.Deferred = defer.Deferred()
            later = sasl.Scram("SCRAM-SHA-1", lambda u: pending, nonce=lambda: "N", secret=b"s" * 32)
            now = self.exchange(at_once, user, password, None, known)
            then = self.exchange(later, user, password, pending, known)
            self.assertEqual(now, then)
            self.assertEqual(now[1] if isinstance(now[1], str) else "success",
                             "success" if password == PASSWORD and known else "not-authorized")

    def test_plain_at_once_and_later(self):
        from xep207.server import sasl

        account = sasl.make_account("alice", DOMAIN, PASSWORD)
        for password in (PASSWORD, "wrong"):
            outcomes = []
            for lookup_now in (True, False):
                pending: defer.Deferred = defer.Deferred()
                plain = sasl.Plain(lambda u: defer.succeed(account) if lookup_now else pending)
                try:
                    answer = plain.respond(f"\0alice\0{password}".encode())
                    if not lookup_now:
                        pending.callback(account)
                        answer = self.successResultOf(answer) if password == PASSWORD else self.failureResultOf(
                            answer, sasl.SASLFailure).value.condition
                except sasl.SASLFailure as failure:
                    answer = failure.condition
                outcomes.append(answer.user if isinstance(answer, sasl.Success) else answer)
            self.assertEqual(outcomes[0], outcomes[1])
            self.assertEqual(outcomes[0], "alice" if password == PASSWORD else "not-authorized")
