"""XEP-0060 use cases at the XML level, errors included, against the real engine."""

from twisted.words.protocols.jabber.error import StanzaError

from tests.pubsub_helpers import (
    HAMLET,
    IAGO,
    JULIET,
    NS,
    ROMEO,
    SERVICE,
    PubSubTestCase,
    form,
    node_config,
)
from tests.test_storage import IStorageOnly
from xep207.storage.cache import CachingStorage
from xep207.storage.memory import MemoryStorage

NS_EVENT = NS + "#event"


def item_ids(reply):
    return [i["id"] for i in reply.pubsub.items.elements() if i.name == "item"]


class NodeLifecycle(PubSubTestCase):
    async def test_create_named_node(self):
        reply = await self.create()
        self.assertIsNone(reply.pubsub)  # named: empty result (XEP-0060 §8.1.1)
        self.assertIsNotNone(await self.storage.get_node(SERVICE, "princely_musings"))

    async def test_instant_node_gets_an_id(self):
        reply = self.assert_result(await self.pubsub(HAMLET, "set", "<create/>"))
        node_id = reply.pubsub.create["node"]
        self.assertTrue(node_id)
        self.assertIsNotNone(await self.storage.get_node(SERVICE, node_id))

    async def test_create_existing_node_conflicts(self):
        await self.create()
        self.assert_error(await self.pubsub(ROMEO, "set", "<create node='princely_musings'/>"),
                          "conflict")

    async def test_create_and_configure(self):
        await self.create(config=node_config(access_model="whitelist", max_items="3", title="Musings"))
        node = await self.storage.get_node(SERVICE, "princely_musings")
        self.assertEqual((node.config.access_model, node.config.max_items, node.config.title),
                         ("whitelist", 3, "Musings"))

    async def test_create_with_unknown_field_is_not_acceptable(self):
        reply = await self.pubsub(HAMLET, "set", "<create node='n'/><configure>"
                                  + node_config(bogus_field="1") + "</configure>")
        self.assert_error(reply, "not-acceptable")
        self.assertIsNone(await self.storage.get_node(SERVICE, "n"))

    async def test_create_with_bad_value_is_not_acceptable(self):
        for config in (node_config(access_model="everyone"), node_config(max_items="lots"),
                       node_config(max_items="0")):
            reply = await self.pubsub(HAMLET, "set", f"<create node='n'/><configure>{config}</configure>")
            self.assert_error(reply, "not-acceptable")
        self.assertIsNone(await self.storage.get_node(SERVICE, "n"))

    async def test_malformed_form_is_bad_request(self):
        reply = await self.pubsub(HAMLET, "set", "<create node='n'/><configure>"
                                  + form(NS + "#node_config", {}, type="result") + "</configure>")
        self.assert_error(reply, "bad-request")

    async def test_get_configuration_and_default(self):
        await self.create(config=node_config(title="Musings"))
        reply = self.assert_result(await self.owner(HAMLET, "get", "<configure node='princely_musings'/>"))
        values = {f["var"]: str(f.value) for f in reply.pubsub.configure.x.elements()
                  if f.name == "field" and f.value is not None}
        self.assertEqual(values["pubsub#title"], "Musings")
        self.assertEqual(values["pubsub#access_model"], "open")
        reply = self.assert_result(await self.owner(HAMLET, "get", "<default/>"))
        self.assertIsNotNone(reply.pubsub.default.x)

    async def test_only_owner_configures(self):
        await self.create()
        self.assert_error(await self.owner(ROMEO, "get", "<configure node='princely_musings'/>"), "forbidden")
        reply = await self.owner(ROMEO, "set", "<configure node='princely_musings'>"
                                 + node_config(access_model="open") + "</configure>")
        self.assert_error(reply, "forbidden")

    async def test_configure_missing_node(self):
        self.assert_error(await self.owner(HAMLET, "get", "<configure node='nope'/>"), "item-not-found")

    async def test_configure_changes_and_notifies(self):
        await self.create(config=node_config(notify_config="1"))
        self.assert_result(await self.subscribe(ROMEO))
        reply = await self.owner(HAMLET, "set", "<configure node='princely_musings'>"
                                 + node_config(title="New title", max_items="1") + "</configure>")
        self.assert_result(reply)
        node = await self.storage.get_node(SERVICE, "princely_musings")
        self.assertEqual(node.config.title, "New title")
        message = await self.harness.next_message_to(ROMEO)
        self.assertEqual(message.event.configuration["node"], "princely_musings")

    async def test_reducing_max_items_trims(self):
        await self.create()
        for i in range(4):
            self.assert_result(await self.publish(item_id=f"i{i}"))
        self.assert_result(await self.owner(HAMLET, "set", "<configure node='princely_musings'>"
                                            + node_config(max_items="2") + "</configure>"))
        page = await self.storage.page_items(SERVICE, "princely_musings")
        self.assertEqual([i.item_id for i in page.items], ["i2", "i3"])

    async def test_delete_notifies_with_redirect(self):
        await self.create()
        await self.subscribe(ROMEO)
        reply = await self.owner(HAMLET, "set", "<delete node='princely_musings'>"
                                 "<redirect uri='xmpp:hamlet@denmark.lit?;node=blog'/></delete>")
        self.assert_result(reply)
        self.assertIsNone(await self.storage.get_node(SERVICE, "princely_musings"))
        message = await self.harness.next_message_to(ROMEO)
        self.assertEqual(message.event.delete.redirect["uri"], "xmpp:hamlet@denmark.lit?;node=blog")

    async def test_a_redirect_is_an_xmpp_uri(self):
        """XEP-0060 §8.4.3: subscribers' clients may follow it or show it as a
        link; anything else is bad-request and the node stays."""
        await self.create()
        await self.subscribe(ROMEO)
        for uri in ("javascript:alert(1)", "https://evil.example/", "xmpp:" + "a" * 5000, "xmpp:a&#10;b",
                    "xmpp:a b", ""):
            reply = await self.owner(HAMLET, "set", f"<delete node='princely_musings'><redirect uri='{uri}'/></delete>")
            self.assert_error(reply, "bad-request")
            self.assertIsNotNone(await self.storage.get_node(SERVICE, "princely_musings"))
        self.assertEqual(self.harness.messages_to(ROMEO), [])

    async def test_a_redirect_is_checked_as_rfc_5122_and_3987_say(self):
        """Legitimate XMPP URIs and IRIs pass (a scheme in any case, RFC 3986
        §3.1; percent-encoding; non-ASCII; the authority form; queries and
        fragments); what is no URI at all is bad-request and the node stays:
        no JID, DEL and C1 controls, bidi formatting (RFC 3987 §4.1: a link
        shown reversed), characters RFC 3986 leaves out of every URI (a quote
        or angle bracket breaks out of a web client's link), broken
        percent-encoding. A stranger and a subscriber get forbidden first."""
        await self.create()
        await self.subscribe(ROMEO)
        for uri in ("xmpp:", "xmpp://", "xmpp:?;node=blog", "xmpp:a&#127;b", "xmpp:a&#128;b",
                    "xmpp:&#8238;til.kramned@telmah", "xmpp:a&#8294;b", "xmpp:a&quot;onmouseover=&quot;alert(1)",
                    "xmpp:a&lt;script&gt;", "xmpp:a{b}", "xmpp:a%zz", "xmpp:a%4"):
            for who in (IAGO, ROMEO, HAMLET):
                reply = await self.owner(who, "set", f"<delete node='princely_musings'><redirect uri='{uri}'/></delete>")
                self.assert_error(reply, "bad-request" if who == HAMLET else "forbidden")
            self.assertIsNotNone(await self.storage.get_node(SERVICE, "princely_musings"))
        self.assertEqual(self.harness.messages_to(ROMEO), [])
        for uri in ("XMPP:hamlet@denmark.lit?;node=blog", "xmpp:j%C3%BCliet@example.com",
                    "xmpp:jüliet@例え.jp?;node=blog", "xmpp://guest@example.com/support@example.com?message",
                    "xmpp:pubsub.shakespeare.lit?pubsub;action=subscribe;node=princely%20musings#top"):
            if await self.storage.get_node(SERVICE, "princely_musings") is None:
                await self.create()
            self.assert_result(await self.owner(HAMLET, "set",
                                                f"<delete node='princely_musings'><redirect uri='{uri}'/></delete>"))
            self.assertIsNone(await self.storage.get_node(SERVICE, "princely_musings"))

    async def test_delete_errors(self):
        await self.create()
        self.assert_error(await self.owner(ROMEO, "set", "<delete node='princely_musings'/>"), "forbidden")
        self.assert_error(await self.owner(HAMLET, "set", "<delete node='nope'/>"), "item-not-found")
        self.assertIsNotNone(await self.storage.get_node(SERVICE, "princely_musings"))

    async def test_purge_notifies(self):
        await self.create()
        await self.publish()
        await self.subscribe(ROMEO)
        self.assert_result(await self.owner(HAMLET, "set", "<purge node='princely_musings'/>"))
        self.assertEqual((await self.storage.page_items(SERVICE, "princely_musings")).count, 0)
        message = await self.harness.next_message_to(ROMEO)
        self.assertEqual(message.event.purge["node"], "princely_musings")

    async def test_purge_errors(self):
        await self.create(config=node_config(persist_items="0"))
        self.assert_error(await self.owner(HAMLET, "set", "<purge node='princely_musings'/>"),
                          "feature-not-implemented", "unsupported")
        self.assert_error(await self.owner(ROMEO, "set", "<purge node='princely_musings'/>"), "forbidden")
        self.assert_error(await self.owner(HAMLET, "set", "<purge node='nope'/>"), "item-not-found")


