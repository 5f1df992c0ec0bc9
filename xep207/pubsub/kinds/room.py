"""Rooms: XEP-0045 groupchat as pubsub (XEP-0207 §5).

A room is a node on the chat service; an occupant is a subscription of a
full JID with the subscription option ``roomnick``; a groupchat message is a
publish; history is the node's items; owner/admin/member/outcast are the
node's affiliations (XEP-0045 "admin" is a publisher listed in the room's
settings, since XEP-0060 has no admin affiliation).

Joining is subscribing, whichever door: the XEP-0045 presence and an
XEP-0060 subscribe with ``roomnick`` run the same admission checks below
(bans, members-only, password, lock, nick conflicts, max users), each a small
function, as Prosody's ``plugins/muc/*.lib.lua`` are.
"""

from __future__ import annotations

import functools
import time

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Final, Literal, Mapping, Sequence
from xml.sax.saxutils import unescape

from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from xep207.jids import InvalidFormat, jid_from_parts
from xep207.pubsub import errors
from xep207.pubsub.kinds.base import (
    KIND_FIELD,
    Access,
    NodeKind,
    NodeKindName,
    only_options,
    single_value,
)
from xep207.storage.records import (
    MEMBER,
    NONE,
    OUTCAST,
    OWNER,
    PUBLISHER,
    SUBSCRIBED,
    AffiliationName,
    Item,
    Node,
    NodeConfig,
    VIA_LEGACY,
    Subscription,
    Via,
    bare,
)
from xep207.xmlutil import parse_message_item, release, restamped

NICK = "roomnick"
ROLE = "xep207#role"
PASSWORD_OPTION = "muc#password"  # the XEP-0060 door's way to give a room password; never stored
ROOM_OPTIONS = (NICK, PASSWORD_OPTION, "pubsub#deliver", ROLE)
NS_NICK = "http://jabber.org/protocol/nick"  # XEP-0172: the sender's room nick, kept in the item
NS_MUC_USER = "http://jabber.org/protocol/muc#user"  # the room's own voice: never an occupant's
ROLES = ("visitor", "participant", "moderator")
# How long a new room waits for its owner's configuration before it opens by
# itself (Prosody's muc_room_lock_timeout): a client that ignores status 201
# still gets a usable room.
LOCK_TIMEOUT = 300.0

# XEP-0045 affiliation <-> pubsub affiliation.
MucAffiliation = Literal["owner", "admin", "member", "none", "outcast"]
ADMIN: Final = "admin"
_MUC_OF: Final[Mapping[AffiliationName, MucAffiliation]] = {
    PUBLISHER: MEMBER, MEMBER: MEMBER, OUTCAST: OUTCAST}
_PUBSUB_OF: Final[Mapping[str, AffiliationName]] = {
    OWNER: OWNER, ADMIN: PUBLISHER, MEMBER: PUBLISHER, OUTCAST: OUTCAST}

# XEP-0045 settings by form var; each value has its field's type (bool, str, JID list).
DEFAULT_ROOM: dict[str, Any] = {
    "muc#roomconfig_roomname": "", "muc#roomconfig_roomdesc": "",
    "muc#roomconfig_persistentroom": False, "muc#roomconfig_publicroom": True,
    "muc#roomconfig_membersonly": False, "muc#roomconfig_passwordprotectedroom": False,
    "muc#roomconfig_roomsecret": "", "muc#roomconfig_maxusers": "0",
    "muc#roomconfig_moderatedroom": False, "muc#roomconfig_changesubject": False,
    "muc#roomconfig_historylength": "50", "muc#roomconfig_roomadmins": [],
    # XEP-0045 §16.5.3; semi-anonymous by default, as Prosody and ejabberd are.
    "muc#roomconfig_whois": "moderators",
}
WHOIS = ("moderators", "anyone")


def truth(value) -> bool:
    return value in (True, 1, "1", "true")


def muc_affiliation(pubsub_affiliation: AffiliationName, entity: str, admins) -> MucAffiliation:
    """An admin is a publisher the room's settings list (XEP-0060 has no
    admin): a ban or a demotion through either door ends the admin status."""
    if pubsub_affiliation == OWNER:
        return OWNER
    if pubsub_affiliation == PUBLISHER and entity in admins:
        return ADMIN
    return _MUC_OF.get(pubsub_affiliation, NONE)


