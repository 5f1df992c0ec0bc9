"""Attacks on account self-service and administration (XEP-0077 for a
logged-in user, XEP-0133 ad-hoc commands), through real streams: what an
attacker or a fussy client found, each test failing before its fix."""

from twisted.internet import defer, reactor

from tests.doors_helpers import PUBSUB, DoorsTestCase, error_of
from tests.server_helpers import DOMAIN, PASSWORD
from tests.test_service_admin import NS_ADMIN, NS_COMMANDS, NS_DATA
from xep207.hooks import SUBSCRIPTION_CHANGED
from xep207.pubsub.kinds.pair import pair_node_id
from xep207.server import accounts

NS_REGISTER = "jabber:iq:register"
ALICE, BOB, BOSS = f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"boss@{DOMAIN}"
BIND = ("<iq type='set' id='late-bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        "<resource>late</resource></bind></iq>")


def register_query(body: str) -> str:
    return f"<query xmlns='{NS_REGISTER}'>{body}</query>"


class RevokedCredentials(DoorsTestCase):
    """A stream that authenticated before its credentials were revoked (the
    account removed, or its password changed) and binds afterwards."""

    async def authenticated_unbound(self, user: str):
        client = await self.connect()
        await client.authenticate(user)
        return client

    async def test_authenticated_before_removal_cannot_bind_as_the_new_owner_of_the_name(self):
        """bob authenticates a second stream and keeps it unbound; he removes
        his account; somebody else registers ``bob``: the old stream must not
        bind as the new account (before the fix it did)."""
        stale = await self.authenticated_unbound("bob")
        desk = await self.online("bob", "desk")
        desk.send(f"<iq type='set' id='bye'>{register_query('<remove/>')}</iq>")
        self.assertIn(b"<not-authorized", await desk.closed.addTimeout(10, reactor))
        await accounts.create_account(self.server.engine, BOB, "the new bob's password")
        stale.send(BIND)
        ended = await stale.closed.addTimeout(10, reactor)
        self.assertNotIn(b"<jid>", ended)
        self.assertIn(b"<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", ended)
        self.assertEqual(self.server.router.resources(BOB), [])

    async def test_authenticated_before_password_change_cannot_bind_after(self):
        stale = await self.authenticated_unbound("alice")
        alice = await self.online("alice", "laptop")
        reply = await self.iq(alice, "set", None,
                              register_query("<username>alice</username><password>a new secret</password>"))
        self.assertEqual(reply["type"], "result", reply.toXml())
        stale.send(BIND)
        ended = await stale.closed.addTimeout(10, reactor)
        self.assertNotIn(b"<jid>", ended)
        self.assertIn(b"<reset xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", ended)
        await self.ping(alice)  # the session that changed it stays
        again = await self.connect()
        await again.login("alice", "a new secret", resource="again")  # new streams are not affected

    async def test_admin_password_change_and_deletion_revoke_too(self):
        """The same through the running server's account control (the admin
        socket and XEP-0133 use it)."""
        stale_alice = await self.authenticated_unbound("alice")
        stale_bob = await self.authenticated_unbound("bob")
        await self.server.accounts.change_password(ALICE, "an admin's choice")
        await self.server.accounts.delete_user(BOB)
        for stale, condition in ((stale_alice, b"<reset"), (stale_bob, b"<not-authorized")):
            stale.send(BIND)
            ended = await stale.closed.addTimeout(10, reactor)
            self.assertNotIn(b"<jid>", ended)
            self.assertIn(condition, ended)
        carol = await self.online("carol", "r")  # nobody else is touched
        await self.ping(carol)


class AdminNameRegistration(DoorsTestCase):
    """With open registration, the name of a configured admin is not for the
    taking: whoever registered ``boss`` would run XEP-0133 commands."""

    server_args = DoorsTestCase.server_args + ("--registration", "--admin", BOSS)
    users = ("alice", "boss")

    async def register(self, username: str, password: str = "a stranger's password"):
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        body = register_query(f"<username>{username}</username><password>{password}</password>")
        client.send(f"<iq type='set' id='reg'>{body}</iq>")
        return await client.expect("id='reg'")

    async def test_a_removed_admins_name_cannot_be_registered_in_band(self):
        boss = await self.online("boss", "desk")
        boss.send(f"<iq type='set' id='bye'>{register_query('<remove/>')}</iq>")
        self.assertIn(b"<not-authorized", await boss.closed.addTimeout(10, reactor))
        for name in ("boss", "BOSS"):
            answer = await self.register(name)
            self.assertIn(b"type='error'", answer[-400:])
            self.assertIn(b"<not-allowed", answer[-400:])
        self.assertIsNone(await self.server.storage.get_account(BOSS))
        # Others still register; the operator still creates the admin.
        self.assertIn(b"type='result'", (await self.register("newcomer"))[-200:])
        await self.server.accounts.add_user(BOSS, PASSWORD)
        boss = await self.online("boss", "desk")
        reply = await self.iq(boss, "set", DOMAIN,
                              f"<command xmlns='{NS_COMMANDS}' node='{NS_ADMIN}#get-registered-users-num'/>")
        self.assertEqual(reply.command["status"], "completed", reply.toXml())


class AdHocForms(DoorsTestCase):
    server_args = DoorsTestCase.server_args + ("--admin", BOSS)
    users = ("alice", "boss")

    async def test_duplicate_fields_are_a_bad_request(self):
        """A form naming one field twice (wokkel refuses to parse it) is the
        client's error, not the server's; nothing changes, the session stays."""
        boss = await self.online("boss", "desk")
        first = await self.iq(boss, "set", DOMAIN, f"<command xmlns='{NS_COMMANDS}' "
                                                   f"node='{NS_ADMIN}#delete-user'/>")
        form = (f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
                f"<value>{NS_ADMIN}</value></field>"
                f"<field var='accountjids'><value>{ALICE}</value></field>"
                f"<field var='accountjids'><value>{BOSS}</value></field></x>")
        reply = await self.iq(boss, "set", DOMAIN,
                              f"<command xmlns='{NS_COMMANDS}' node='{NS_ADMIN}#delete-user' action='complete' "
                              f"sessionid='{first.command['sessionid']}'>{form}</command>")
        self.assertEqual(error_of(reply)[0], "bad-request", reply.toXml())
        self.assertIsNotNone(await self.server.storage.get_account(ALICE))
        await self.ping(boss)


class DuplicateFieldsElsewhere(DoorsTestCase):
    """The same malformed form where other handlers read forms."""

    async def test_publish_options_and_archive_query(self):
        alice = await self.online("alice", "r")
        twice = (f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
                 "<value>{ns}</value></field><field var='{var}'><value>a</value></field>"
                 "<field var='{var}'><value>b</value></field></x>")
        form = twice.format(ns="http://jabber.org/protocol/pubsub#publish-options", var="pubsub#access_model")
        reply = await self.iq(alice, "set", ALICE,
                              "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='twice'>"
                              f"<item><x xmlns='urn:example'/></item></publish>"
                              f"<publish-options>{form}</publish-options></pubsub>")
        self.assertEqual(error_of(reply)[0], "bad-request", reply.toXml())
        form = twice.format(ns="urn:xmpp:mam:2", var="with")
        reply = await self.iq(alice, "set", None, f"<query xmlns='urn:xmpp:mam:2'>{form}</query>")
        self.assertEqual(error_of(reply)[0], "bad-request", reply.toXml())
        await self.ping(alice)


class RemovalRace(DoorsTestCase):
    users = ("alice", "bob", "zed")

    async def test_a_conversation_started_during_removal_does_not_outlive_it(self):
        """alice writes to bob (the XEP-0060 door) while his removal is half
        done (his pair nodes already gone, his account not yet): no pair node
        may survive for a new ``bob`` to read (before the fix it did). The
        removal's own event (bob's subscription to zed's node ending, which comes
        after the pair nodes) is the moment."""
        engine = self.server.engine
        zed = f"zed@{DOMAIN}"
        await engine.create_node(zed, zed, "feed", {"pubsub#access_model": "open"})
        await engine.subscribe(f"{BOB}/r", zed, "feed", BOB)
        node = pair_node_id(ALICE, BOB)
        attempts = []

        def mid_removal(change):
            if change.subscription.service == zed and change.subscription.subscriber == BOB:
                attempts.append(defer.ensureDeferred(engine.publish(
                    f"{ALICE}/r", PUBSUB, node,
                    [(None, "<message xmlns='jabber:client' type='chat'><body>for the old bob</body></message>")])))

        self.server.hooks.add(SUBSCRIPTION_CHANGED, mid_removal)
        await self.server.accounts.delete_user(BOB)
        self.assertEqual(len(attempts), 1)
        await defer.DeferredList(attempts, consumeErrors=True)
        await accounts.create_account(engine, BOB, PASSWORD)
        self.assertIsNone(await engine.storage.get_node(PUBSUB, node))
        bob = await self.online("bob", "new")
        reply = await self.items(bob, PUBSUB, node)
        self.assertNotIn("for the old bob", reply.toXml())


class PushAmplification(DoorsTestCase):
    """Every offline message sends one iq per registration, each carrying its
    publish-options form: 16 registrations of a 60 KiB form would turn one
    short message into a megabyte sent to whoever the account named."""

    async def test_publish_options_form_is_bounded_through_both_doors(self):
        alice = await self.online("alice", "phone")
        big = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>"
               "http://jabber.org/protocol/pubsub#publish-options</value></field>"
               f"<field var='secret'><value>{'s' * 20000}</value></field></x>")
        enable = f"<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n'>{big}</enable>"
        reply = await self.iq(alice, "set", None, enable)
        self.assertEqual(error_of(reply)[0], "not-acceptable", reply.toXml()[-300:])
        reply = await self.publish(alice, ALICE, "urn:xmpp:push:0", enable)
        self.assertEqual(error_of(reply)[0], "not-acceptable", reply.toXml()[-300:])
        items = await self.items(alice, ALICE, "urn:xmpp:push:0")
        self.assertNotIn("sssss", items.toXml())
        # An ordinary form still works.
        small = big.replace("s" * 20000, "eruio234vzxc2kla-91")
        reply = await self.iq(alice, "set", None, small.join(enable.split(big)))
        self.assertEqual(reply["type"], "result", reply.toXml())

    async def test_the_owner_cannot_lift_the_bound_on_registrations(self):
        """Through XEP-0060 the owner may configure her push node; raising its
        max_items would lift the bound on registrations (each one an iq per
        offline message)."""
        from tests.doors_helpers import NODE_CONFIG, NS_OWNER, form

        alice = await self.online("alice", "phone")
        reply = await self.iq(alice, "set", None, "<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n0'/>")
        self.assertEqual(reply["type"], "result", reply.toXml())
        reply = await self.iq(alice, "set", ALICE, f"<pubsub xmlns='{NS_OWNER}'><configure node='urn:xmpp:push:0'>"
                                                   f"{form(NODE_CONFIG, {'pubsub#max_items': '1000'})}"
                                                   "</configure></pubsub>")
        self.assertEqual(error_of(reply)[0], "not-acceptable", reply.toXml())
        for n in range(1, 20):
            reply = await self.iq(alice, "set", None,
                                  f"<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n{n}'/>")
            self.assertEqual(reply["type"], "result", reply.toXml())
        items = await self.items(alice, ALICE, "urn:xmpp:push:0")
        self.assertEqual(len(list(items.pubsub.items.elements())), 16)
        # Nor by creating the node herself, before any <enable/>.
        bob = await self.online("bob", "desk")
        reply = await self.iq(bob, "set", BOB, f"<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                                               "<create node='urn:xmpp:push:0'/><configure>"
                                               f"{form(NODE_CONFIG, {'pubsub#max_items': 'max'})}"
                                               "</configure></pubsub>")
        self.assertEqual(error_of(reply)[0], "not-acceptable", reply.toXml())