class Publishing(PubSubTestCase):
    async def test_publish_notifies_subscribers_once_each(self):
        await self.create()
        await self.subscribe(ROMEO)
        await self.subscribe(JULIET)
        reply = self.assert_result(await self.publish())
        self.assertEqual(reply.pubsub.publish.item["id"], "ae890ac52d0df67ed7cfdf51b644e901")
        for subscriber in (ROMEO, JULIET):
            message = await self.harness.next_message_to(subscriber)
            self.assertEqual(message["from"], SERVICE)
            item = message.event.items.item
            self.assertEqual(message.event.uri, NS_EVENT)
            self.assertEqual(item["id"], "ae890ac52d0df67ed7cfdf51b644e901")
            self.assertEqual(str(item.entry.title), "Soliloquy")
        self.assertEqual(len(self.harness.messages_to(ROMEO)), 1)
        self.assertEqual(self.harness.messages_to(IAGO), [])
        self.assertEqual(self.harness.messages_to(HAMLET), [])

    async def test_generated_item_id_is_returned(self):
        await self.create()
        reply = self.assert_result(await self.publish(item_id=None))
        item_id = reply.pubsub.publish.item["id"]
        items = await self.storage.get_items(SERVICE, "princely_musings", [item_id])
        self.assertEqual(len(items), 1)

    async def test_publish_same_id_overwrites(self):
        await self.create()
        await self.publish(item_id="one", payload="<a xmlns='urn:x'>1</a>")
        await self.publish(item_id="one", payload="<a xmlns='urn:x'>2</a>")
        page = await self.storage.page_items(SERVICE, "princely_musings")
        self.assertEqual(page.count, 1)
        self.assertIn(">2<", page.items[0].payload)

    async def test_max_items_drops_oldest(self):
        await self.create(config=node_config(max_items="2"))
        for i in range(3):
            await self.publish(item_id=f"i{i}")
        page = await self.storage.page_items(SERVICE, "princely_musings")
        self.assertEqual([i.item_id for i in page.items], ["i1", "i2"])

    async def test_publish_errors(self):
        await self.create()
        self.assert_error(await self.publish(sender=ROMEO), "forbidden")
        self.assert_error(await self.publish(node="nope"), "item-not-found")
        self.assert_error(await self.pubsub(HAMLET, "set", "<publish/>"), "bad-request", "nodeid-required")
        big = "<big xmlns='urn:x'>" + "x" * 5000 + "</big>"
        self.assert_error(await self.publish(payload=big), "not-acceptable", "payload-too-big")
        self.assert_error(await self.publish(payload="<a xmlns='urn:x'/><b xmlns='urn:x'/>"),
                          "bad-request", "invalid-payload")
        self.assert_error(await self.publish(payload=""), "bad-request", "payload-required")
        self.assert_error(await self.pubsub(HAMLET, "set", "<publish node='princely_musings'/>"),
                          "bad-request", "item-required")
        self.assertEqual((await self.storage.page_items(SERVICE, "princely_musings")).count, 0)

    async def test_publish_models(self):
        await self.create(config=node_config(publish_model="subscribers"))
        self.assert_error(await self.publish(sender=ROMEO), "forbidden")
        await self.subscribe(ROMEO)
        self.assert_result(await self.publish(sender=ROMEO))
        await self.create(node="open", config=node_config(publish_model="open"))
        self.assert_result(await self.publish(node="open", sender=IAGO))

    async def test_publish_options_preconditions(self):
        await self.create(config=node_config(access_model="whitelist"))
        options = "<publish-options>" + form(NS + "#publish-options",
                                             {"pubsub#access_model": "whitelist"}) + "</publish-options>"
        self.assert_result(await self.publish(extra=options))
        options = options.replace(">whitelist<", ">open<")
        self.assert_error(await self.publish(item_id="two", extra=options), "conflict", "precondition-not-met")
        self.assertEqual((await self.storage.page_items(SERVICE, "princely_musings")).count, 1)

    async def test_deliver_payloads_off_sends_item_ids_only(self):
        await self.create(config=node_config(deliver_payloads="0"))
        await self.subscribe(ROMEO)
        await self.publish()
        message = await self.harness.next_message_to(ROMEO)
        self.assertEqual(list(message.event.items.item.elements()), [])

    async def test_transient_notification_only_node(self):
        await self.create(config=node_config(deliver_payloads="0", persist_items="0"))
        await self.subscribe(ROMEO)
        self.assert_result(await self.pubsub(HAMLET, "set", "<publish node='princely_musings'/>"))
        message = await self.harness.next_message_to(ROMEO)
        self.assertTrue(message.event.items.item["id"])


