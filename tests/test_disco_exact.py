"""disco#info lists exactly what is implemented (issue 14 item 4).

``IMPLEMENTED`` is the one table of the features each entity advertises: the
server JID, an account's bare JID (as the account asks), and each service the
server lists in disco#items. The test fails when an entity advertises a
feature the table does not register, when the table registers one the entity
does not advertise, and when a feature's probe (a request that needs the
feature) is answered ``service-unavailable`` or ``feature-not-implemented``
— advertised, but nobody handles it. A feature that no single request can
exercise (a behaviour, a stream or stanza attribute) names the tests that
prove it instead of a probe.

Adding a feature: advertise it, add its row here with a probe.
"""

from __future__ import annotations

from tests.doors_helpers import DoorsTestCase
from tests.server_helpers import DOMAIN

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = "http://jabber.org/protocol/pubsub#owner"
ALICE = f"alice@{DOMAIN}"
NODE = "disco-probe"

# A probe is (iq type, iq child) sent to the entity; a str is why there is none.
Probe = tuple[str, str] | str


def pubsub(body: str) -> str:
    return f"<pubsub xmlns='{NS_PUBSUB}'>{body}</pubsub>"


def owner(body: str) -> str:
    return f"<pubsub xmlns='{NS_OWNER}'>{body}</pubsub>"


BEHAVIOUR = "a behaviour of every request, not a request of its own: tests/test_pubsub_protocol.py, tests/test_doors_*.py"
PUBSUB_FEATURES: dict[str, Probe] = {f"{NS_PUBSUB}#{name}": probe for name, probe in {
    "publish": ("set", pubsub(f"<publish node='{NODE}'><item id='i'><x xmlns='probe'/></item></publish>")),
    "publish-options": ("set", pubsub(
        f"<publish node='{NODE}'><item id='i'><x xmlns='probe'/></item></publish><publish-options/>")),
    "retrieve-items": ("get", pubsub(f"<items node='{NODE}'/>")),
    "item-ids": ("get", pubsub(f"<items node='{NODE}'><item id='i'/></items>")),
    "retract-items": ("set", pubsub(f"<retract node='{NODE}'><item id='i'/></retract>")),
    "delete-items": ("set", pubsub(f"<retract node='{NODE}'><item id='i'/></retract>")),
    "subscribe": ("set", pubsub(f"<subscribe node='{NODE}' jid='{ALICE}'/>")),
    "subscription-options": ("get", pubsub(f"<options node='{NODE}' jid='{ALICE}'/>")),
    "retrieve-subscriptions": ("get", pubsub("<subscriptions/>")),
    "retrieve-affiliations": ("get", pubsub("<affiliations/>")),
    "create-nodes": ("set", pubsub(f"<create node='{NODE}-new'/>")),
    "instant-nodes": ("set", pubsub("<create/>")),
    "create-and-configure": ("set", pubsub(f"<create node='{NODE}-conf'/><configure/>")),
    "config-node": ("get", owner(f"<configure node='{NODE}'/>")),
    "retrieve-default": ("get", owner("<default/>")),
    "purge-nodes": ("set", owner(f"<purge node='{NODE}'/>")),
    "delete-nodes": ("set", owner(f"<delete node='{NODE}-gone'/>")),
    "manage-subscriptions": ("get", owner(f"<subscriptions node='{NODE}'/>")),
    "manage-affiliations": ("get", owner(f"<affiliations node='{NODE}'/>")),
    "modify-affiliations": ("set", owner(f"<affiliations node='{NODE}'><affiliation jid='{ALICE}' "
                                          "affiliation='owner'/></affiliations>")),
    "meta-data": ("get", f"<query xmlns='{NS_DISCO_INFO}' node='{NODE}'/>"),
    **{name: BEHAVIOUR for name in (
        "access-authorize", "access-open", "access-presence", "access-roster", "access-whitelist",
        "auto-create", "auto-subscribe", "config-node-max", "filtered-notifications", "last-published",
        "outcast-affiliation", "persistent-items", "publish-only-affiliation", "publisher-affiliation",
        "subscription-notifications")},
}.items()}

COMMON: dict[str, Probe] = {
    NS_DISCO_INFO: ("get", f"<query xmlns='{NS_DISCO_INFO}'/>"),
    "urn:xmpp:ping": ("get", "<ping xmlns='urn:xmpp:ping'/>"),
}

