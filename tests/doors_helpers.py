"""Scaffolding for the two-doors tests (issue 10, TWO_DOORS_SPEC.md).

A server with alice, bob, carol and eve; raw clients that log in and speak
either door: the legacy stanza or XEP-0060 on pubsub.DOMAIN, chat.DOMAIN or an
account's bare JID. ``settle`` is how a test proves that something did NOT
happen: every stream processes its stanzas in order and the server delivers in
order, so once a ping round trip on the attacker's stream and on the victim's
stream came back (with the server's own work drained in between), whatever the
attack could have caused has already arrived.
"""

from __future__ import annotations

import itertools
from xml.sax.saxutils import escape, quoteattr

from tests.server_helpers import DOMAIN, ServerTestCase

ALICE, BOB, CAROL, EVE = (f"{u}@{DOMAIN}" for u in ("alice", "bob", "carol", "eve"))
PUBSUB = f"pubsub.{DOMAIN}"
CHAT = f"chat.{DOMAIN}"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = NS_PUBSUB + "#owner"
NS_EVENT = NS_PUBSUB + "#event"
NS_ERRORS = NS_PUBSUB + "#errors"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_MAM = "urn:xmpp:mam:2"
NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = NS_MUC + "#user"
NS_ADMIN = NS_MUC + "#admin"
NS_MUC_OWNER = NS_MUC + "#owner"
NS_ROSTER = "jabber:iq:roster"
NODE_CONFIG = NS_PUBSUB + "#node_config"
SUBSCRIBE_OPTIONS = NS_PUBSUB + "#subscribe_options"
PUBLISH_OPTIONS = NS_PUBSUB + "#publish-options"

_ids = itertools.count(1)


def pair(a: str, b: str) -> str:
    """The pair node name the spec reserves for two accounts (sorted bare JIDs)."""
    first, second = sorted((a, b))
    return f"chat:{first}:{second}"


def form(form_type: str, fields: dict, type: str = "submit") -> str:
    """A data form; a list value gives the field several values."""
    parts = [f"<field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>"]
    for var, value in fields.items():
        values = value if isinstance(value, list) else [value]
        parts.append(f"<field var={quoteattr(var)}>"
                     + "".join(f"<value>{escape(str(v))}</value>" for v in values) + "</field>")
    return f"<x xmlns='jabber:x:data' type='{type}'>{''.join(parts)}</x>"


def chat_item(body: str, **attributes) -> str:
    extra = "".join(f" {k}={quoteattr(v)}" for k, v in attributes.items())
    return f"<message xmlns='jabber:client'{extra}><body>{escape(body)}</body></message>"


def error_of(reply) -> tuple[str | None, str | None]:
    """(stanza condition, pubsub condition) of an error reply; (None, None) for a result."""
    if reply.getAttribute("type") != "error" or reply.error is None:
        return None, None
    stanza = next((c.name for c in reply.error.elements() if c.uri == NS_STANZAS), None)
    pubsub = next((c.name for c in reply.error.elements() if c.uri == NS_ERRORS), None)
    return stanza, pubsub


def is_iq(stanza_id):
    return lambda e: e.name == "iq" and e.getAttribute("id") == stanza_id


def message_with(text: str):
    """Any message carrying ``text`` (a legacy body, an event, a carbon, an error)."""
    return lambda e: e.name == "message" and text in e.toXml()


def chat_body(text: str):
    """A legacy chat message (not an event) whose body is ``text``."""
    return lambda e: (e.name == "message" and e.body is not None and str(e.body) == text
                      and e.getAttribute("type") != "error")


def event_on(node: str, child: str | None = None):
    """A XEP-0060 notification about ``node`` (``child``: items, delete, purge…)."""
    def match(e):
        if e.name != "message" or e.event is None or e.event.uri != NS_EVENT:
            return False
        return any(c.getAttribute("node") == node and (child is None or c.name == child)
                   for c in e.event.elements())
    return match


def from_room(room_jid: str, nick: str, type=None):
    return lambda e: (e.name == "presence" and e.getAttribute("from") == f"{room_jid}/{nick}"
                      and e.getAttribute("type") == type)


