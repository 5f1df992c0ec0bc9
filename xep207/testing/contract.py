"""The storage contract, executable: mix into a ``twisted.trial.unittest.TestCase``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet import defer

from xep207.storage.interface import AccountExists, IStorage, NodeExists
from xep207.storage.records import (
    NONE,
    OUTCAST,
    OWNER,
    PENDING,
    PUBLISHER,
    SUBSCRIBED,
    VIA_LEGACY,
    Account,
    Item,
    Node,
    NodeConfig,
    Subscription,
)

S = "pubsub.example.org"
PEP = "juliet@example.org"

if TYPE_CHECKING:
    # Seen by the type checker only: at run time the contract stays a plain mixin
    # and the author's own TestCase (trial's, usually) supplies the assertions.
    from twisted.trial.unittest import TestCase as _TestCase
else:
    _TestCase = object

_T = TypeVar("_T")


def _found(record: _T | None) -> _T:
    """A record the test stored, read back: a failed test if the backend lost it."""
    if record is None:
        raise AssertionError("the backend returned None for a record stored just before")
    return record


def account(user: str = "juliet", domain: str = "example.org", marker: bytes = b"1") -> Account:
    return Account(user, domain, b"salt" + marker, 4096, b"sk1" + marker, b"svk1" + marker,
                   b"sk256" + marker, b"svk256" + marker, 1700000000.25)


class StorageContract(_TestCase):
    """Tests every ``IStorage`` must pass. Subclasses provide ``make_storage``."""

    storage: IStorage  # set by setUp (a durable backend's reopen may replace it)

    def make_storage(self) -> IStorage:
        raise NotImplementedError

    async def reopen(self) -> IStorage | None:
        """A second storage on the same data, for durable backends (None: skip)."""
        return None

    def setUp(self):
        self.storage = self.make_storage()
        d = defer.maybeDeferred(self.storage.start)
        self.addCleanup(lambda: defer.maybeDeferred(self.storage.stop))
        return d

    def test_provides_interface(self):
        self.assertTrue(IStorage.providedBy(self.storage))

    # Nodes

    async def test_create_get_list_nodes(self):
        config = NodeConfig(access_model="whitelist", max_items=5, title="t", extra={"muc#x": "1"})
        await self.storage.create_node(Node(S, "b", config, "juliet@example.org", 1.5))
        await self.storage.create_node(Node(S, "a", NodeConfig(), "romeo@example.org"))
        await self.storage.create_node(Node(PEP, "presence", NodeConfig(), PEP))
        node = await self.storage.get_node(S, "b")
        self.assertEqual(node, Node(S, "b", config, "juliet@example.org", 1.5))
        self.assertEqual(await self.storage.list_nodes(S), ["a", "b"])
        self.assertEqual(await self.storage.list_all_nodes(), [(PEP, "presence"), (S, "a"), (S, "b")])
        self.assertIsNone(await self.storage.get_node(S, "missing"))
        self.assertIsNone(await self.storage.get_node(PEP, "b"))

    async def test_create_existing_node_fails(self):
        await self.storage.create_node(Node(S, "a", NodeConfig(), "x@example.org"))
        with self.assertRaises(NodeExists):
            await self.storage.create_node(Node(S, "a", NodeConfig(title="other"), "y@example.org"))
        self.assertEqual(_found(await self.storage.get_node(S, "a")).creator, "x@example.org")

    async def test_set_node_config(self):
        await self.storage.create_node(Node(S, "a", NodeConfig(), "x@example.org"))
        config = NodeConfig(roster_groups_allowed=("friends", "family"), notify_config=True)
        await self.storage.set_node_config(S, "a", config)
        self.assertEqual(_found(await self.storage.get_node(S, "a")).config, config)

    async def test_delete_node_cascades(self):
        await self.storage.create_node(Node(S, "a", NodeConfig(), "x@example.org"))
        await self.storage.set_affiliation(S, "a", "x@example.org", OWNER)
        await self.storage.set_subscription(Subscription(S, "a", "y@example.org/r"))
        await self.storage.put_item(S, "a", Item("1", "<p/>", "x@example.org"), None)
        await self.storage.delete_node(S, "a")
        self.assertIsNone(await self.storage.get_node(S, "a"))
        self.assertEqual(await self.storage.get_affiliations(S, "a"), {})
        self.assertEqual(await self.storage.get_subscriptions(S, "a"), [])
        self.assertEqual(await self.storage.get_entity_subscriptions("y@example.org"), [])
        self.assertEqual((await self.storage.page_items(S, "a")).count, 0)
        # and the node can be created afresh
        await self.storage.create_node(Node(S, "a", NodeConfig(), "z@example.org"))

    # Affiliations

    async def test_affiliations(self):
        await self.storage.set_affiliation(S, "a", "x@example.org", OWNER)
        await self.storage.set_affiliation(S, "a", "y@example.org", PUBLISHER)
        await self.storage.set_affiliation(S, "b", "y@example.org", OUTCAST)
        self.assertEqual(await self.storage.get_affiliations(S, "a"),
                         {"x@example.org": OWNER, "y@example.org": PUBLISHER})
        found = await self.storage.get_entity_affiliations("y@example.org")
        self.assertEqual([(a.node_id, a.affiliation) for a in found], [("a", PUBLISHER), ("b", OUTCAST)])
        await self.storage.set_affiliation(S, "a", "y@example.org", "none")
        self.assertEqual(await self.storage.get_affiliations(S, "a"), {"x@example.org": OWNER})
        self.assertEqual(len(await self.storage.get_entity_affiliations("y@example.org", S)), 1)
        self.assertEqual(await self.storage.get_entity_affiliations("y@example.org", "other"), [])

    # Subscriptions

    async def test_subscriptions(self):
        full = Subscription(S, "a", "romeo@example.org/orchard", options={"roomnick": "r", "n": ["1", "2"]},
                            via=VIA_LEGACY)
        bare = Subscription(S, "a", "romeo@example.org", state=PENDING)
        other = Subscription(PEP, "presence", "romeo@example.org")
        for subscription in (full, bare, other):
            await self.storage.set_subscription(subscription)
        self.assertEqual(await self.storage.get_subscription(S, "a", "romeo@example.org/orchard"), full)
        self.assertEqual(await self.storage.get_subscription(S, "a", "romeo@example.org"), bare)
        self.assertIsNone(await self.storage.get_subscription(S, "a", "romeo@example.org/other"))
        listed = sorted(await self.storage.get_subscriptions(S, "a"), key=lambda s: s.subscriber)
        self.assertEqual(listed, [bare, full])
        everywhere = await self.storage.get_entity_subscriptions("romeo@example.org")
        self.assertEqual(len(everywhere), 3)
        self.assertEqual(await self.storage.get_entity_subscriptions("romeo@example.org", PEP), [other])
        self.assertEqual(
            len(await self.storage.get_entity_subscriptions("romeo@example.org", S, "a")), 2)
        await self.storage.set_subscription(bare.replace(state=SUBSCRIBED))
        resubscribed = _found(await self.storage.get_subscription(S, "a", "romeo@example.org"))
        self.assertEqual(resubscribed.state, SUBSCRIBED)
        await self.storage.remove_subscription(S, "a", "romeo@example.org/orchard")
        await self.storage.remove_subscription(S, "a", "nobody@example.org")
        self.assertEqual(len(await self.storage.get_subscriptions(S, "a")), 1)

    # Items

    async def test_items_order_overwrite_and_limit(self):
        stored = []
        for i in range(5):
            stored.append(await self.storage.put_item(S, "a", Item(f"i{i}", f"<p n='{i}'/>", "x@example.org"), 3))
        self.assertTrue(all(a.seq < b.seq for a, b in zip(stored, stored[1:])))
        page = await self.storage.page_items(S, "a")
        self.assertEqual([i.item_id for i in page.items], ["i2", "i3", "i4"])
        again = await self.storage.put_item(S, "a", Item("i2", "<p n='new'/>", "y@example.org"), 3)
        self.assertGreater(again.seq, stored[-1].seq)
        page = await self.storage.page_items(S, "a")
        self.assertEqual([i.item_id for i in page.items], ["i3", "i4", "i2"])
        self.assertEqual(page.items[-1].payload, "<p n='new'/>")
        self.assertEqual(page.items[-1].publisher, "y@example.org")

    async def test_max_items_one_keeps_only_the_newest(self):
        for i in range(3):
            await self.storage.put_item(S, "a", Item(f"i{i}", "<p/>", "x@example.org"), 1)
        self.assertEqual([i.item_id for i in (await self.storage.page_items(S, "a")).items], ["i2"])
        await self.storage.put_item(S, "a", Item("i2", "<p n='again'/>", "x@example.org"), 1)
        page = await self.storage.page_items(S, "a")
        self.assertEqual([(i.item_id, i.payload) for i in page.items], [("i2", "<p n='again'/>")])

    async def test_one_failing_operation_among_many_fails_alone(self):
        """Operations issued together (a backend may commit them as one batch):
        the one that fails gets its error, the others are all done."""
        await self.storage.create_node(Node(S, "taken", NodeConfig(), "x@example.org"))
        issued: list[defer.Deferred[Any]] = [
            self.storage.put_item(S, "a", Item(f"i{i}", "<p/>", "x@example.org"), 10) for i in range(3)]
        issued.append(self.storage.create_node(Node(S, "taken", NodeConfig(), "y@example.org")))
        issued += [self.storage.put_item(S, "a", Item(f"i{i}", "<p/>", "x@example.org"), 10) for i in range(3, 6)]
        issued.append(self.storage.create_node(Node(S, "fresh", NodeConfig(), "y@example.org")))
        outcomes = await defer.DeferredList(issued, consumeErrors=True)
        self.assertEqual([ok for ok, _ in outcomes], [True] * 3 + [False] + [True] * 4)
        failure = outcomes[3][1]
        self.assertIsInstance(getattr(failure, "value", None), NodeExists)
        self.assertEqual(_found(await self.storage.get_node(S, "taken")).creator, "x@example.org")
        self.assertIsNotNone(await self.storage.get_node(S, "fresh"))
        page = await self.storage.page_items(S, "a")
        self.assertEqual([i.item_id for i in page.items], [f"i{i}" for i in range(6)])

    async def test_ordered_writes_run_in_the_order_issued(self):
        """Where a backend says ``ordered_writes``, the engine lets a caller go on
        before the commit: what it issues next must see the write."""
        if not getattr(self.storage, "ordered_writes", False):
            self.skipTest("backend does not keep issue order")
        await self.storage.create_node(Node(S, "a", NodeConfig(), "x@example.org"))
        first = self.storage.put_item(S, "a", Item("same", "<p n='1'/>", "x@example.org"), 5)
        second = self.storage.put_item(S, "a", Item("same", "<p n='2'/>", "x@example.org"), 5)
        seen = self.storage.get_items(S, "a", ["same"])
        removed = self.storage.delete_items(S, "a", ["same"])
        after = self.storage.get_items(S, "a", ["same"])
        writes: list[defer.Deferred[Any]] = [first, second, removed]
        await defer.gatherResults(writes)
        self.assertEqual([i.payload for i in await seen], ["<p n='2'/>"])
        self.assertEqual(await after, [])

    async def test_set_subscription_option_changes_one_option_and_keeps_the_others(self):
        """Where a backend has it (offline marks use it): one option set or
        removed, the others and the subscription's state kept."""
        if not hasattr(self.storage, "set_subscription_option"):
            self.skipTest("backend has no set_subscription_option")
        change = self.storage.set_subscription_option
        self.assertIsNone(await change(S, "a", "nobody@example.org", "xep207#m", "1"))
        await self.storage.set_subscription(Subscription(S, "a", "x@example.org", options={"keep": "k"}))
        await self.storage.get_subscriptions(S, "a")  # a cache in front remembers them...
        after = _found(await change(S, "a", "x@example.org", "xep207#m", "1"))
        listed = await self.storage.get_subscriptions(S, "a")  # ...and must forget them
        self.assertEqual([dict(s.options) for s in listed], [{"keep": "k", "xep207#m": "1"}])
        self.assertEqual(dict(after.options), {"keep": "k", "xep207#m": "1"})
        self.assertEqual(_found(await change(S, "a", "x@example.org", "xep207#m", "2", True)).options["xep207#m"], "1")
        await change(S, "a", "x@example.org", "xep207#n", "3", True)
        await change(S, "a", "x@example.org", "xep207#m", None)
        stored = _found(await self.storage.get_subscription(S, "a", "x@example.org"))
        self.assertEqual(dict(stored.options), {"keep": "k", "xep207#n": "3"})
        self.assertEqual(stored.subid, after.subid)

    async def test_answer_pending_subscription_answers_it_once(self):
        """Where a backend has it (the engine's answers to requests): a pending
        subscription approved or removed, once, however many answers were issued."""
        if not hasattr(self.storage, "answer_pending_subscription"):
            self.skipTest("backend has no answer_pending_subscription")
        answer = self.storage.answer_pending_subscription
        self.assertIsNone(await answer(S, "a", "nobody@example.org", True))
        await self.storage.set_subscription(Subscription(S, "a", "x@example.org", PENDING, options={"keep": "k"}))
        await self.storage.set_subscription(Subscription(S, "a", "y@example.org", PENDING))
        await self.storage.get_subscriptions(S, "a")  # a cache in front remembers them...
        approvals = await defer.gatherResults([answer(S, "a", "x@example.org", True) for _ in range(2)])
        denials = await defer.gatherResults([answer(S, "a", "y@example.org", False) for _ in range(2)])
        self.assertEqual([a is None for a in approvals].count(True), 1, approvals)  # one of them, either
        self.assertEqual([d is None for d in denials].count(True), 1, denials)
        approved = _found(next(a for a in approvals if a is not None))
        self.assertEqual((approved.state, dict(approved.options)), (SUBSCRIBED, {"keep": "k"}))
        self.assertEqual(_found(next(d for d in denials if d is not None)).state, NONE)
        listed = await self.storage.get_subscriptions(S, "a")  # ...and must forget them
        self.assertEqual([(s.subscriber, s.state, s.subid) for s in listed],
                         [("x@example.org", SUBSCRIBED, approved.subid)])
        self.assertIsNone(await answer(S, "a", "x@example.org", False))  # not pending: left as it is
        self.assertEqual(_found(await self.storage.get_subscription(S, "a", "x@example.org")).state, SUBSCRIBED)

    async def test_get_items_by_id(self):
        for i in range(3):
            await self.storage.put_item(S, "a", Item(f"i{i}", "<p/>", "x@example.org"), None)
        found = await self.storage.get_items(S, "a", ["i2", "missing", "i0"])
        self.assertEqual([i.item_id for i in found], ["i0", "i2"])
        self.assertEqual(await self.storage.get_items(S, "a", []), [])

    async def test_paging(self):
        for i in range(10):
            await self.storage.put_item(S, "a", Item(f"i{i}", "<p/>", "x@example.org"), None)

        async def ids(**kwargs):
            page = await self.storage.page_items(S, "a", **kwargs)
            return [i.item_id for i in page.items], page.count, page.first_index

        self.assertEqual(await ids(limit=3), (["i7", "i8", "i9"], 10, 7))
        self.assertEqual(await ids(limit=3, before=""), (["i7", "i8", "i9"], 10, 7))
        self.assertEqual(await ids(limit=3, before="i7"), (["i4", "i5", "i6"], 10, 4))
        self.assertEqual(await ids(limit=3, after="i1"), (["i2", "i3", "i4"], 10, 2))
        self.assertEqual(await ids(limit=3, after="i8"), (["i9"], 10, 9))
        self.assertEqual(await ids(limit=3, before="i1"), (["i0"], 10, 0))
        self.assertEqual((await ids(after="unknown"))[0], [])
        self.assertEqual(len((await ids())[0]), 10)
        self.assertEqual(await ids(limit=2, after="i9"), ([], 10, 0))

    async def test_delete_and_purge_items(self):
        for i in range(3):
            await self.storage.put_item(S, "a", Item(f"i{i}", "<p/>", "x@example.org"), None)
        await self.storage.put_item(S, "b", Item("i0", "<p/>", "x@example.org"), None)
        self.assertEqual(await self.storage.delete_items(S, "a", ["i1", "missing"]), ["i1"])
        self.assertEqual([i.item_id for i in (await self.storage.page_items(S, "a")).items], ["i0", "i2"])
        await self.storage.purge_items(S, "a")
        self.assertEqual((await self.storage.page_items(S, "a")).count, 0)
        self.assertEqual((await self.storage.page_items(S, "b")).count, 1)

    async def test_payload_text_is_kept_exactly(self):
        payload = "<body xmlns='jabber:client'>caf\u00e9 &amp; \U0001F600 &lt;b&gt;</body>"
        await self.storage.put_item(S, "a", Item("x", payload, "x@example.org/r", 12.5), None)
        item = (await self.storage.get_items(S, "a", ["x"]))[0]
        self.assertEqual((item.payload, item.publisher, item.published), (payload, "x@example.org/r", 12.5))

    # Accounts

    async def test_accounts(self):
        await self.storage.create_account(account())
        await self.storage.create_account(account("romeo", "example.com"))
        with self.assertRaises(AccountExists):
            await self.storage.create_account(account(marker=b"2"))
        self.assertEqual(await self.storage.get_account("juliet@example.org"), account())
        self.assertIsNone(await self.storage.get_account("nobody@example.org"))
        await self.storage.update_account(account(marker=b"3"))
        updated = _found(await self.storage.get_account("juliet@example.org"))
        self.assertEqual(updated.salt, b"salt3")
        self.assertEqual(await self.storage.list_accounts(), ["juliet@example.org", "romeo@example.com"])
        self.assertEqual(await self.storage.list_accounts("example.com"), ["romeo@example.com"])

    async def test_delete_account_removes_what_it_owns(self):
        await self.storage.create_account(account())
        await self.storage.create_node(Node(PEP, "presence", NodeConfig(), PEP))
        await self.storage.put_item(PEP, "presence", Item("r", "<presence/>", PEP + "/r"), None)
        await self.storage.set_subscription(Subscription(PEP, "presence", "romeo@example.com"))
        await self.storage.set_subscription(Subscription("romeo@example.com", "presence", PEP))
        await self.storage.set_affiliation(S, "room", PEP, PUBLISHER)
        await self.storage.set_subscription(Subscription(S, "room", PEP + "/balcony"))
        await self.storage.create_node(Node(S, "room", NodeConfig(), "romeo@example.com"))
        await self.storage.delete_account(PEP)
        self.assertIsNone(await self.storage.get_account(PEP))
        self.assertEqual(await self.storage.list_nodes(PEP), [])
        self.assertEqual((await self.storage.page_items(PEP, "presence")).count, 0)
        self.assertEqual(await self.storage.get_subscriptions(PEP, "presence"), [])
        self.assertEqual(await self.storage.get_entity_subscriptions(PEP), [])
        self.assertEqual(await self.storage.get_entity_affiliations(PEP), [])
        self.assertIsNotNone(await self.storage.get_node(S, "room"))

    # Durability

    async def test_reopen_keeps_everything(self):
        await self.storage.create_node(Node(S, "a", NodeConfig(title="kept"), "x@example.org"))
        await self.storage.put_item(S, "a", Item("i", "<p/>", "x@example.org"), None)
        await self.storage.set_subscription(Subscription(S, "a", "y@example.org"))
        await self.storage.create_account(account())
        other = await self.reopen()
        if other is None:
            self.skipTest("backend is not durable")
        self.assertEqual(_found(await other.get_node(S, "a")).config.title, "kept")
        self.assertEqual((await other.page_items(S, "a")).count, 1)
        self.assertEqual(len(await other.get_subscriptions(S, "a")), 1)
        self.assertEqual(await other.get_account("juliet@example.org"), account())