def pubsub_affiliation(affiliation: str) -> AffiliationName:
    return _PUBSUB_OF.get(affiliation, NONE)


class Room:
    """A room node's configuration seen as XEP-0045 settings."""

    def __init__(self, node: Node):
        self.node = node
        muc = node.config.extra.get("muc", {})
        assert isinstance(muc, Mapping), "RoomKind keeps a room's settings as a mapping"
        self.settings: dict[str, Any] = {**DEFAULT_ROOM, **muc}

    def __getitem__(self, name):
        return self.settings["muc#roomconfig_" + name]

    @property
    def name(self) -> str:
        return self["roomname"] or self.node.node_id

    @functools.cached_property
    def admins(self) -> frozenset[str]:
        return frozenset(self["roomadmins"] or [])

    def flag(self, name) -> bool:
        return truth(self[name])

    @property
    def non_anonymous(self) -> bool:
        """Whether every occupant may see every occupant's real JID (§7.2.3)."""
        return self["whois"] == "anyone"

    def shows_jids_to(self, role: str) -> bool:
        """XEP-0045 §7.2.4: in a semi-anonymous room only moderators see real JIDs."""
        return self.non_anonymous or role == "moderator"

    @property
    def locked(self) -> bool:
        """XEP-0045 §10.1.1: a new room admits nobody but its owners until
        they accept a configuration, or the lock expires (the stored value is
        when; ``True``, as older versions stored it, never expires)."""
        until = self.node.config.extra.get("locked")
        if until is True:
            return True
        return isinstance(until, (int, float)) and not isinstance(until, bool) and time.time() < until

    @property
    def max_users(self) -> int:
        try:
            return int(self["maxusers"] or 0)
        except ValueError:
            return 0


def unlocked(config: NodeConfig) -> NodeConfig:
    return config.replace(extra={k: v for k, v in config.extra.items() if k != "locked"})


@dataclass(frozen=True)
class Occupant:
    jid: str
    nick: str
    affiliation: MucAffiliation
    role: str
    subscription: Subscription


def role_of(room: Room, affiliation: MucAffiliation, subscription: Subscription) -> str:
    explicit = subscription.options.get(ROLE)
    if explicit:
        return str(explicit)
    if affiliation in (OWNER, ADMIN):
        return "moderator"
    if room.flag("moderatedroom") and affiliation != MEMBER:
        return "visitor"
    return "participant"


async def occupants_of(engine, room: Room,
                       affiliations: Mapping[str, AffiliationName] | None = None,
                       subscriptions: Sequence[Subscription] | None = None) -> list[Occupant]:
    """The room's occupants by nick. Derived from the node, its affiliations and
    its subscriptions alone, so it is remembered for as long as the storage
    cache hands out the very same objects (any write replaces them). Callers
    read the list, never change it."""
    node = room.node
    if affiliations is None and subscriptions is None:
        state = engine.cached_metadata(node.service, node.node_id)
        if state is not None and state[0] is node:
            _, affiliations, subscriptions = state
    if affiliations is None:
        affiliations = await engine.storage.get_affiliations(node.service, node.node_id)
    if subscriptions is None:
        subscriptions = await engine.storage.get_subscriptions(node.service, node.node_id)
    key = (node.service, node.node_id)
    memo = engine.derived.get(key)
    if memo is not None and memo[0] is node and memo[1] is affiliations and memo[2] is subscriptions:
        return memo[3]
    found = []
    for subscription in subscriptions:
        nick = subscription.options.get(NICK)
        if subscription.state != SUBSCRIBED or not nick:
            continue
        entity = bare(subscription.subscriber)
        affiliation = muc_affiliation(affiliations.get(entity, NONE), entity, room.admins)
        found.append(Occupant(subscription.subscriber, str(nick), affiliation,
                              role_of(room, affiliation, subscription), subscription))
    found.sort(key=lambda o: o.nick)
    engine.remember_derived(key, (node, affiliations, subscriptions, found))
    return found