def statuses(presence) -> list[int]:
    x = next((c for c in presence.elements() if c.name == "x" and c.uri == NS_USER), None)
    return sorted(int(s["code"]) for s in x.elements() if s.name == "status") if x is not None else []


def groupchat(body: str):
    return lambda e: (e.name == "message" and e.getAttribute("type") == "groupchat"
                      and e.body is not None and str(e.body) == body)


class DoorsTestCase(ServerTestCase):
    """A server on memory storage with the four accounts of the spec."""

    server_args = ("--no-tls", "--allow-plaintext-auth")
    users = ("alice", "bob", "carol", "eve")
    maxDiff = None  # the answers of two doors side by side

    async def setUp(self):
        await self.start_server()

    # Sessions -------------------------------------------------------------------

    async def online(self, user: str, resource: str = "r", presence: bool = True):
        client = await self.connect()
        await client.login(user, resource=resource)
        if presence:
            client.send("<presence/>")
            await client.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == client.jid)
        return client

    async def roster_ready(self, user: str, resource: str = "r"):
        """Online with the roster fetched (so pushes reach it) and initial presence sent."""
        client = await self.online(user, resource, presence=False)
        await self.roster(client)
        client.send("<presence/>")
        await client.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == client.jid)
        return client

    async def logout(self, client) -> None:
        client.send("</stream:stream>")
        client.transport.loseConnection()
        await client.closed

    async def settle(self, *clients) -> None:
        """Everything the clients sent so far was processed, and everything it
        caused has been delivered to them (see the module docstring)."""
        for client in clients:
            await self.ping(client)
            await self.server.quiesce()
        for client in clients:
            await self.ping(client)

    async def ping(self, client) -> None:
        reply = await self.iq(client, "get", DOMAIN, "<ping xmlns='urn:xmpp:ping'/>")
        self.assertEqual(reply["type"], "result", reply.toXml())

    def nothing(self, client, match, since=0) -> None:
        """Call after ``settle``: ``client`` received nothing ``match``ing."""
        got = [e.toXml() for e in client.stanzas[since:] if match(e)]
        self.assertEqual(got, [], f"{client.jid} received what it must not")

    # Requests -------------------------------------------------------------------

    async def iq(self, client, type: str, to: str | None, body: str):
        stanza_id = f"q{next(_ids)}"
        to_attribute = f" to={quoteattr(to)}" if to else ""
        client.send(f"<iq type='{type}' id='{stanza_id}'{to_attribute}>{body}</iq>")
        return await client.wait_for(is_iq(stanza_id))

    def pubsub(self, client, type: str, to: str, body: str, owner: bool = False):
        return self.iq(client, type, to, f"<pubsub xmlns='{NS_OWNER if owner else NS_PUBSUB}'>{body}</pubsub>")

    def assert_ok(self, reply):
        self.assertEqual(reply["type"], "result", reply.toXml())
        return reply

    def assert_error(self, reply, condition: str, pubsub_condition: str | None = None):
        self.assertEqual(reply["type"], "error", reply.toXml())
        stanza, pubsub = error_of(reply)
        self.assertEqual(stanza, condition, reply.toXml())
        if pubsub_condition is not None:
            self.assertEqual(pubsub, pubsub_condition, reply.toXml())
        return reply

    def assert_failed(self, reply):
        """Where the spec names no condition: any error will do, a result will not."""
        self.assertEqual(reply["type"], "error", reply.toXml())
        return reply

    # XEP-0060 verbs --------------------------------------------------------------

    def create(self, client, to, node, config: dict | None = None):
        configure = f"<configure>{form(NODE_CONFIG, {f'pubsub#{k}': v for k, v in config.items()})}</configure>" \
            if config else ""
        return self.pubsub(client, "set", to, f"<create node={quoteattr(node)}/>{configure}")

    def publish(self, client, to, node, payload: str, item_id: str | None = None, publish_options=None):
        id_attribute = f" id={quoteattr(item_id)}" if item_id else ""
        extra = ""
        if publish_options:
            extra = f"<publish-options>{form(PUBLISH_OPTIONS, publish_options)}</publish-options>"
        return self.pubsub(client, "set", to, f"<publish node={quoteattr(node)}><item{id_attribute}>{payload}"
                                              f"</item></publish>{extra}")

    def subscribe(self, client, to, node, jid: str | None = None, options: dict | None = None):
        jid = jid or client.jid
        extra = ""
        if options is not None:
            extra = (f"<options node={quoteattr(node)} jid={quoteattr(jid)}>"
                     f"{form(SUBSCRIBE_OPTIONS, options)}</options>")
        return self.pubsub(client, "set", to, f"<subscribe node={quoteattr(node)} jid={quoteattr(jid)}/>{extra}")

    def set_options(self, client, to, node, options: dict, jid: str | None = None):
        jid = jid or client.jid
        return self.pubsub(client, "set", to, f"<options node={quoteattr(node)} jid={quoteattr(jid)}>"
                                              f"{form(SUBSCRIBE_OPTIONS, options)}</options>")

    def get_options(self, client, to, node, jid: str | None = None):
        jid = jid or client.jid
        return self.pubsub(client, "get", to, f"<options node={quoteattr(node)} jid={quoteattr(jid)}/>")

    def items(self, client, to, node):
        return self.pubsub(client, "get", to, f"<items node={quoteattr(node)}/>")

    def retract(self, client, to, node, item_id):
        return self.pubsub(client, "set", to, f"<retract node={quoteattr(node)} notify='true'>"
                                              f"<item id={quoteattr(item_id)}/></retract>")

    @staticmethod
    def item_ids(reply) -> list[str]:
        return [i["id"] for i in reply.pubsub.items.elements() if i.name == "item"]

    # Every XEP-0060 operation a stranger may try on a node -----------------------

    def stranger_attempts(self, node: str) -> dict[str, tuple[str, str, bool]]:
        """verb -> (iq type, pubsub body, owner namespace)."""
        q = quoteattr(node)
        return {
            "publish": ("set", f"<publish node={q}><item>{chat_item('forged')}</item></publish>", False),
            "items": ("get", f"<items node={q}/>", False),
            "subscribe": ("set", f"<subscribe node={q} jid='{EVE}'/>", False),
            "unsubscribe": ("set", f"<unsubscribe node={q} jid='{EVE}'/>", False),
            "retract": ("set", f"<retract node={q}><item id='whatever'/></retract>", False),
            "options-get": ("get", f"<options node={q} jid='{EVE}'/>", False),
            "options-set": ("set", f"<options node={q} jid='{EVE}'>"
                                   f"{form(SUBSCRIBE_OPTIONS, {'pubsub#deliver': '1'})}</options>", False),
            "configure-get": ("get", f"<configure node={q}/>", True),
            "configure-set": ("set", f"<configure node={q}>{form(NODE_CONFIG, {'pubsub#publish_model': 'open'})}"
                                     "</configure>", True),
            "delete": ("set", f"<delete node={q}/>", True),
            "purge": ("set", f"<purge node={q}/>", True),
            "affiliations-get": ("get", f"<affiliations node={q}/>", True),
            "affiliations-set": ("set", f"<affiliations node={q}><affiliation jid='{EVE}' "
                                        "affiliation='owner'/></affiliations>", True),
            "subscriptions-get": ("get", f"<subscriptions node={q}/>", True),
            "subscriptions-set": ("set", f"<subscriptions node={q}><subscription jid='{EVE}' "
                                         "subscription='subscribed'/></subscriptions>", True),
        }

    async def answers(self, client, to: str, node: str) -> dict[str, tuple]:
        """verb -> (type, stanza condition, pubsub condition) for every attempt."""
        found = {}
        for verb, (type, body, owner) in self.stranger_attempts(node).items():
            reply = await self.pubsub(client, type, to, body, owner=owner)
            found[verb] = (reply["type"], *error_of(reply))
        return found

    # Legacy stanzas ----------------------------------------------------------------

    @staticmethod
    def chat(client, to: str, body: str) -> None:
        client.send(f"<message to={quoteattr(to)} type='chat'><body>{escape(body)}</body></message>")

    async def mam(self, client, with_jid: str | None = None) -> list[str]:
        """The bodies in ``client``'s XEP-0313 archive (with ``with_jid``)."""
        fields = form(NS_MAM, {"with": with_jid}) if with_jid else ""
        query_id = f"mam{next(_ids)}"
        reply = await self.iq(client, "set", None, f"<query xmlns='{NS_MAM}' queryid='{query_id}'>{fields}</query>")
        self.assertEqual(reply["type"], "result", reply.toXml())
        results = [e for e in client.unconsumed("message") if e.result is not None
                   and e.result.getAttribute("queryid") == query_id]
        for e in results:
            e.consumed = True
        return [str(r.result.forwarded.message.body) for r in results]

    async def roster(self, client) -> dict[str, str | None]:
        reply = await self.iq(client, "get", None, f"<query xmlns='{NS_ROSTER}'/>")
        return {i["jid"]: i.getAttribute("subscription") for i in reply.query.elements(NS_ROSTER, "item")}


