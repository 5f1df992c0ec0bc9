"""A pending request is answered once (XEP-0060 §8.6, RFC 6121 §3.1.4).

Two answers at once each read the request pending: the owner's two doors
(a legacy 'subscribed' and a native authorization form or §8.8.2 change), or a
crossing's two sides on two processes of a cluster (the flaky
``CrossingThroughXEP0060InCluster``: the contact heard 'subscribed' twice).
``ReadsMeet`` holds those reads until both are out, so that each answer reads
"pending" every time, not one run in a thousand; only the answer whose write
finds the request still pending may tell anyone.
"""

from __future__ import annotations

from twisted.internet import defer

from tests.cluster_helpers import ClusterMixin
from tests.doors_helpers import NS_PUBSUB
from tests.test_presence_roster import JULIET, ROMEO, PresenceTestCase, is_result
from xep207.hooks import SUBSCRIPTION_CHANGED
from xep207.pubsub.kinds import PRESENCE_NODE
from xep207.storage.records import NONE, PENDING, SUBSCRIBED

KEY = (JULIET, PRESENCE_NODE, ROMEO)


class ReadsMeet:
    """The next ``count`` reads of one subscription through ``storages``
    answer together, once all were issued: each says what was stored before
    any of the readers wrote (what reads on two processes see when they cross)."""

    def __init__(self, test, storages, key: tuple[str, str, str], count: int = 2):
        self.key, self.count = key, count
        self.held: list[tuple[defer.Deferred, defer.Deferred]] = []
        for storage in set(storages):
            test.patch(storage, "get_subscription", self._holding(storage.get_subscription))

    def _holding(self, read):
        def get_subscription(service, node_id, subscriber):
            answer = read(service, node_id, subscriber)
            if (service, node_id, subscriber) != self.key or len(self.held) >= self.count:
                return answer
            out: defer.Deferred = defer.Deferred()
            self.held.append((answer, out))
            if len(self.held) == self.count:
                defer.gatherResults([a for a, _ in self.held]).addCallbacks(self._release, self._fail)
            return out
        return get_subscription

    def _release(self, results):
        for (_, out), result in zip(self.held, results):
            out.callback(result)

    def _fail(self, failure):
        for _, out in self.held:
            out.errback(failure)


def is_subscription_event(state: str):
    return lambda e: e.name == "message" and e.event is not None and f"subscription='{state}'" in e.toXml()