def occupant_of(occupants: Sequence[Occupant], jid: str) -> Occupant | None:
    """``jid``'s occupancy: as a full JID, or as the bare JID a native
    occupant may have joined with (then all its resources are in)."""
    return next((o for o in occupants if o.jid == jid), None) or \
        next((o for o in occupants if o.jid == bare(jid)), None)


@dataclass(frozen=True)
class Joining:
    """Everything an admission check may look at."""

    room: Room
    jid: str
    nick: str
    affiliation: MucAffiliation
    password: str | None
    occupants: Sequence[Occupant]


def banned(joining: Joining) -> None:
    if joining.affiliation == OUTCAST:
        raise StanzaError("forbidden", text="you are banned from this room")


def locked(joining: Joining) -> None:
    if joining.room.locked and joining.affiliation != OWNER:
        raise StanzaError("item-not-found", text="the room is being configured")


def members_only(joining: Joining) -> None:
    if joining.room.flag("membersonly") and joining.affiliation == NONE:
        raise StanzaError("registration-required", text="this room is members-only")


def password(joining: Joining) -> None:
    if joining.room.flag("passwordprotectedroom") and joining.affiliation != OWNER:
        if joining.password != joining.room["roomsecret"]:
            raise StanzaError("not-authorized", text="a password is required")


def nick_free(joining: Joining) -> None:
    if any(o.nick == joining.nick and bare(o.jid) != bare(joining.jid) for o in joining.occupants):
        raise StanzaError("conflict", text="that nickname is in use")


def room_not_full(joining: Joining) -> None:
    others = [o for o in joining.occupants if o.jid != joining.jid]
    if joining.room.max_users and len(others) >= joining.room.max_users \
            and joining.affiliation not in (OWNER, ADMIN):
        raise StanzaError("service-unavailable", text="the room is full")


# In XEP-0045 §7.2's order of error precedence. A plugin may append its own.
ADMISSION: list[Callable[[Joining], None]] = [banned, locked, members_only, password, nick_free, room_not_full]
# What a non-occupant must pass to read the history (no nick, no password given).
READING = [banned, locked, members_only, password]


def valid_nick(nick: str | None) -> str:
    """The nick as the room JID's resource, prepared (RFC 7622 §3.4): the
    XEP-0045 door gets it prepared by the router, the XEP-0060 door here, so
    the two compare equal (XEP-0045 §7.2.9)."""
    if not nick:
        raise errors.bad_request(text="join with a roomnick subscription option")
    try:
        prepared = jidlib.JID(tuple=("room", "example.org", nick)).resource
    except jidlib.InvalidFormat:
        raise StanzaError("jid-malformed", text="not a valid room nickname")
    if not prepared:
        raise StanzaError("jid-malformed", text="not a valid room nickname")
    return prepared


def may_read_affiliations(room: "Room", affiliation: MucAffiliation) -> bool:
    """XEP-0045 §9.5: admins and owners read the affiliation lists; so do the
    members of a members-only non-anonymous room (Prosody's rule), as OMEMO
    clients such as Conversations need every member's JID to encrypt to."""
    if affiliation in (OWNER, ADMIN):
        return True
    return affiliation == MEMBER and room.flag("membersonly") and room.non_anonymous


def may_change_subject(room: "Room", role: str) -> bool:
    """XEP-0045 §8.1: moderators, or everyone with voice if the room says so."""
    return role == "moderator" or (room.flag("changesubject") and role != "visitor")