class Retracting(PubSubTestCase):
    async def test_retract_with_notify(self):
        await self.create()
        await self.subscribe(ROMEO)
        await self.publish(item_id="one")
        await self.harness.next_message_to(ROMEO)
        reply = await self.pubsub(HAMLET, "set", "<retract node='princely_musings' notify='true'>"
                                  "<item id='one'/></retract>")
        self.assert_result(reply)
        message = await self.harness.next_message_to(ROMEO)
        self.assertEqual(message.event.items.retract["id"], "one")
        self.assertEqual((await self.storage.page_items(SERVICE, "princely_musings")).count, 0)

    async def test_retract_without_notify_is_silent(self):
        await self.create()
        await self.subscribe(ROMEO)
        await self.publish(item_id="one")
        self.assert_result(await self.pubsub(HAMLET, "set", "<retract node='princely_musings'>"
                                             "<item id='one'/></retract>"))
        self.assertEqual(len(self.harness.messages_to(ROMEO)), 1)

    async def test_retract_errors(self):
        await self.create()
        await self.publish(item_id="one")
        retract = "<retract node='princely_musings'><item id='{}'/></retract>"
        self.assert_error(await self.pubsub(ROMEO, "set", retract.format("one")), "forbidden")
        self.assert_error(await self.pubsub(HAMLET, "set", retract.format("nope")), "item-not-found")
        self.assert_error(await self.pubsub(HAMLET, "set", "<retract node='princely_musings'/>"),
                          "bad-request", "item-required")
        self.assert_error(await self.pubsub(HAMLET, "set", "<retract><item id='one'/></retract>"),
                          "bad-request", "nodeid-required")
        self.assertEqual((await self.storage.page_items(SERVICE, "princely_musings")).count, 1)


