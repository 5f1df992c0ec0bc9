"""XEP-0077 account self-service for a logged-in user, with open registration
off: password change and account removal, through real streams (raw stanzas
and slixmpp's xep_0077)."""

from twisted.internet import reactor

from tests.doors_helpers import ROOM_JID, RoomDoorsTestCase, error_of, from_room
from tests.server_helpers import DOMAIN, PASSWORD, ServerTestCase
from xep207.server import sasl

NS_REGISTER = "jabber:iq:register"
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"


def register_query(body: str) -> str:
    return f"<query xmlns='{NS_REGISTER}'>{body}</query>"


def presence_from(sender: str, type=None):
    return lambda e: (e.name == "presence" and e.getAttribute("from") == sender
                      and e.getAttribute("type") == type)


class PasswordChange(RoomDoorsTestCase):
    storage = "sqlite"  # the file is searched for the password

    async def login_fails(self, user: str, password: str) -> bytes:
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        from tests.server_helpers import plain_auth

        client.send(plain_auth(user, password))
        return await client.expect("</failure>")

    async def test_new_password_works_old_fails_other_sessions_reset(self):
        laptop = await self.online("alice", "laptop")
        phone = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        reply = await self.iq(laptop, "set", None,
                              register_query("<username>alice</username><password>a new secret</password>"))
        self.assertEqual(reply["type"], "result", reply.toXml())
        ended = await phone.closed.addTimeout(10, reactor)
        self.assertIn(b"<reset xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", ended)
        await self.ping(laptop)  # the session that changed it stays
        await self.ping(bob)  # nobody else is touched
        self.assertIn(b"not-authorized", await self.login_fails("alice", PASSWORD))
        again = await self.connect()
        await again.login("alice", "a new secret", resource="again")
        # Only SCRAM keys are stored.
        account = await self.server.storage.get_account(ALICE)
        stored, _ = sasl.scram_keys("a new secret", account.salt, account.iterations, "sha256")
        self.assertEqual(stored, account.stored_key_sha256)
        database = self.storage_url()[len("sqlite:///"):]
        for path in (database, database + "-wal"):
            with open(path, "rb") as f:
                self.assertNotIn(b"a new secret", f.read())

    async def test_addressed_to_the_server_or_own_jid_only(self):
        alice = await self.online("alice", "r")
        for to in (DOMAIN, ALICE):
            reply = await self.iq(alice, "set", to,
                                  register_query("<username>alice</username><password>changed " + to
                                                 + "</password>"))
            self.assertEqual(reply["type"], "result", reply.toXml())
        # Bob's bare JID is not a registration service.
        reply = await self.iq(alice, "set", BOB,
                              register_query("<username>alice</username><password>through bob</password>"))
        self.assertEqual(error_of(reply)[0], "service-unavailable")
        reply = await self.iq(alice, "set", BOB, register_query("<remove/>"))
        self.assertEqual(error_of(reply)[0], "service-unavailable")
        self.assertIsNotNone(await self.server.storage.get_account(BOB))
        self.assertIsNotNone(await self.server.storage.get_account(ALICE))
        bob = await self.connect()
        await bob.login("bob")  # his password did not change

    async def test_bad_requests_change_nothing_and_the_session_survives(self):
        alice = await self.online("alice", "r")
        before = await self.server.storage.get_account(ALICE)
        cases = [
            ("<username>bob</username><password>bobs new pass</password>", "bad-request"),
            ("<username>nobody@elsewhere</username><password>some new pass</password>", "bad-request"),
            ("<username>a@b@c</username><password>some new pass</password>", "bad-request"),
            ("<password>no username given</password>", "bad-request"),
            ("<username>alice</username>", "bad-request"),
            ("<username>alice</username><password/>", "not-acceptable"),
            ("<username>alice</username><password>short</password>", "not-acceptable"),
            ("<username>alice</username><password>" + "x" * 5000 + "</password>", "not-acceptable"),
            ("<username>alice</username><password>control\x7fchar</password>", "not-acceptable"),
            ("<username>alice</username><password>\u00ad\u00ad\u00ad\u00ad\u00ad\u00ad\u00ad</password>",
             "not-acceptable"),  # nothing left after SASLprep
            ("<remove/><username>alice</username>", "bad-request"),
        ]
        for body, condition in cases:
            reply = await self.iq(alice, "set", None, register_query(body))
            self.assertEqual(error_of(reply)[0], condition, body[:80])
        self.assertEqual(await self.server.storage.get_account(ALICE), before)
        await self.ping(alice)
        # The form: registered, with the username.
        reply = await self.iq(alice, "get", None, register_query(""))
        self.assertIsNotNone(reply.query.registered)
        self.assertEqual(str(reply.query.username), "alice")
        # Case-folded username (nodeprep) is the same account.
        reply = await self.iq(alice, "set", None,
                              register_query("<username>ALICE</username><password>upper case ok</password>"))
        self.assertEqual(reply["type"], "result", reply.toXml())

    async def test_removal(self):
        """bob removes his account: result first, then <not-authorized/>; his
        other session ends too; alice (a contact both ways, in a room with
        him) sees him go."""
        alice = await self.online("alice", "phone")
        desk = await self.online("bob", "desk")
        laptop = await self.online("bob", "laptop")
        for watcher, watched, watched_jid in ((alice, desk, BOB), (desk, alice, ALICE)):
            watcher.send(f"<presence to='{watched_jid}' type='subscribe'/>")
            await watched.wait_for(presence_from(watcher.jid.split("/")[0], "subscribe"))
            watched.send(f"<presence to='{watcher.jid.split('/')[0]}' type='subscribed'/>")
            await watcher.wait_for(presence_from(watched_jid, "subscribed"))
        await self.join(alice, "Alice")
        await self.join(desk, "Bob")
        await alice.wait_for(from_room(ROOM_JID, "Bob"))
        await self.settle(alice, desk, laptop)
        since = len(alice.stanzas)

        desk.send(f"<iq type='set' id='bye'>{register_query('<remove/>')}</iq>")
        ended = await desk.closed.addTimeout(10, reactor)
        result = ended.find(b"id='bye'")
        error = ended.find(b"<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>")
        self.assertTrue(0 < result < error, ended[-500:])
        self.assertIn(b"type='result'", ended[result - 100:error])
        self.assertIn(b"<not-authorized", await laptop.closed.addTimeout(10, reactor))

        await alice.wait_for(presence_from(f"{BOB}/desk", "unavailable"))
        await alice.wait_for(presence_from(f"{BOB}/laptop", "unavailable"))
        await alice.wait_for(presence_from(BOB, "unsubscribed"))  # he no longer shares his presence
        await alice.wait_for(presence_from(BOB, "unsubscribe"))  # nor wants hers
        await alice.wait_for(from_room(ROOM_JID, "Bob", "unavailable"))
        await self.settle(alice)
        self.assertEqual(await self.roster(alice), {})
        self.assertIsNone(await self.server.storage.get_account(BOB))
        self.assertEqual(await self.server.storage.list_nodes(BOB), [])
        self.assertEqual(await self.server.storage.get_entity_subscriptions(BOB), [])
        # alice's messages to him now bounce as to nobody.
        alice.send(f"<message to='{BOB}' type='chat' id='late'><body>still there?</body></message>")
        bounced = await alice.wait_for(lambda e: e.getAttribute("id") == "late")
        self.assertEqual(error_of(bounced)[0], "service-unavailable")
        self.assertGreater(len(alice.stanzas), since)

    async def test_reregistered_account_sees_nothing_old(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        alice.send(f"<presence to='{BOB}' type='subscribe'/>")
        await bob.wait_for(presence_from(ALICE, "subscribe"))
        bob.send(f"<presence to='{ALICE}' type='subscribed'/>")
        bob.send(f"<message to='{ALICE}' type='chat'><body>old bob says</body></message>")
        await alice.wait_for(lambda e: e.name == "message" and e.body is not None)
        await self.settle(alice, bob)
        bob.send(f"<iq type='set' id='bye'>{register_query('<remove/>')}</iq>")
        await bob.closed.addTimeout(10, reactor)
        await self.server.accounts.add_user("bob", "a new bobs password")
        new_bob = await self.connect()
        await new_bob.login("bob", "a new bobs password", resource="new")
        new_bob.send("<presence/>")
        await self.settle(new_bob, alice)
        self.assertEqual(await self.roster(new_bob), {})
        self.assertEqual(await self.mam(new_bob), [])
        self.assertEqual([e for e in new_bob.stanzas if e.name == "presence"
                          and e.getAttribute("from", "").startswith(ALICE)], [])
        self.assertEqual([e for e in new_bob.stanzas if e.name == "message"], [])
        # alice's old subscription does not carry over: she must ask again.
        alice.send(f"<presence to='{BOB}' type='subscribe'/>")
        await new_bob.wait_for(presence_from(ALICE, "subscribe"))
        subscription = await self.server.storage.get_subscription(BOB, "presence", ALICE)
        self.assertEqual(subscription.state, "pending")


class WithSlixmpp(ServerTestCase):
    """slixmpp's own xep_0077 plugin, over STARTTLS with SCRAM, registration off."""

    users = ("alice", "bob")

    async def test_change_password_then_cancel(self):
        await self.start_server()
        report = await self.run_client("account_scenario.py", "127.0.0.1", self.port, DOMAIN, PASSWORD)
        self.assertEqual(report["changed"], "result")
        self.assertEqual(report["old_password"], "refused")
        self.assertEqual(report["new_password"], "logged in")
        self.assertEqual(report["cancel"], "result")
        self.assertEqual(report["bob_saw"], ["unavailable", "unsubscribed"])
        self.assertIsNone(await self.server.storage.get_account(ALICE))


class RemovalWhileTheDatabaseIsLocked(ServerTestCase):
    """The database is unusable when a removal comes: it is refused (type
    wait), nothing is half done, the session goes on; once the database is
    back, the same request removes the account."""

    server_args = ("--no-tls", "--allow-plaintext-auth")
    storage = "sqlite"

    def storage_url(self):
        self.path = self.data_dir + "/xep207.sqlite"
        return f"sqlite:///{self.path}?busy_timeout=200"

    async def test_refused_then_done(self):
        import sqlite3

        await self.start_server()
        phone = await self.connect()
        await phone.login("alice", resource="phone")
        laptop = await self.connect()
        await laptop.login("alice", resource="laptop")
        locker = sqlite3.connect(self.path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            phone.send(f"<iq type='set' id='bye'>{register_query('<remove/>')}</iq>")
            refused = await phone.wait_for(lambda e: e.getAttribute("id") == "bye", timeout=20)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        self.assertEqual((error_of(refused)[0], refused.error["type"]), ("internal-server-error", "wait"))
        phone.send("<iq type='get' id='still'><ping xmlns='urn:xmpp:ping'/></iq>")
        self.assertEqual((await phone.wait_for(lambda e: e.getAttribute("id") == "still"))["type"], "result")
        self.assertIsNotNone(await self.server.storage.get_account(ALICE))
        phone.send(f"<iq type='set' id='bye2'>{register_query('<remove/>')}</iq>")
        for client in (phone, laptop):
            self.assertIn(b"<not-authorized", await client.closed.addTimeout(10, reactor))
        self.assertIsNone(await self.server.storage.get_account(ALICE))