class RoomKind(NodeKind):
    name: ClassVar[NodeKindName] = "room"
    ids_tell_time: ClassVar[bool] = True  # (read by those told the time anyway)

    def __init__(self, chat_domain: str, max_history: int = 50, lock_timeout: float = LOCK_TIMEOUT):
        self.chat_domain = chat_domain
        self.max_history = max_history
        self.lock_timeout = lock_timeout

    def claims(self, engine, service: str, node_id: str) -> bool:
        return service == self.chat_domain

    def initial_config(self, engine, service: str, node_id: str) -> NodeConfig:
        return engine.default_config.replace(
            access_model="open", publish_model="subscribers", persist_items=True,
            max_items=self.max_history, notification_type="groupchat",
            extra={KIND_FIELD: "room", "muc": dict(DEFAULT_ROOM), "locked": time.time() + self.lock_timeout})

    async def check_create(self, engine, requestor, service, node_id, values) -> None:
        raise errors.forbidden(text="rooms are made by joining them")

    async def may_auto_create(self, engine, requestor: str, service: str, node_id: str,
                              operation: str) -> bool:
        """Joining a room that does not exist creates it (XEP-0045 §10.1)."""
        if operation != "subscribe":
            return False
        try:
            prepared = jid_from_parts(node_id, service).user  # (RFC 7622: at most 1023 octets)
        except InvalidFormat:
            raise StanzaError("jid-malformed")
        if prepared != node_id:  # a room is room@chat.DOMAIN: one name, one room
            raise StanzaError("jid-malformed", text=f"the room is called {prepared}")
        return True

    async def after_create(self, engine, node: Node, requestor: str,
                           publishers: Sequence[str], via: Via) -> None:
        await engine.storage.set_affiliation(node.service, node.node_id, node.service, OWNER)
        await engine.storage.set_affiliation(node.service, node.node_id, node.creator, OWNER)
        if via != VIA_LEGACY:
            # A room made by an XEP-0060 subscribe is an instant room: its maker
            # gets no status 201 to tell it to configure (XEP-0207 §5 has none).
            await engine.storage.set_node_config(node.service, node.node_id, unlocked(node.config))

    # Who is who ---------------------------------------------------------------------

    @staticmethod
    def _muc(access: Access, entity: str) -> MucAffiliation:
        room = Room(access.node)
        return muc_affiliation(access.affiliations.get(bare(entity), NONE), bare(entity), room.admins)

    async def _occupant(self, access: Access, jid: str) -> Occupant | None:
        occupants = await occupants_of(access.engine, Room(access.node), access.affiliations,
                                       await access.subscriptions())
        return occupant_of(occupants, jid)

    async def _is_moderator(self, access: Access) -> bool:
        if access.trusted or self._muc(access, access.requestor) in (OWNER, ADMIN):
            return True
        occupant = await self._occupant(access, access.requestor)
        return occupant is not None and occupant.role == "moderator"


    # Joining (subscribing) ----------------------------------------------------------

    async def check_subscribe(self, access: Access, subscriber: str,
                              options: Mapping[str, object]) -> Mapping[str, object]:
        """XEP-0045 §7.2 admission, for the legacy join and the native subscribe alike."""
        if bare(subscriber) != bare(access.requestor):
            raise errors.bad_request("invalid-jid")  # nobody joins anybody else
        only_options(options, ROOM_OPTIONS)
        if ROLE in options:
            raise errors.forbidden(text="a role is given by a moderator")
        directory = access.engine.interest
        if directory is not None and not directory.is_online(subscriber):
            # An occupant is a session: one that does not exist would never leave.
            raise errors.not_acceptable(text="occupants are connected sessions")
        nick = valid_nick(single_value(options, NICK))
        given = single_value(options, PASSWORD_OPTION)
        room = Room(access.node)
        joining = Joining(room, subscriber, nick, self._muc(access, subscriber), given,
                          await occupants_of(access.engine, room, access.affiliations))
        for check in ADMISSION:
            check(joining)
        cleaned: dict[str, object] = {NICK: nick}
        if "pubsub#deliver" in options:
            cleaned["pubsub#deliver"] = options["pubsub#deliver"]
        return cleaned

    def listed_owners(self, node: Node) -> list[str]:
        """A semi-anonymous room's disco#info meta-data names no owner: its
        real JID is the moderators' to see (XEP-0045 §7.2.4), not a stranger's."""
        return [node.creator] if Room(node).non_anonymous else []

    def needs_approval(self, access: Access, subscriber: str) -> bool:
        return False

    async def check_options(self, access: Access, subscription: Subscription,
                            options: Mapping[str, object]) -> Mapping[str, object]:
        """A nick change is the occupant's own; a role is a moderator's."""
        only_options(options, ROOM_OPTIONS)
        own = bare(subscription.subscriber) == bare(access.requestor)
        cleaned: dict[str, object] = {}
        room = Room(access.node)
        if NICK in options:
            if not own:
                raise errors.forbidden(text="only the occupant changes its nick")
            nick = valid_nick(single_value(options, NICK))
            nick_free(Joining(room, subscription.subscriber, nick, NONE, None,
                              await occupants_of(access.engine, room, access.affiliations)))
            cleaned[NICK] = nick
        if ROLE in options:
            if own and not access.trusted:
                raise errors.forbidden(text="nobody gives herself a role")
            role = single_value(options, ROLE)
            if role not in ROLES:
                raise errors.bad_request(text="unknown role")
            if not await self._is_moderator(access):
                raise errors.forbidden(text="only moderators change roles")
            target = self._muc(access, subscription.subscriber)
            mine = "trusted" if access.trusted else self._muc(access, access.requestor)
            if target in (OWNER, ADMIN) and mine not in (OWNER, "trusted"):
                raise StanzaError("not-allowed", text="moderators cannot change an admin's role")
            current = role_of(Room(access.node), target, subscription)
            if "moderator" in (role, current) and mine not in (OWNER, ADMIN, "trusted"):
                raise errors.forbidden(text="only admins grant or revoke moderation (XEP-0045 §9.6)")
            cleaned[ROLE] = role
        if "pubsub#deliver" in options:
            if not own:
                raise errors.forbidden()
            cleaned["pubsub#deliver"] = options["pubsub#deliver"]
        return cleaned

    async def check_unsubscribe(self, access: Access, subscriber: str) -> None:
        if bare(subscriber) != bare(access.requestor):
            raise errors.bad_request("invalid-jid")

    async def check_subscription_change(self, access: Access, subscriber: str, state: str,
                                        existing: Subscription | None) -> bool:
        """An owner's XEP-0060 subscription management is a kick: nobody is
        made an occupant by someone else."""
        if state != NONE:
            return False
        target = self._muc(access, subscriber)
        return target not in (OWNER, ADMIN) or self._muc(access, access.requestor) == OWNER

    async def check_configure(self, access: Access, values: Mapping[str, object]) -> None:
        """A room's settings are XEP-0045's (muc#owner), kept in step with its
        node configuration by the service."""
        raise errors.forbidden(text="configure rooms with http://jabber.org/protocol/muc#owner")

    async def check_owner(self, access: Access, operation: str) -> None:
        if operation == "subscriptions" and await self._is_moderator(access):
            return  # moderators kick (XEP-0045 §8.2)
        if operation == "affiliations" and \
                may_read_affiliations(Room(access.node), self._muc(access, access.requestor)):
            return  # the affiliation list; changes are check_affiliation_change's
        if operation == "delete":
            raise errors.forbidden(text="destroy rooms with http://jabber.org/protocol/muc#owner")
        await super().check_owner(access, operation)

    async def check_affiliation_change(self, access: Access,
                                       changes: Mapping[str, AffiliationName]) -> None:
        """XEP-0045 §9–10: admins ban and grant membership; only owners touch
        owners and admins; a room keeps an owner besides the service."""
        mine = self._muc(access, access.requestor)
        if mine not in (OWNER, ADMIN):
            raise errors.forbidden(text="only admins and owners change affiliations")
        admins = Room(access.node).admins
        for entity, affiliation in changes.items():
            current = self._muc(access, entity)
            if entity == access.service:
                raise errors.forbidden(text="the service owns every room")
            if (affiliation == OWNER or current in (OWNER, ADMIN) or entity in admins) and mine != OWNER:
                raise StanzaError("not-allowed", text="only owners change owners and admins")
        after = {**access.affiliations, **changes}
        if not any(a == OWNER for e, a in after.items() if e != access.service):
            raise StanzaError("conflict", text="a room keeps at least one owner")

    async def after_affiliation_change(self, engine, node: Node,
                                       changes: Mapping[str, AffiliationName]) -> None:
        """An admin is a publisher listed in the settings: one that stops being
        a publisher (through either door) leaves the list, else a later grant of
        membership would silently make it an admin again."""
        room = Room(node)
        admins = [a for a in room["roomadmins"] or [] if changes.get(a, PUBLISHER) == PUBLISHER]
        if admins != list(room["roomadmins"] or []):
            muc = {**room.settings, "muc#roomconfig_roomadmins": admins}
            await engine.storage.set_node_config(node.service, node.node_id,
                                                 node.config.replace(extra={**node.config.extra, "muc": muc}))

    # Messages ----------------------------------------------------------------------

    async def check_publish(self, access: Access) -> None:
        occupant = await self._occupant(access, access.requestor)
        if occupant is None:
            raise errors.forbidden(text="join the room (subscribe with a roomnick) first")
        if occupant.role == "visitor":
            raise errors.forbidden(text="visitors have no voice in this moderated room")

    async def vet_item(self, access: Access, item_id, payload: str):
        """A groupchat message from the publisher, under its current nick
        (never one the payload claims)."""
        message = parse_message_item(payload, "a room item")
        occupant = await self._occupant(access, access.requestor)
        if any(c.name == "subject" for c in message.elements()) and not access.trusted and \
                (occupant is None or not may_change_subject(Room(access.node), occupant.role)):
            raise errors.forbidden(text="only moderators change the subject")
        nick = occupant.nick if occupant is not None else access.requestor.split("@")[0]
        payload = room_item(message, f"{access.node_id}@{access.service}", nick)
        release(message)  # (serialized: no cycle left to the collector, per native message)
        return item_id, payload

    def reply_to(self, access: Access, item: Item) -> str | None:
        """Replies go to the publisher's occupant JID (room/nick), never its
        real one: a semi-anonymous room hides it from the occupants."""
        nick = nick_of(item.payload)
        return f"{access.node_id}@{access.service}/{nick}" if nick else None

    def overwrites_any(self, access: Access) -> bool:
        return False  # shared history: nobody rewrites another's message

    async def check_overwrite(self, access: Access, existing: Item) -> None:
        if bare(existing.publisher) != bare(access.requestor):
            raise errors.forbidden(text="that message is someone else's")

    async def check_retract(self, access: Access, existing: Sequence[Item]) -> None:
        if all(bare(i.publisher) == bare(access.requestor) for i in existing):
            return
        if not await self._is_moderator(access):
            raise errors.forbidden(text="only moderators retract others' messages")

    async def check_retrieve(self, access: Access) -> None:
        """History: occupants and affiliates; others as if they joined with no password."""
        if self._muc(access, access.requestor) in (OWNER, ADMIN, MEMBER):
            return
        if await self._occupant(access, access.requestor) is not None:
            return
        room = Room(access.node)
        reader = Joining(room, access.requestor, "", self._muc(access, access.requestor), None, ())
        for check in READING:
            check(reader)