class AdminSocketAbuse(DoorsTestCase):
    """The admin socket of an in-process server, spoken to badly."""

    async def channel(self):
        import os

        from twisted.internet import endpoints
        from twisted.protocols import amp

        endpoint = endpoints.UNIXClientEndpoint(reactor, os.path.join(self.data_dir, "admin.sock"))
        channel = await endpoints.connectProtocol(endpoint, amp.AMP())
        self.addCleanup(channel.transport.loseConnection)
        return channel

    async def test_garbage_and_concurrent_commands(self):
        from twisted.internet import protocol as tprotocol

        from xep207.server import admin_channel as ac

        # Not AMP at all: the connection is dropped, the server serves the next one.
        import os

        from twisted.internet import endpoints

        garbage = await endpoints.connectProtocol(
            endpoints.UNIXClientEndpoint(reactor, os.path.join(self.data_dir, "admin.sock")), tprotocol.Protocol())
        lost = defer.Deferred()
        garbage.connectionLost = lambda reason: lost.callback(None)
        garbage.transport.write(b"\xff\xff" + b"x" * 70000 + b"\x00\x00")
        await lost.addTimeout(10, reactor)
        channel = await self.channel()
        # Both deletions of one account at once: one deletes, the other is refused.
        outcomes = await defer.DeferredList([channel.callRemote(ac.DelUser, jid="carol"),
                                             channel.callRemote(ac.DelUser, jid="carol")], consumeErrors=True)
        self.assertEqual(sorted(ok for ok, _ in outcomes), [False, True])
        failure = next(value for ok, value in outcomes if not ok)
        self.assertIsInstance(failure.value, accounts.AccountError)
        self.assertIsNone(await self.server.storage.get_account(f"carol@{DOMAIN}"))
        # A kick of an empty resource is not a kick of the whole account.
        alice = await self.online("alice", "phone")
        with self.assertRaises(accounts.AccountError):
            await channel.callRemote(ac.Kick, jid=f"{ALICE}/")
        await self.ping(alice)