class Retrieving(PubSubTestCase):
    async def test_all_and_max_items(self):
        await self.create()
        for i in range(5):
            await self.publish(item_id=f"i{i}")
        reply = self.assert_result(await self.pubsub(ROMEO, "get", "<items node='princely_musings'/>"))
        self.assertEqual(item_ids(reply), ["i0", "i1", "i2", "i3", "i4"])
        self.assertEqual(str(reply.pubsub.items.item.entry.title), "Soliloquy")
        reply = self.assert_result(await self.pubsub(ROMEO, "get", "<items node='princely_musings' max_items='2'/>"))
        self.assertEqual(item_ids(reply), ["i3", "i4"])

    async def test_by_id(self):
        await self.create()
        for i in range(3):
            await self.publish(item_id=f"i{i}")
        reply = self.assert_result(await self.pubsub(
            ROMEO, "get", "<items node='princely_musings'><item id='i1'/><item id='nope'/></items>"))
        self.assertEqual(item_ids(reply), ["i1"])

    async def test_rsm_paging(self):
        await self.create(config=node_config(max_items="100"))
        for i in range(7):
            await self.publish(item_id=f"i{i}")
        rsm = "<set xmlns='http://jabber.org/protocol/rsm'><max>3</max>{}</set>"
        reply = self.assert_result(await self.pubsub(
            ROMEO, "get", "<items node='princely_musings'/>" + rsm.format("<before/>")))
        self.assertEqual(item_ids(reply), ["i4", "i5", "i6"])
        rsm_set = reply.pubsub.set
        self.assertEqual((str(rsm_set.first), rsm_set.first["index"], str(rsm_set.last), str(rsm_set.count)),
                         ("i4", "4", "i6", "7"))
        reply = self.assert_result(await self.pubsub(
            ROMEO, "get", "<items node='princely_musings'/>" + rsm.format("<before>i4</before>")))
        self.assertEqual(item_ids(reply), ["i1", "i2", "i3"])
        reply = self.assert_result(await self.pubsub(
            ROMEO, "get", "<items node='princely_musings'/>" + rsm.format("<after>i4</after>")))
        self.assertEqual(item_ids(reply), ["i5", "i6"])
        reply = await self.pubsub(ROMEO, "get", "<items node='princely_musings'/>" + rsm.format("<after>zz</after>"))
        self.assert_error(reply, "item-not-found")

    async def test_retrieve_errors(self):
        self.assert_error(await self.pubsub(ROMEO, "get", "<items node='nope'/>"), "item-not-found")
        self.assert_error(await self.pubsub(ROMEO, "get", "<items/>"), "bad-request", "nodeid-required")
        await self.create(config=node_config(access_model="whitelist"))
        self.assert_error(await self.pubsub(ROMEO, "get", "<items node='princely_musings'/>"),
                          "not-allowed", "closed-node")
        await self.create(node="auth", config=node_config(access_model="authorize"))
        self.assert_error(await self.pubsub(ROMEO, "get", "<items node='auth'/>"),
                          "not-authorized", "not-subscribed")
        await self.subscribe(ROMEO, node="auth")
        self.assert_error(await self.pubsub(ROMEO, "get", "<items node='auth'/>"),
                          "not-authorized", "pending-subscription")
        await self.create(node="presence_only", config=node_config(access_model="presence"))
        self.assert_error(await self.pubsub(ROMEO, "get", "<items node='presence_only'/>"),
                          "not-authorized", "presence-subscription-required")
        await self.create(node="roster_only", config=node_config(access_model="roster"))
        self.assert_error(await self.pubsub(ROMEO, "get", "<items node='roster_only'/>"),
                          "not-authorized", "not-in-roster-group")

    async def test_outcast_is_forbidden(self):
        await self.create()
        self.assert_result(await self.owner(HAMLET, "set", "<affiliations node='princely_musings'>"
                                            "<affiliation jid='iago@shakespeare.lit' affiliation='outcast'/>"
                                            "</affiliations>"))
        self.assert_error(await self.pubsub(IAGO, "get", "<items node='princely_musings'/>"), "forbidden")
        self.assert_error(await self.subscribe(IAGO), "forbidden")