class AnswersAtOnce(PresenceTestCase):
    """In one process (memory storage): the owner's two doors answer at once."""

    def answering_engines(self):
        """The engines the two answers go through (here: the one server's)."""
        return self.server.engine, self.server.engine

    def all_servers(self):
        return [self.server]

    async def pending_request(self):
        """Romeo asks natively (XEP-0060) for juliet's presence; it is pending.
        Returns his client and the list every engine's changes to it land in."""
        romeo = await self.online("romeo", "mobile")
        romeo.send(f"<iq type='set' id='sub' to='{JULIET}'><pubsub xmlns='{NS_PUBSUB}'>"
                   f"<subscribe node='{PRESENCE_NODE}' jid='{ROMEO}'/></pubsub></iq>")
        reply = await romeo.wait_for(is_result("sub"))
        self.assertEqual(reply.pubsub.subscription["subscription"], PENDING, reply.toXml())
        await self.quiesce()
        changes: list = []
        for server in self.all_servers():
            server.engine.hooks.add(SUBSCRIPTION_CHANGED, lambda change: changes.append(change)
                                    if (change.subscription.service, change.subscription.node_id,
                                        change.subscription.subscriber) == KEY else None)
        return romeo, changes

    async def quiesce(self):
        for server in self.all_servers():
            await server.quiesce()

    async def told(self, romeo, state: str) -> int:
        """How many notifications of ``state`` romeo got, once the servers are idle."""
        await romeo.wait_for(is_subscription_event(state))
        await self.quiesce()
        romeo.send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
        await romeo.wait_for(is_result("ping"))
        return len([e for e in romeo.stanzas if is_subscription_event(state)(e)])

    async def stored_state(self):
        subscription = await self.server.storage.get_subscription(*KEY)
        return NONE if subscription is None else subscription.state

    async def at_once(self, *answers):
        """Start the answers (callables taking an engine) with their reads held
        until all are out; their outcomes, as ``DeferredList`` gives them."""
        engines = self.answering_engines()
        ReadsMeet(self, [e.storage for e in engines], KEY, count=len(answers))
        started = [defer.ensureDeferred(answer(engine)) for answer, engine in zip(answers, engines)]
        return await defer.DeferredList(started, consumeErrors=True)

    async def test_two_approvals_at_once_tell_the_subscriber_once(self):
        """A legacy 'subscribed' (the owner's bare JID answers) and a native
        authorization form (a full JID) both read the request pending: one
        approves, the other is told it was answered; romeo hears it once."""
        romeo, changes = await self.pending_request()
        outcomes = await self.at_once(
            lambda engine: engine.answer_authorization(JULIET, JULIET, PRESENCE_NODE, ROMEO, True),
            lambda engine: engine.answer_authorization(f"{JULIET}/tablet", JULIET, PRESENCE_NODE, ROMEO, True))
        self.assertEqual(sorted(ok for ok, _ in outcomes), [False, True])
        refused = next(result for ok, result in outcomes if not ok)
        self.assertEqual(getattr(refused.value, "condition", None), "unexpected-request", refused)
        self.assertEqual([(c.previous, c.subscription.state) for c in changes], [(PENDING, SUBSCRIBED)])
        self.assertEqual(await self.told(romeo, SUBSCRIBED), 1)
        self.assertEqual(await self.stored_state(), SUBSCRIBED)

    async def test_an_authorization_and_a_subscriptions_change_at_once(self):
        """§8.6 and §8.8.2 approving together: both succeed (it is approved, as
        each asked), and it happened once."""
        romeo, changes = await self.pending_request()
        outcomes = await self.at_once(
            lambda engine: engine.answer_authorization(JULIET, JULIET, PRESENCE_NODE, ROMEO, True),
            lambda engine: engine.set_node_subscriptions(f"{JULIET}/tablet", JULIET, PRESENCE_NODE,
                                                         [(ROMEO, SUBSCRIBED)]))
        self.assertEqual(outcomes[1], (True, []))  # nothing failed: it is approved, first or not
        if not outcomes[0][0]:  # the change came first
            self.assertEqual(getattr(outcomes[0][1].value, "condition", None), "unexpected-request")
        self.assertEqual([(c.previous, c.subscription.state) for c in changes], [(PENDING, SUBSCRIBED)])
        self.assertEqual(await self.told(romeo, SUBSCRIBED), 1)
        self.assertEqual(await self.stored_state(), SUBSCRIBED)

    async def test_an_approval_and_a_denial_at_once(self):
        """Whichever answer comes first decides; romeo hears that one only,
        and what is stored agrees with it."""
        romeo, changes = await self.pending_request()
        outcomes = await self.at_once(
            lambda engine: engine.answer_authorization(JULIET, JULIET, PRESENCE_NODE, ROMEO, True),
            lambda engine: engine.answer_authorization(f"{JULIET}/tablet", JULIET, PRESENCE_NODE, ROMEO, False))
        self.assertEqual(sorted(ok for ok, _ in outcomes), [False, True])
        self.assertEqual(len(changes), 1, changes)
        decided = changes[0].subscription.state
        self.assertEqual(await self.stored_state(), decided)
        told = "none" if decided == NONE else decided
        self.assertEqual(await self.told(romeo, told), 1)
        other = SUBSCRIBED if decided == NONE else "none"
        self.assertEqual([e.toXml() for e in romeo.stanzas if is_subscription_event(other)(e)], [])

    async def legacy_answer_crossing_an_approval(self, answer: str):
        """Juliet's legacy ``answer`` to romeo's pending request, at once with her
        native client's approval (both reads held until both are out); fires
        once her stream has handled the legacy one: (romeo, changes, juliet)."""
        romeo, changes = await self.pending_request()
        juliet = await self.online("juliet", "balcony")
        await self.quiesce()
        legacy, native = self.answering_engines()
        ReadsMeet(self, [legacy.storage, native.storage], KEY)
        juliet.send(f"<presence to='{ROMEO}' type='{answer}'/>")
        await defer.DeferredList(
            [native.answer_authorization(f"{JULIET}/tablet", JULIET, PRESENCE_NODE, ROMEO, True)],
            consumeErrors=True)
        juliet.send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
        await juliet.wait_for(is_result("ping"))
        return romeo, changes, juliet

    async def test_a_legacy_subscribed_that_finds_it_answered_is_no_error(self):
        """Juliet's legacy 'subscribed' and her native client's approval at
        once: whichever loses finds it answered. The legacy one is then no
        error for her (§3.1.5: nothing to answer), and romeo hears 'subscribed' once."""
        romeo, changes, juliet = await self.legacy_answer_crossing_an_approval("subscribed")
        self.assertEqual(await self.told(romeo, SUBSCRIBED), 1)
        self.assertEqual([(c.previous, c.subscription.state) for c in changes], [(PENDING, SUBSCRIBED)])
        self.assertEqual([e.toXml() for e in juliet.stanzas if e.getAttribute("type") == "error"], [])
        self.assertEqual(await self.stored_state(), SUBSCRIBED)

    async def test_a_legacy_unsubscribed_that_finds_it_approved_cancels_it(self):
        """Juliet's legacy 'unsubscribed' crosses her native approval: if the
        approval came first, the 'unsubscribed' cancels it (§3.2) rather than
        fail; either way romeo ends without her presence, and she gets no error."""
        romeo, changes, juliet = await self.legacy_answer_crossing_an_approval("unsubscribed")
        self.assertEqual(await self.told(romeo, NONE), 1)
        self.assertEqual(changes[-1].subscription.state, NONE)
        self.assertEqual([e.toXml() for e in juliet.stanzas if e.getAttribute("type") == "error"], [])
        self.assertEqual(await self.stored_state(), NONE)


class AnswersAtOnceSQLite(AnswersAtOnce):
    """SQLite behind the server's cache: reads may come from memory."""

    storage = "sqlite"


class AnswersAtOnceInCluster(ClusterMixin, AnswersAtOnce):
    """Romeo on one process, the two answers on the two others (the crossing)."""

    def answering_engines(self):
        return self.servers[1].engine, self.servers[2].engine

    def all_servers(self):
        return self.servers