IMPLEMENTED: dict[str, dict[str, Probe]] = {
    "server": {
        **COMMON,
        "jabber:iq:version": ("get", "<query xmlns='jabber:iq:version'/>"),
        "jabber:iq:roster": ("get", "<query xmlns='jabber:iq:roster'/>"),
        "urn:xmpp:features:rosterver": "a roster attribute: test_presence_roster.py::test_roster_versioning",
        "urn:xmpp:carbons:2": ("set", "<enable xmlns='urn:xmpp:carbons:2'/>"),
        "urn:xmpp:mam:2": ("set", "<query xmlns='urn:xmpp:mam:2'/>"),
        "jabber:iq:register": ("get", "<query xmlns='jabber:iq:register'/>"),
        "urn:xmpp:mam:2#extended": ("set", "<query xmlns='urn:xmpp:mam:2'><flip-page/></query>"),
        "urn:xmpp:blocking": ("get", "<blocklist xmlns='urn:xmpp:blocking'/>"),
        "jabber:iq:last": ("get", "<query xmlns='jabber:iq:last'/>"),
        NS_DISCO_ITEMS: ("get", f"<query xmlns='{NS_DISCO_ITEMS}'/>"),
        "http://jabber.org/protocol/commands": (
            "set", "<command xmlns='http://jabber.org/protocol/commands' action='execute' "
                   "node='http://jabber.org/protocol/admin#get-online-users-num'/>"),
        "vcard-temp": ("get", "<vCard xmlns='vcard-temp'/>"),
    },
    "account": {
        **COMMON,
        **PUBSUB_FEATURES,
        NS_DISCO_ITEMS: ("get", f"<query xmlns='{NS_DISCO_ITEMS}'/>"),
        "jabber:iq:version": ("get", "<query xmlns='jabber:iq:version'/>"),
        "urn:xmpp:mam:2": ("set", "<query xmlns='urn:xmpp:mam:2'/>"),
        "urn:xmpp:push:0": ("set", "<disable xmlns='urn:xmpp:push:0' jid='push.example'/>"),
        "urn:xmpp:mam:2#extended": ("set", "<query xmlns='urn:xmpp:mam:2'><flip-page/></query>"),
        "vcard-temp": ("get", "<vCard xmlns='vcard-temp'/>"),
        "urn:xmpp:bookmarks:1#compat": (
            "get", "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>"),
        "urn:xmpp:pep-vcard-conversion:0": "a behaviour of publishes: tests/test_doors_personal.py::Avatars, "
                                           "tests/test_personal_slixmpp.py",
    },
    f"pubsub.{DOMAIN}": {
        **COMMON,
        **PUBSUB_FEATURES,
        NS_DISCO_ITEMS: ("get", f"<query xmlns='{NS_DISCO_ITEMS}'/>"),
    },
    f"chat.{DOMAIN}": {
        **COMMON,
        **PUBSUB_FEATURES,
        NS_DISCO_ITEMS: ("get", f"<query xmlns='{NS_DISCO_ITEMS}'/>"),
        "http://jabber.org/protocol/muc": "joining is presence: tests/test_groupchat.py, tests/test_doors_room.py",
    },
    f"upload.{DOMAIN}": {  # with --http-port (DiscoExactnessWithWeb)
        NS_DISCO_INFO: ("get", f"<query xmlns='{NS_DISCO_INFO}'/>"),
        "urn:xmpp:http:upload:0": ("get", "<request xmlns='urn:xmpp:http:upload:0' filename='a' size='1'/>"),
    },
}

UNHANDLED = ("service-unavailable", "feature-not-implemented")


class DiscoExactness(DoorsTestCase):
    users = ("alice",)

    async def features(self, client, target: str) -> set[str]:
        reply = await self.iq(client, "get", target, f"<query xmlns='{NS_DISCO_INFO}'/>")
        self.assertEqual(reply["type"], "result", reply.toXml())
        return {f["var"] for f in reply.query.elements() if f.name == "feature"}

    async def test_every_entity_advertises_exactly_what_is_implemented(self):
        alice = await self.online("alice", "r")
        items = await self.iq(alice, "get", DOMAIN, f"<query xmlns='{NS_DISCO_ITEMS}'/>")
        services = sorted(i["jid"] for i in items.query.elements() if i.name == "item")
        self.assertEqual([s for s in services if s not in IMPLEMENTED], [],
                         "a service the table does not describe")
        problems = []
        for name, target in [("server", DOMAIN), ("account", ALICE), *[(s, s) for s in services]]:
            table = IMPLEMENTED[name]
            advertised = await self.features(alice, target)
            problems += [f"{name} advertises {f}, which the table does not register"
                         for f in sorted(advertised - table.keys())]
            problems += [f"{name} does not advertise {f}, which the table registers"
                         for f in sorted(table.keys() - advertised)]
            for feature in sorted(advertised & table.keys()):
                probe = table[feature]
                if isinstance(probe, str):
                    continue
                kind, child = probe
                reply = await self.iq(alice, kind, target, child)
                conditions = {c.name for c in reply.error.elements()} if reply.error is not None else set()
                if conditions & set(UNHANDLED):
                    problems.append(f"{name} advertises {feature}, but its probe is answered "
                                    f"{sorted(conditions)}: {reply.toXml()[:300]}")
        self.assertEqual(problems, [])

    async def test_the_table_is_tested(self):
        """Every probe-less row says which tests prove it."""
        for table in IMPLEMENTED.values():
            for feature, probe in table.items():
                if isinstance(probe, str):
                    self.assertIn("test", probe, feature)


class DiscoExactnessWithWeb(DiscoExactness):
    """The same, with the HTTP port on: the upload service is listed and described."""

    server_args = ("--no-tls", "--allow-plaintext-auth", "--http-port", "0", "--http-plain",
                   "--http-interfaces", "127.0.0.1")