class Subscribing(PubSubTestCase):
    async def test_subscribe_open(self):
        await self.create()
        reply = self.assert_result(await self.subscribe(ROMEO))
        subscription = reply.pubsub.subscription
        self.assertEqual((subscription["node"], subscription["jid"], subscription["subscription"]),
                         ("princely_musings", ROMEO, "subscribed"))
        self.assertTrue(subscription["subid"])

    async def test_subscribe_bare_jid_gets_bare_notifications(self):
        await self.create()
        self.assert_result(await self.pubsub(ROMEO, "set",
                                             "<subscribe node='princely_musings' jid='romeo@montague.lit'/>"))
        await self.publish()
        message = await self.harness.next_message_to("romeo@montague.lit")
        self.assertIsNotNone(message.event)

    async def test_subscribe_errors(self):
        await self.create()
        self.assert_error(await self.pubsub(ROMEO, "set", f"<subscribe node='princely_musings' jid='{JULIET}'/>"),
                          "bad-request", "invalid-jid")
        self.assert_error(await self.pubsub(ROMEO, "set", "<subscribe node='princely_musings' jid='@@bad@@/'/>"),
                          "bad-request", "invalid-jid")
        self.assert_error(await self.pubsub(ROMEO, "set", "<subscribe node='princely_musings'/>"),
                          "bad-request", "jid-required")
        self.assert_error(await self.subscribe(ROMEO, node="nope"), "item-not-found")
        await self.create(node="closed", config=node_config(access_model="whitelist"))
        self.assert_error(await self.subscribe(ROMEO, node="closed"), "not-allowed", "closed-node")
        await self.create(node="presence_only", config=node_config(access_model="presence"))
        self.assert_error(await self.subscribe(ROMEO, node="presence_only"),
                          "not-authorized", "presence-subscription-required")
        self.assertEqual(await self.storage.get_entity_subscriptions("romeo@montague.lit"), [])

    async def test_whitelist_member_may_subscribe(self):
        await self.create(config=node_config(access_model="whitelist"))
        self.assert_result(await self.owner(HAMLET, "set", "<affiliations node='princely_musings'>"
                                            "<affiliation jid='romeo@montague.lit' affiliation='member'/>"
                                            "</affiliations>"))
        self.assert_result(await self.subscribe(ROMEO))

    async def test_unsubscribe(self):
        await self.create()
        await self.subscribe(ROMEO)
        self.assert_result(await self.pubsub(ROMEO, "set", f"<unsubscribe node='princely_musings' jid='{ROMEO}'/>"))
        await self.publish()
        self.assertEqual(self.harness.messages_to(ROMEO), [])
        self.assert_error(await self.pubsub(ROMEO, "set", f"<unsubscribe node='princely_musings' jid='{ROMEO}'/>"),
                          "unexpected-request", "not-subscribed")
        await self.subscribe(JULIET)
        self.assert_error(await self.pubsub(ROMEO, "set", f"<unsubscribe node='princely_musings' jid='{JULIET}'/>"),
                          "bad-request", "invalid-jid")
        self.assert_error(await self.pubsub(JULIET, "set",
                                            f"<unsubscribe node='princely_musings' jid='{JULIET}' subid='wrong'/>"),
                          "not-acceptable", "invalid-subid")

    async def test_subscription_options_with_subscribe_and_after(self):
        await self.create()
        # XEP-0060 §6.3.5: an option the node does not define is invalid-options, and nothing is stored.
        unknown = "<options>" + form(NS + "#subscribe_options",
                                     {"pubsub#deliver": "1", "roomnick": "thirdwitch"}) + "</options>"
        self.assert_error(await self.subscribe(ROMEO, options=unknown), "bad-request", "invalid-options")
        self.assertIsNone(await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO))
        options = "<options>" + form(NS + "#subscribe_options",
                                     {"pubsub#deliver": "1", "pubsub#expire": "presence"}) + "</options>"
        self.assert_result(await self.subscribe(ROMEO, options=options))
        subscription = await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO)
        self.assertEqual(subscription.options["pubsub#expire"], "presence")
        reply = self.assert_result(await self.pubsub(
            ROMEO, "get", f"<options node='princely_musings' jid='{ROMEO}'/>"))
        values = {f["var"]: str(f.value) for f in reply.pubsub.options.x.elements() if f.name == "field"}
        self.assertEqual(values["pubsub#expire"], "presence")
        self.assert_error(await self.pubsub(ROMEO, "set", f"<options node='princely_musings' jid='{ROMEO}'>"
                                            + form(NS + "#subscribe_options", {"x-anything": "x" * 1000})
                                            + "</options>"), "bad-request", "invalid-options")
        subscription = await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO)
        self.assertNotIn("x-anything", subscription.options)
        set_options = (f"<options node='princely_musings' jid='{ROMEO}'>"
                       + form(NS + "#subscribe_options", {"pubsub#deliver": "0"}) + "</options>")
        self.assert_result(await self.pubsub(ROMEO, "set", set_options))
        await self.publish()
        self.assertEqual(self.harness.messages_to(ROMEO), [])  # deliver=false honoured

    async def test_subscription_option_values_follow_their_types(self):
        """XEP-0060 §16.4.2 gives each option a type: a value outside it is
        invalid-options (§6.3.5) and nothing is stored, on subscribe and on
        options set, as the subscriber and as the owner. Only the names were
        checked: pubsub#expire kept any text (the attacker's place to store
        anything moved from the name to the value)."""
        await self.create()
        bad = [{"pubsub#expire": "x" * 3000}, {"pubsub#deliver": "maybe"}, {"pubsub#deliver": ["1", "0"]},
               {"pubsub#digest": "yes"}, {"pubsub#include_body": "x" * 100}, {"pubsub#digest_frequency": "often"},
               {"pubsub#digest_frequency": "9" * 100}, {"pubsub#show-values": ["online", "x" * 100]},
               {"pubsub#show-values": ["away"] * 50}, {"pubsub#subscription_type": "everything"},
               {"pubsub#subscription_depth": "deep"}, {"pubsub#subscription_depth": "0"},
               {"pubsub#expire": "2006-03-31"}]
        for values in bad:
            options = "<options>" + form(NS + "#subscribe_options", values) + "</options>"
            self.assert_error(await self.subscribe(ROMEO, options=options), "bad-request", "invalid-options")
            self.assertIsNone(await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO))
        await self.subscribe(ROMEO)
        for who in (ROMEO, HAMLET):
            for values in bad:
                self.assert_error(await self.pubsub(who, "set", f"<options node='princely_musings' jid='{ROMEO}'>"
                                                    + form(NS + "#subscribe_options", values) + "</options>"),
                                  "bad-request", "invalid-options")
        subscription = await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO)
        self.assertEqual(dict(subscription.options), {})
        good = {"pubsub#deliver": "true", "pubsub#digest": "false", "pubsub#digest_frequency": "86400000",
                "pubsub#expire": "2006-02-28T23:59:59.123Z", "pubsub#include_body": "0",
                "pubsub#show-values": ["chat", "online"], "pubsub#subscription_type": "items",
                "pubsub#subscription_depth": "all"}
        self.assert_result(await self.pubsub(ROMEO, "set", f"<options node='princely_musings' jid='{ROMEO}'>"
                                             + form(NS + "#subscribe_options", good) + "</options>"))
        subscription = await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO)
        self.assertEqual(subscription.options["pubsub#expire"], "2006-02-28T23:59:59.123Z")
        self.assertEqual(subscription.options["pubsub#digest_frequency"], "86400000")
        # The service's own options form comes back whole, and an empty field sets nothing.
        reply = self.assert_result(await self.pubsub(ROMEO, "get", f"<options node='princely_musings' jid='{ROMEO}'/>"))
        echoed = reply.pubsub.options.x
        echoed["type"] = "submit"
        self.assert_result(await self.pubsub(ROMEO, "set", f"<options node='princely_musings' jid='{ROMEO}'>"
                                             + echoed.toXml() + "</options>"))
        self.assert_result(await self.pubsub(ROMEO, "set", f"<options node='princely_musings' jid='{ROMEO}'>"
                                             + form(NS + "#subscribe_options", {"pubsub#digest": []}) + "</options>"))
        # gloox asks for any depth as a number.
        self.assert_result(await self.pubsub(ROMEO, "set", f"<options node='princely_musings' jid='{ROMEO}'>"
                                             + form(NS + "#subscribe_options", {"pubsub#subscription_depth": "2"})
                                             + "</options>"))
        self.assert_result(await self.pubsub(ROMEO, "set", f"<options node='princely_musings' jid='{ROMEO}'>"
                                             + form(NS + "#subscribe_options", {"pubsub#subscription_depth": "all"})
                                             + "</options>"))
        self.assertEqual(dict((await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO)).options),
                         {**good, "pubsub#deliver": "true"})

    async def test_an_options_form_from_before_the_rules_comes_back_whole(self):
        """A subscription stored before options were checked keeps what it was
        given; the options form shows it, and a client that sends the form
        back whole with one field changed (as a form dialog does) is not
        refused for the fields it left alone. A changed one is checked."""
        await self.create()
        await self.subscribe(ROMEO)
        stored = await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO)
        await self.storage.set_subscription(stored.replace(options={"x-legacy": "kept", "pubsub#expire": "soon"}))
        reply = self.assert_result(await self.pubsub(ROMEO, "get", f"<options node='princely_musings' jid='{ROMEO}'/>"))
        echoed = reply.pubsub.options.x
        echoed["type"] = "submit"
        for field in echoed.elements():
            if field.getAttribute("var") == "pubsub#deliver":
                field.children = []
                field.addElement("value", content="0")
        self.assert_result(await self.pubsub(ROMEO, "set", f"<options node='princely_musings' jid='{ROMEO}'>"
                                             + echoed.toXml() + "</options>"))
        self.assertEqual(dict((await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO)).options),
                         {"x-legacy": "kept", "pubsub#expire": "soon", "pubsub#deliver": "0"})
        self.assert_error(await self.pubsub(ROMEO, "set", f"<options node='princely_musings' jid='{ROMEO}'>"
                                            + form(NS + "#subscribe_options", {"x-legacy": "changed"}) + "</options>"),
                          "bad-request", "invalid-options")

    async def test_options_errors(self):
        await self.create()
        self.assert_error(await self.pubsub(ROMEO, "get", f"<options node='princely_musings' jid='{ROMEO}'/>"),
                          "unexpected-request", "not-subscribed")
        await self.subscribe(JULIET)
        self.assert_error(await self.pubsub(ROMEO, "get", f"<options node='princely_musings' jid='{JULIET}'/>"),
                          "forbidden")
        self.assert_error(await self.pubsub(ROMEO, "get", f"<options node='nope' jid='{ROMEO}'/>"),
                          "item-not-found")

    async def test_list_own_subscriptions_and_affiliations(self):
        await self.create()
        await self.create(node="other", owner=ROMEO)
        await self.subscribe(ROMEO)
        reply = self.assert_result(await self.pubsub(ROMEO, "get", "<subscriptions/>"))
        subscriptions = [(s["node"], s["subscription"]) for s in reply.pubsub.subscriptions.elements()]
        self.assertEqual(subscriptions, [("princely_musings", "subscribed")])
        reply = self.assert_result(await self.pubsub(ROMEO, "get", "<affiliations/>"))
        affiliations = [(a["node"], a["affiliation"]) for a in reply.pubsub.affiliations.elements()]
        self.assertEqual(affiliations, [("other", "owner")])

    async def test_send_last_published_item_on_subscribe(self):
        await self.create(config=node_config(send_last_published_item="on_sub"))
        await self.publish(item_id="old")
        await self.publish(item_id="last")
        reply = self.assert_result(await self.subscribe(ROMEO))
        self.assertEqual(self.harness.messages_to(ROMEO), [])  # not before the reply
        self.assertEqual(reply.pubsub.subscription["subscription"], "subscribed")
        self.flush()
        message = await self.harness.next_message_to(ROMEO)
        self.assertEqual(message.event.items.item["id"], "last")