# Rooms ----------------------------------------------------------------------------

ROOM = "den"
ROOM_JID = f"{ROOM}@{CHAT}"
NS_NICK = "http://jabber.org/protocol/nick"


def error_presence(e):
    return e.name == "presence" and e.getAttribute("type") == "error"


def error_condition(stanza) -> str | None:
    error = stanza.error
    if error is None:
        return None
    return next((c.name for c in error.elements() if c.uri == NS_STANZAS), None)


class RoomDoorsTestCase(DoorsTestCase):
    """A room ``den`` on the chat service, reached through either door."""

    # Legacy door ---------------------------------------------------------------

    async def join(self, client, nick, muc="", instant=True):
        """A XEP-0045 join that must succeed; fires with the own presence.
        ``instant``: a room it creates (status 201) is accepted as an instant
        room (XEP-0045 §10.1.2), as Gajim, Conversations and poezio do."""
        client.send(f"<presence to='{ROOM_JID}/{nick}'><x xmlns='{NS_MUC}'>{muc}</x></presence>")
        own = await client.wait_for(lambda e: from_room(ROOM_JID, nick)(e) and 110 in statuses(e))
        await client.wait_for(lambda e: e.name == "message" and e.subject is not None)
        if instant and 201 in statuses(own):
            self.assert_ok(await self.iq(client, "set", ROOM_JID, f"<query xmlns='{NS_MUC_OWNER}'>"
                                                                  "<x xmlns='jabber:x:data' type='submit'/></query>"))
        return own

    async def refused_join(self, client, nick, muc="") -> str | None:
        """A XEP-0045 join that must fail; the error condition."""
        client.send(f"<presence to='{ROOM_JID}/{nick}'><x xmlns='{NS_MUC}'>{muc}</x></presence>")
        return error_condition(await client.wait_for(error_presence))

    def say(self, client, body):
        client.send(f"<message to='{ROOM_JID}' type='groupchat'><body>{body}</body></message>")

    async def configure(self, owner, **fields):
        values = {f"muc#roomconfig_{k}": v for k, v in fields.items()}
        reply = await self.iq(owner, "set", ROOM_JID,
                              f"<query xmlns='{NS_MUC_OWNER}'>{form(NS_MUC + '#roomconfig', values)}</query>")
        return self.assert_ok(reply)

    async def admin(self, client, item: str):
        return await self.iq(client, "set", ROOM_JID, f"<query xmlns='{NS_ADMIN}'>{item}</query>")

    async def room_with_alice(self, **config):
        """alice (legacy) creates the room as its owner and configures it."""
        alice = await self.online("alice", "phone")
        await self.join(alice, "Alice", instant=not config)
        if config:
            await self.configure(alice, **config)
        return alice

    # XEP-0060 door -------------------------------------------------------------

    def native_join(self, client, nick, **options):
        """Subscribe the full JID with ``roomnick`` (XEP-0207 §5)."""
        return self.subscribe(client, CHAT, ROOM, options={"roomnick": nick, **options})

    def native_say(self, client, body, item_id=None, **attributes):
        return self.publish(client, CHAT, ROOM, chat_item(body, **attributes), item_id=item_id)

    # State ---------------------------------------------------------------------

    async def subscription_of(self, jid):
        return await self.server.storage.get_subscription(CHAT, ROOM, jid)

    async def history(self) -> list[str]:
        page = await self.server.storage.page_items(CHAT, ROOM)
        return [i.payload for i in page.items]