def room_item(message: domish.Element, room_jid: str, nick: str) -> str:
    """A groupchat message as the room keeps it, whichever door it came
    through: from the occupant's room JID (the item is read through XEP-0060
    too, and a semi-anonymous room shows nobody but moderators a real JID;
    the item's publisher keeps it for the service), with its nick (XEP-0172),
    without muc#user children."""
    stamped = restamped(message, f"{room_jid}/{nick}", drop=("to",), without_uri=NS_NICK)
    # Status codes and occupant items (muc#user) are said by the room, never
    # relayed from an occupant (who could forge a 173 or a real JID with them).
    stamped.children = [c for c in stamped.children
                        if not (isinstance(c, domish.Element) and c.uri == NS_MUC_USER)]
    stamped["type"] = "groupchat"
    return add_nick(stamped.toXml(), nick)


_NICK_OPENING = f"<nick xmlns='{NS_NICK}'>"


def nick_of(payload: str) -> str | None:
    """The nick ``add_nick`` put at the end of a room item (no parse: this is
    on every message's path)."""
    start = payload.rfind(_NICK_OPENING)
    end = payload.rfind("</nick>")
    if start < 0 or end < start:
        return None
    return unescape(payload[start + len(_NICK_OPENING):end], {"&apos;": "'", "&quot;": '"'}) or None


def add_nick(payload: str, nick: str) -> str:
    """The serialized message with an XEP-0172 ``<nick/>`` child at the end."""
    element = domish.Element((NS_NICK, "nick"))
    element.addContent(nick)
    if payload.endswith("/>"):
        return payload[:-2] + ">" + element.toXml() + "</message>"
    return payload[: -len("</message>")] + element.toXml() + "</message>"