class Authorization(PubSubTestCase):
    async def setUp_node(self):
        await self.create(config=node_config(access_model="authorize"))
        reply = self.assert_result(await self.subscribe(ROMEO))
        self.assertEqual(reply.pubsub.subscription["subscription"], "pending")
        return await self.harness.next_message_to("hamlet@denmark.lit")

    def answer(self, request, allow, subscriber_var="pubsub#subscriber_jid", echo_id=True):
        fields = {field["var"]: str(field.value) for field in request.x.elements() if field.name == "field"}
        id_attribute = f" id='{request['id']}'" if echo_id else ""
        return (f"<message from='{HAMLET}' to='{SERVICE}'{id_attribute}>"
                + form(NS + "#subscribe_authorization", {
                    "pubsub#subid": fields["pubsub#subid"], "pubsub#node": fields["pubsub#node"],
                    subscriber_var: fields["pubsub#subscriber_jid"], "pubsub#allow": allow})
                + "</message>")

    async def test_owner_gets_authorization_form(self):
        request = await self.setUp_node()
        self.assertEqual(request["from"], SERVICE)
        fields = {field["var"]: str(field.value) for field in request.x.elements() if field.name == "field"}
        self.assertEqual(fields["FORM_TYPE"], NS + "#subscribe_authorization")
        self.assertEqual(fields["pubsub#node"], "princely_musings")
        self.assertEqual(fields["pubsub#subscriber_jid"], ROMEO)
        self.assertEqual(fields["pubsub#allow"], "false")

    async def test_approve(self):
        request = await self.setUp_node()
        self.harness.feed(self.answer(request, "true"))
        message = await self.harness.next_message_to(ROMEO)
        self.assertEqual(message.event.subscription["subscription"], "subscribed")
        subscription = await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO)
        self.assertEqual(subscription.state, "subscribed")
        self.assert_result(await self.pubsub(ROMEO, "get", "<items node='princely_musings'/>"))

    async def test_approve_with_xep0207_misspelled_field(self):
        request = await self.setUp_node()
        self.harness.feed(self.answer(request, "1", subscriber_var="pusub#subscriber_jid"))
        message = await self.harness.next_message_to(ROMEO)
        self.assertEqual(message.event.subscription["subscription"], "subscribed")

    async def test_deny(self):
        request = await self.setUp_node()
        self.harness.feed(self.answer(request, "false"))
        message = await self.harness.next_message_to(ROMEO)
        self.assertEqual(message.event.subscription["subscription"], "none")
        self.assertIsNone(await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO))

    async def test_non_owner_answer_is_forbidden(self):
        request = await self.setUp_node()
        self.harness.feed(self.answer(request, "true").replace(f"from='{HAMLET}'", f"from='{IAGO}'"))
        error = await self.harness.next_message_to(IAGO)
        self.assertEqual(error["type"], "error")
        subscription = await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO)
        self.assertEqual(subscription.state, "pending")

    async def test_pending_resubscribe_is_refused(self):
        await self.setUp_node()
        self.assert_error(await self.subscribe(ROMEO), "not-authorized", "pending-subscription")