class AdHocDeleteUsers(DoorsTestCase):
    server_args = DoorsTestCase.server_args + ("--admin", BOSS)
    users = ("alice", "bob", "boss")

    async def command(self, client, name: str, fields: str):
        first = await self.iq(client, "set", DOMAIN, f"<command xmlns='{NS_COMMANDS}' node='{NS_ADMIN}#{name}'/>")
        form = (f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
                f"<value>{NS_ADMIN}</value></field>{fields}</x>")
        return await self.iq(client, "set", DOMAIN,
                             f"<command xmlns='{NS_COMMANDS}' node='{NS_ADMIN}#{name}' action='complete' "
                             f"sessionid='{first.command['sessionid']}'>{form}</command>")

    async def test_an_error_answer_means_nothing_was_deleted(self):
        """delete-user of [alice, ghost]: item-not-found, and alice is still there
        (before the fix alice was gone behind an error answer)."""
        boss = await self.online("boss", "desk")
        reply = await self.command(boss, "delete-user", f"<field var='accountjids'><value>{ALICE}</value>"
                                                        f"<value>ghost@{DOMAIN}</value></field>")
        self.assertEqual(error_of(reply)[0], "item-not-found", reply.toXml())
        self.assertIsNotNone(await self.server.storage.get_account(ALICE))
        # The same account twice is one deletion, not an error after it.
        reply = await self.command(boss, "delete-user", f"<field var='accountjids'><value>{ALICE}</value>"
                                                        "<value>ALICE</value></field>")
        self.assertEqual(reply.command["status"], "completed", reply.toXml())
        self.assertIsNone(await self.server.storage.get_account(ALICE))
        for jids, condition in (([f"bob@elsewhere.example"], "not-acceptable"), (["a@b@c"], "not-acceptable")):
            values = "".join(f"<value>{j}</value>" for j in jids)
            reply = await self.command(boss, "delete-user", f"<field var='accountjids'>{values}</field>")
            self.assertEqual(error_of(reply)[0], condition, reply.toXml())
        # add-user of an existing account, of another domain: refused, nothing changed.
        before = await self.server.storage.get_account(BOB)
        for jid, condition in ((BOB, "conflict"), ("bob@elsewhere.example", "not-acceptable")):
            reply = await self.command(boss, "add-user", f"<field var='accountjid'><value>{jid}</value></field>"
                                                         "<field var='password'><value>a password</value></field>"
                                                         "<field var='password-verify'><value>a password</value>"
                                                         "</field>")
            self.assertEqual(error_of(reply)[0], condition, reply.toXml())
        self.assertEqual(await self.server.storage.get_account(BOB), before)
        await self.ping(boss)


