"""XEP-0357 push notifications, with the app server an external XEP-0114
component (the app server may be anywhere; here it is a real component
stream), and the registrations a private node reachable through both doors."""

import os
import sqlite3

from twisted.internet import defer, reactor
from twisted.words.protocols.jabber import component as jabber_component
from twisted.words.protocols.jabber import xmlstream

from tests.doors_helpers import DoorsTestCase, error_of
from tests.server_helpers import DOMAIN
from xep207.hooks import AVAILABILITY_CHANGED

NS_PUSH = "urn:xmpp:push:0"
NS_DATA = "jabber:x:data"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
APP = "push.localhost"
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
OPTIONS = (f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE'><value>"
           "http://jabber.org/protocol/pubsub#publish-options</value></field>"
           "<field var='secret'><value>eruio234vzxc2kla-91</value></field></x>")


def enable(node: str, options: str = OPTIONS, jid: str = APP) -> str:
    return f"<enable xmlns='{NS_PUSH}' jid='{jid}' node='{node}'>{options}</enable>"


def summary(iq) -> dict[str, str]:
    form = iq.pubsub.publish.item.notification.x
    return {f["var"]: str(f.value) for f in form.elements(NS_DATA, "field")}


class AppServer:
    """The XEP-0114 side: collects the iqs the server sends, answers each."""

    def __init__(self, xs):
        self.xs = xs
        self.answer = "result"
        self.received: defer.DeferredQueue = defer.DeferredQueue()
        xs.addObserver("/iq[@type='set']", self._on_iq)

    def _on_iq(self, iq):
        self.received.put(iq)
        if self.answer == "result":
            self.xs.send(xmlstream.toResponse(iq, "result"))
        else:
            response = xmlstream.toResponse(iq, "error")
            error = response.addElement("error")
            error["type"] = "cancel"
            error.addElement(("urn:ietf:params:xml:ns:xmpp-stanzas", "item-not-found"))
            self.xs.send(response)

    def next(self):
        return self.received.get().addTimeout(10, reactor)


class PushTestCase(DoorsTestCase):
    server_args = DoorsTestCase.server_args + ("--component", f"{APP}=s3cret", "--component-port", "0")

    async def setUp(self):
        await super().setUp()
        self.app = AppServer(await self.connect_component())

    def connect_component(self):
        factory = jabber_component.componentFactory(APP, "s3cret")
        factory.maxRetries = 0
        ready = defer.Deferred()
        factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, lambda xs: ready.called or ready.callback(xs))
        factory.addBootstrap(xmlstream.INIT_FAILED_EVENT, lambda f: ready.called or ready.errback(f))
        port = self.server.listeners[-1]._port.getHost().port
        connector = reactor.connectTCP("127.0.0.1", port, factory)
        self.addCleanup(factory.stopTrying)
        self.addCleanup(connector.disconnect)
        return ready.addTimeout(10, reactor)

    async def enable_and_leave(self, node="alice-token"):
        alice = await self.online("alice", "phone")
        self.assert_ok(await self.iq(alice, "set", None, enable(node)))
        await self.logout(alice)
        await self.server.quiesce()