class AuthorizationOverAnIStorageOnlyBackend(Authorization):
    """A backend without ``answer_pending_subscription`` (a plugin's, written
    against IStorage alone), behind the cache as the server puts it: the
    engine reads the request again and writes; answers work as on ours."""

    def make_storage(self):
        return CachingStorage(IStorageOnly(MemoryStorage()))

    async def test_a_second_answer_finds_nothing_pending(self):
        self.assertFalse(hasattr(self.storage, "answer_pending_subscription"))
        await self.setUp_node()
        await self.engine.answer_authorization(HAMLET, SERVICE, "princely_musings", ROMEO, True)
        with self.assertRaises(StanzaError) as raised:
            await self.engine.answer_authorization(HAMLET, SERVICE, "princely_musings", ROMEO, False)
        self.assertEqual(raised.exception.condition, "unexpected-request")
        subscription = await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO)
        self.assertEqual(subscription.state, "subscribed")


class OwnerManagement(PubSubTestCase):
    async def test_manage_subscriptions(self):
        await self.create()
        await self.subscribe(ROMEO)
        reply = self.assert_result(await self.owner(HAMLET, "get", "<subscriptions node='princely_musings'/>"))
        listed = [(s["jid"], s["subscription"]) for s in reply.pubsub.subscriptions.elements()]
        self.assertEqual(listed, [(ROMEO, "subscribed")])
        reply = await self.owner(HAMLET, "set", "<subscriptions node='princely_musings'>"
                                 f"<subscription jid='{ROMEO}' subscription='none'/>"
                                 f"<subscription jid='{JULIET}' subscription='subscribed'/>"
                                 "</subscriptions>")
        self.assert_result(reply)
        self.assertIsNone(await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO))
        self.assertEqual((await self.storage.get_subscription(SERVICE, "princely_musings", JULIET)).state,
                         "subscribed")
        notice = await self.harness.next_message_to(JULIET)
        self.assertEqual(notice.event.subscription["subscription"], "subscribed")
        self.assert_error(await self.owner(ROMEO, "get", "<subscriptions node='princely_musings'/>"), "forbidden")

    async def test_unknown_subscription_state_is_bad_request(self):
        """XEP-0060 §4.2 names four states; anything else changes nothing."""
        await self.create()
        await self.subscribe(ROMEO)
        for state in ("emperor", "Subscribed", ""):
            reply = await self.owner(HAMLET, "set", "<subscriptions node='princely_musings'>"
                                     f"<subscription jid='{ROMEO}' subscription='{state}'/>"
                                     "</subscriptions>")
            self.assert_error(reply, "bad-request")
        stored = await self.storage.get_subscription(SERVICE, "princely_musings", ROMEO)
        self.assertEqual(stored.state, "subscribed")

    async def test_engine_refuses_unknown_affiliation_from_any_door(self):
        """The engine validates affiliation names itself, not only the XML door."""
        await self.create()
        with self.assertRaises(StanzaError) as raised:
            await self.engine.set_node_affiliations(
                HAMLET, SERVICE, "princely_musings", {"romeo@montague.lit": "Publisher"})
        self.assertEqual(raised.exception.condition, "bad-request")
        self.assertEqual(await self.storage.get_affiliations(SERVICE, "princely_musings"),
                         {"hamlet@denmark.lit": "owner"})

    async def test_manage_affiliations(self):
        await self.create()
        reply = await self.owner(HAMLET, "set", "<affiliations node='princely_musings'>"
                                 "<affiliation jid='romeo@montague.lit' affiliation='publisher'/>"
                                 "</affiliations>")
        self.assert_result(reply)
        self.assert_result(await self.publish(sender=ROMEO))
        reply = self.assert_result(await self.owner(HAMLET, "get", "<affiliations node='princely_musings'/>"))
        listed = sorted((a["jid"], a["affiliation"]) for a in reply.pubsub.affiliations.elements())
        self.assertEqual(listed, [("hamlet@denmark.lit", "owner"), ("romeo@montague.lit", "publisher")])
        self.assert_error(await self.owner(ROMEO, "get", "<affiliations node='princely_musings'/>"), "forbidden")
        reply = await self.owner(HAMLET, "set", "<affiliations node='princely_musings'>"
                                 "<affiliation jid='romeo@montague.lit' affiliation='emperor'/></affiliations>")
        self.assert_error(reply, "bad-request")
        reply = await self.owner(HAMLET, "set", "<affiliations node='princely_musings'>"
                                 "<affiliation jid='hamlet@denmark.lit' affiliation='none'/></affiliations>")
        self.assert_error(reply, "not-acceptable")

    async def test_outcast_loses_subscription(self):
        await self.create()
        await self.subscribe(IAGO)
        await self.owner(HAMLET, "set", "<affiliations node='princely_musings'>"
                         "<affiliation jid='iago@shakespeare.lit' affiliation='outcast'/></affiliations>")
        await self.publish()
        # Told its subscription ended (as §8.8.2's change is), then no item.
        told = [m.toXml() for m in self.harness.messages_to(IAGO)]
        self.assertEqual(len(told), 1, told)
        self.assertIn("subscription='none'", told[0])
        self.assertNotIn("<items", told[0])
        self.assertIsNone(await self.storage.get_subscription(SERVICE, "princely_musings", IAGO))

    async def test_whitelist_notifications_stop_when_membership_ends(self):
        await self.create(config=node_config(access_model="whitelist"))
        await self.owner(HAMLET, "set", "<affiliations node='princely_musings'>"
                         "<affiliation jid='romeo@montague.lit' affiliation='member'/></affiliations>")
        await self.subscribe(ROMEO)
        await self.owner(HAMLET, "set", "<affiliations node='princely_musings'>"
                         "<affiliation jid='romeo@montague.lit' affiliation='none'/></affiliations>")
        await self.publish()
        self.assertEqual(self.harness.messages_to(ROMEO), [])

    async def test_publisher_list_in_config_form_becomes_affiliations(self):
        await self.create(config=node_config(access_model="whitelist", publisher=["romeo@montague.lit"]))
        affiliations = await self.storage.get_affiliations(SERVICE, "princely_musings")
        self.assertEqual(affiliations["romeo@montague.lit"], "publisher")