class ReRegistration(DoorsTestCase):
    """A new account of a removed account's name inherits nothing others gave
    or asked the old one."""

    async def test_pending_requests_roster_and_push_do_not_pass_to_the_new_owner(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        bob.send(f"<presence to='{ALICE}' type='subscribe'/>")  # alice never answers
        await alice.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "subscribe")
        alice.send(f"<presence to='{BOB}' type='subscribe'/>")  # nor does bob
        await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "subscribe")
        self.assertEqual((await self.iq(bob, "set", None, "<enable xmlns='urn:xmpp:push:0' jid='push.example' "
                                                          "node='old'/>"))["type"], "result")
        await self.logout(alice)
        bob.send(f"<iq type='set' id='bye'>{register_query('<remove/>')}</iq>")
        self.assertIn(b"<not-authorized", await bob.closed.addTimeout(10, reactor))
        await accounts.create_account(self.server.engine, BOB, PASSWORD)
        newbob = await self.online("bob", "new")
        alice = await self.online("alice", "phone")
        await self.settle(alice, newbob)
        for client, other in ((alice, BOB), (newbob, ALICE)):
            self.nothing(client, lambda e: e.name == "presence" and e.getAttribute("type") == "subscribe"
                         and e.getAttribute("from") == other)
        self.assertEqual(await self.roster(newbob), {})
        self.assertNotIn(BOB, await self.roster(alice))
        items = await self.items(newbob, BOB, "urn:xmpp:push:0")
        self.assertNotIn("node='old'", items.toXml())