class Push(PushTestCase):
    async def test_offline_message_is_pushed_as_a_summary(self):
        bob = await self.online("bob", "desk")
        alice = await self.online("alice", "phone")
        self.assert_ok(await self.iq(alice, "set", None, enable("alice-token")))
        self.chat(bob, ALICE, "while you are here")  # delivered: no push
        await alice.wait_for(lambda e: e.name == "message" and e.body is not None)
        await self.logout(alice)
        await self.server.quiesce()
        self.chat(bob, ALICE, "first secret words")
        iq = await self.app.next()
        self.assertEqual((iq["from"], iq["to"], iq.pubsub.publish["node"]), (ALICE, APP, "alice-token"))
        self.assertEqual(summary(iq), {"FORM_TYPE": "urn:xmpp:push:summary", "message-count": "1",
                                       "last-message-sender": f"{BOB}/desk"})
        self.assertNotIn("secret words", iq.toXml())  # no bodies unless configured
        self.assertEqual([c.name for c in iq.pubsub.elements()], ["publish", "publish-options"])
        self.assertIn("eruio234vzxc2kla-91", iq.pubsub.toXml())  # the publish-options, as enabled
        self.chat(bob, ALICE, "second")
        self.assertEqual(summary(await self.app.next())["message-count"], "2")
        alice = await self.online("alice", "laptop")  # back: the count starts again
        await self.logout(alice)
        await self.server.quiesce()
        self.chat(bob, ALICE, "third")
        self.assertEqual(summary(await self.app.next())["message-count"], "1")

    async def test_error_from_the_app_server_disables_the_registration(self):
        await self.enable_and_leave()
        self.assertEqual(len((await self.server.storage.page_items(ALICE, NS_PUSH)).items), 1)
        self.app.answer = "error"
        bob = await self.online("bob", "desk")
        self.chat(bob, ALICE, "hello?")
        await self.app.next()
        await self.settle(bob)
        self.assertEqual(list((await self.server.storage.page_items(ALICE, NS_PUSH)).items), [])

    async def test_disable_and_bad_requests(self):
        alice = await self.online("alice", "phone")
        for body, condition in ((f"<enable xmlns='{NS_PUSH}' jid='{APP}'/>", "bad-request"),
                                (f"<enable xmlns='{NS_PUSH}' node='n'/>", "bad-request"),
                                (f"<enable xmlns='{NS_PUSH}' jid='a@@b' node='n'/>", "bad-request"),
                                (enable("n", options="<x xmlns='jabber:x:data' type='form'/>"), "bad-request"),
                                (enable("x" * 2000), "bad-request"),
                                (f"<disable xmlns='{NS_PUSH}'/>", "bad-request")):
            self.assertEqual(error_of(await self.iq(alice, "set", None, body))[0], condition, body[:60])
        # Not to someone else's account.
        self.assertEqual(error_of(await self.iq(alice, "set", BOB, enable("n")))[0], "service-unavailable")
        for node in ("one", "two", "two"):  # enabling twice: one registration
            self.assert_ok(await self.iq(alice, "set", None, enable(node)))
        self.assert_ok(await self.iq(alice, "set", None, enable("three", jid="other.example")))
        self.assertEqual(len((await self.server.storage.page_items(ALICE, NS_PUSH)).items), 3)
        self.assert_ok(await self.iq(alice, "set", None, f"<disable xmlns='{NS_PUSH}' jid='{APP}' node='one'/>"))
        self.assertEqual(len((await self.server.storage.page_items(ALICE, NS_PUSH)).items), 2)
        self.assert_ok(await self.iq(alice, "set", None, f"<disable xmlns='{NS_PUSH}' jid='{APP}'/>"))
        remaining = (await self.server.storage.page_items(ALICE, NS_PUSH)).items
        self.assertEqual([("other.example" in i.payload) for i in remaining], [True])

    async def test_both_doors(self):
        """The registrations are alice's private node: she reads and writes it
        through XEP-0060 too; bob cannot learn it exists."""
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        self.assert_ok(await self.iq(alice, "set", None, enable("legacy-door")))
        items = await self.items(alice, ALICE, NS_PUSH)
        self.assert_ok(items)
        self.assertIn("legacy-door", items.toXml())
        for reply in (await self.items(bob, ALICE, NS_PUSH),
                      await self.publish(bob, ALICE, NS_PUSH, enable("intruder", options="")),
                      await self.subscribe(bob, ALICE, NS_PUSH, jid=BOB),
                      await self.iq(bob, "set", ALICE, f"<pubsub xmlns='{NS_PUBSUB}#owner'>"
                                                       f"<delete node='{NS_PUSH}'/></pubsub>"),
                      await self.iq(bob, "get", ALICE, "<query xmlns='http://jabber.org/protocol/disco#info' "
                                                       f"node='{NS_PUSH}'/>")):
            self.assertEqual(error_of(reply)[0], "item-not-found", reply.toXml())
        nodes = await self.iq(bob, "get", ALICE, "<query xmlns='http://jabber.org/protocol/disco#items'/>")
        self.assertNotIn(NS_PUSH, nodes.toXml())
        self.assertEqual(error_of(await self.publish(alice, ALICE, NS_PUSH, "<garbage xmlns='x'/>"))[0],
                         "bad-request")
        self.assert_ok(await self.publish(alice, ALICE, NS_PUSH, enable("pubsub-door", options="")))
        self.assert_ok(await self.iq(alice, "set", None,
                                     f"<disable xmlns='{NS_PUSH}' jid='{APP}' node='legacy-door'/>"))
        items = await self.items(alice, ALICE, NS_PUSH)
        self.assertNotIn("legacy-door", items.toXml())
        await self.logout(alice)
        await self.server.quiesce()
        self.chat(bob, ALICE, "to the pubsub-door registration")
        iq = await self.app.next()
        self.assertEqual(iq.pubsub.publish["node"], "pubsub-door")
        self.assertEqual([c.name for c in iq.pubsub.elements()], ["publish"])  # none were given

    async def test_advertised_on_the_account(self):
        alice = await self.online("alice", "phone")
        info = await self.iq(alice, "get", ALICE, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
        self.assertIn(NS_PUSH, [f["var"] for f in info.query.elements() if f.name == "feature"])


class PushFollowsTheDelivery(PushTestCase):
    """A push says "a message waits for you": it follows the delivery's verdict
    (the message was kept offline), not a second guess at who is online."""

    async def test_a_party_whose_only_session_has_negative_priority_is_pushed(self):
        """RFC 6121 §8.5.2.1.1: a message to the bare JID never reaches a
        negative-priority resource; it waits offline, so the phone is woken."""
        alice = await self.online("alice", "phone", presence=False)
        self.assert_ok(await self.iq(alice, "set", None, enable("alice-token")))
        alice.send("<presence><priority>-1</priority></presence>")
        bob = await self.online("bob", "desk")
        await self.settle(alice)
        self.chat(bob, ALICE, "are you there?")
        iq = await self.app.next()
        self.assertEqual((iq["from"], summary(iq)["message-count"]), (ALICE, "1"))
        self.assertEqual([e for e in alice.stanzas if e.name == "message" and e.body is not None], [])

    async def test_a_blocked_contacts_message_is_not_pushed(self):
        """XEP-0191: what alice blocked never reaches her, nor her app server."""
        alice = await self.online("alice", "phone")
        self.assert_ok(await self.iq(alice, "set", None, enable("alice-token")))
        self.assert_ok(await self.iq(alice, "set", None,
                                     f"<block xmlns='urn:xmpp:blocking'><item jid='{BOB}'/></block>"))
        await self.logout(alice)
        await self.server.quiesce()
        bob = await self.online("bob", "desk")
        carol = await self.online("carol", "desk")
        self.chat(bob, ALICE, "let me in")
        await self.settle(bob)
        self.chat(carol, ALICE, "hello from carol")
        iq = await self.app.next()  # the first push is carol's: bob's never came
        self.assertEqual(summary(iq)["last-message-sender"], f"carol@{DOMAIN}/desk")
        self.assertEqual(summary(iq)["message-count"], "1")


class PushMemory(PushTestCase):
    async def test_what_was_pushed_is_remembered_only_for_accounts_that_push(self):
        """The ids pushed per account (to drop a repeat) are kept for accounts
        with a registration, until they come back online: not for every
        account that ever missed a message."""
        bob = await self.online("bob", "desk")
        self.chat(bob, f"carol@{DOMAIN}", "carol never enabled push")
        await self.settle(bob)
        await self.server.quiesce()
        push = self.server.push
        self.assertNotIn(f"carol@{DOMAIN}", push.pushed)
        await self.enable_and_leave()
        self.chat(bob, ALICE, "for alice")
        await self.app.next()
        self.assertEqual(len(push.pushed[ALICE]), 1)
        alice = await self.online("alice", "laptop")
        await self.settle(alice)
        self.assertNotIn(ALICE, push.pushed)  # (back online: forgotten)


class PushRepeats(PushTestCase):
    async def test_a_bodyless_message_in_between_does_not_make_a_repeat_pushed_again(self):
        """What was pushed stays remembered across a receipt or chat state
        kept meanwhile (nothing to wake for): the repeat is still dropped."""
        from xep207.storage.records import Item

        await self.enable_and_leave()
        push = self.server.push
        told = Item("a1", f"<message from='{BOB}/desk' to='{ALICE}' type='chat'><body>one</body></message>",
                    f"{BOB}/desk")
        receipt = Item("r1", f"<message from='{BOB}/desk' to='{ALICE}' type='chat'>"
                             "<received xmlns='urn:xmpp:receipts' id='x'/></message>", f"{BOB}/desk")
        push.on_kept_offline(None, told, ALICE)
        self.assertEqual(summary(await self.app.next())["message-count"], "1")
        push.on_kept_offline(None, receipt, ALICE)
        push.on_kept_offline(None, told, ALICE)  # (another session of alice's missed it too)
        await self.server.quiesce()
        later = Item("a2", f"<message from='carol@{DOMAIN}/desk' to='{ALICE}' type='chat'><body>two</body>"
                           "</message>", f"carol@{DOMAIN}/desk")
        push.on_kept_offline(None, later, ALICE)
        pushed = summary(await self.app.next())  # the next push is carol's: the repeat was dropped
        self.assertEqual((pushed["last-message-sender"], pushed["message-count"]), (f"carol@{DOMAIN}/desk", "2"))


class PushWithBodies(PushTestCase):
    server_args = PushTestCase.server_args + ("--push-body",)

    async def test_body_included_when_configured(self):
        await self.enable_and_leave()
        bob = await self.online("bob", "desk")
        self.chat(bob, ALICE, "words for the lock screen")
        self.assertEqual(summary(await self.app.next())["last-message-body"], "words for the lock screen")


class PushAfterEarlyDelivery(PushTestCase):
    """A one-to-one message reaches an online recipient before its commit
    (``test_early_delivery``); the push decision is made at the commit."""

    storage = "sqlite"
    server_args = PushTestCase.server_args + ("--push-body",)

    def storage_url(self):
        self.path = os.path.join(self.data_dir, "xep207.sqlite")
        return f"sqlite:///{self.path}?busy_timeout=30000"

    async def test_a_message_read_before_its_commit_is_not_pushed(self):
        bob = await self.online("bob", "desk")
        alice = await self.online("alice", "phone")
        self.assert_ok(await self.iq(alice, "set", None, enable("alice-token")))
        for body in ("one", "two"):  # the conversation exists, bob's verdict remembered
            self.chat(bob, ALICE, body)
            await alice.wait_for(lambda e, body=body: e.name == "message" and e.body is not None
                                 and str(e.body) == body)
        await self.ping(bob)
        locker = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(locker.close)
        locker.execute("BEGIN EXCLUSIVE")
        self.chat(bob, ALICE, "read early")
        await alice.wait_for(lambda e: e.name == "message" and e.body is not None and str(e.body) == "read early")
        away: defer.Deferred = defer.Deferred()
        self.server.hooks.add(AVAILABILITY_CHANGED, lambda session: away.called or session.available
                              or away.callback(None))
        alice.send("<presence type='unavailable'/>")
        await away  # (her presence's retraction waits for the lock too)
        locker.execute("ROLLBACK")
        await self.server.quiesce()
        self.chat(bob, ALICE, "while away")
        self.assertEqual(summary(await self.app.next())["last-message-body"], "while away")