class Discovery(PubSubTestCase):
    async def test_service_info_and_items(self):
        await self.create()
        await self.create(node="secret", config=node_config(access_model="whitelist"))
        reply = self.assert_result(await self.iq(ROMEO, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>"))
        identities = [(i["category"], i["type"]) for i in reply.query.elements() if i.name == "identity"]
        features = {f["var"] for f in reply.query.elements() if f.name == "feature"}
        self.assertIn(("pubsub", "service"), identities)
        for feature in ("publish", "subscribe", "retrieve-items", "access-authorize", "publish-options"):
            self.assertIn(f"{NS}#{feature}", features)
        reply = self.assert_result(await self.iq(ROMEO, "get", "<query xmlns='http://jabber.org/protocol/disco#items'/>"))
        nodes = [i["node"] for i in reply.query.elements()]
        self.assertEqual(nodes, ["princely_musings"])  # the whitelist node stays hidden

    async def test_node_info(self):
        await self.create(config=node_config(title="Musings"))
        reply = self.assert_result(await self.iq(
            ROMEO, "get", "<query xmlns='http://jabber.org/protocol/disco#info' node='princely_musings'/>"))
        identities = [(i["category"], i["type"]) for i in reply.query.elements() if i.name == "identity"]
        self.assertEqual(identities, [("pubsub", "leaf")])


class BadInput(PubSubTestCase):
    async def test_unknown_pubsub_verb(self):
        reply = await self.pubsub(HAMLET, "set", "<frobnicate node='x'/>")
        self.assert_error(reply, "feature-not-implemented")

    async def test_service_survives_bad_input(self):
        await self.create()
        self.assert_error(await self.pubsub(HAMLET, "set", "<publish node='princely_musings'><item>"
                                            "<a xmlns='urn:x'/><b xmlns='urn:x'/></item></publish>"),
                          "bad-request")
        self.assert_result(await self.publish())
