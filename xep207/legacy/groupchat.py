"""Groupchat as pubsub (XEP-0207 §5): a XEP-0045 service whose rooms are nodes.

A room is a node on the chat service; an occupant is a subscription of a
full JID with the subscribe option ``roomnick``; a groupchat message is a
publish; history is the node's items; owner/admin/member/outcast are the
node's affiliations (``muc_affiliation`` below maps them onto XEP-0060's).
The service is the owner of every node (it enforces XEP-0045's rules itself),
so the engine stays the single source of truth and native pubsub clients
join, publish and read through plain XEP-0060.

Where a stanza enters: ``GroupchatService`` (presence, message, iq to the
chat domain). Where it leaves: ``GroupchatService.deliver`` (room events) and
``_broadcast`` (occupant presence), each serialized once per event.
"""

from __future__ import annotations

import datetime
import time
from xml.sax.saxutils import escape, quoteattr

from twisted.internet import defer
from twisted.python import log
from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish
from wokkel import data_form, disco
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from xep207.hooks import SESSION_UNBOUND, SUBSCRIPTION_CHANGED
from xep207.inflight import InFlight
from xep207.legacy.chat import NS_DELAY, stamp, with_child
from xep207.legacy.render import Template, TemplateRendering
from xep207.pubsub import errors
from xep207.pubsub.events import ITEMS
from xep207.pubsub.kinds import Trusted
from xep207.pubsub.kinds.room import (
    ADMIN,
    NICK,
    NS_NICK,
    PASSWORD_OPTION,
    ROLE,
    Occupant,
    Room,
    add_nick,
    muc_affiliation,
    occupants_of,
    pubsub_affiliation,
)
from xep207.pubsub.kinds.room import truth as _truth
from xep207.storage.records import (
    MEMBER,
    NONE,
    OUTCAST,
    OWNER,
    PUBLISHER,
    SUBSCRIBED,
    VIA_LEGACY,
    bare,
)
from xep207.xmlutil import parse_stanza, restamped

NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = NS_MUC + "#user"
NS_ADMIN = NS_MUC + "#admin"
NS_OWNER = NS_MUC + "#owner"
NS_ROOMCONFIG = NS_MUC + "#roomconfig"
KIND = "xep207#kind"
DEFAULT_HISTORY = 20

# Room configuration form (muc#roomconfig) <-> node configuration.
ROOM_FIELDS = {
    "muc#roomconfig_roomname": ("text-single", "Room name"),
    "muc#roomconfig_roomdesc": ("text-single", "Description"),
    "muc#roomconfig_persistentroom": ("boolean", "Persistent room"),
    "muc#roomconfig_publicroom": ("boolean", "Listed in the directory"),
    "muc#roomconfig_membersonly": ("boolean", "Members only"),
    "muc#roomconfig_passwordprotectedroom": ("boolean", "Password protected"),
    "muc#roomconfig_roomsecret": ("text-private", "Password"),
    "muc#roomconfig_maxusers": ("text-single", "Maximum occupants (0: no limit)"),
    "muc#roomconfig_moderatedroom": ("boolean", "Moderated (visitors have no voice)"),
    "muc#roomconfig_changesubject": ("boolean", "Occupants may change the subject"),
    "muc#roomconfig_historylength": ("text-single", "Messages kept as history"),
    "muc#roomconfig_roomadmins": ("jid-multi", "Room admins"),
}


@implementer(disco.IDisco)
class GroupchatService(XMPPHandler):
    """The XEP-0045 face of the chat service; also the renderer of its nodes."""

    def __init__(self, router, engine, domain: str):
        super().__init__()
        self.router = router
        self.engine = engine
        self.storage = engine.storage
        self.domain = domain
        self.presences: dict[tuple[str, str], str] = {}  # (room, occupant jid) -> presence children
        self.nicks: dict[tuple[str, str], str] = {}  # (room, occupant jid) -> nick, for rendering
        self.fresh: set[str] = set()  # rooms whose creator may still ask to configure first
        self._locks: dict[str, defer.DeferredLock] = {}
        self.in_flight = InFlight()  # room work under way, for a clean shutdown
        self.trusted = Trusted(domain)  # the service's own bookkeeping
        self._leaving: set[tuple[str, str]] = set()  # departures XEP-0045 code announces itself
        router.hooks.add(SESSION_UNBOUND, self._session_gone)
        router.hooks.add(SUBSCRIPTION_CHANGED, self.on_subscription_change)
        self.delivery = None

    # Wiring --------------------------------------------------------------------

    def connectionInitialized(self):
        self.xmlstream.addObserver("/presence", self._on_stanza)
        self.xmlstream.addObserver("/message", self._on_stanza)
        self.xmlstream.addObserver(f"/iq/query[@xmlns='{NS_OWNER}']", self._on_stanza)
        self.xmlstream.addObserver(f"/iq/query[@xmlns='{NS_ADMIN}']", self._on_stanza)

    def _on_stanza(self, stanza):
        if getattr(stanza, "handled", False):
            return
        stanza.handled = True
        room = jidlib.JID(stanza["to"]).user
        key = room or ""
        lock = self._locks.setdefault(key, defer.DeferredLock())
        d = lock.run(lambda: defer.ensureDeferred(self._dispatch(stanza)))
        d.addErrback(self._failed, stanza)
        d.addBoth(self._unlock, key, lock)
        self.in_flight.track(d)

    def _unlock(self, result, key, lock):
        if not lock.locked and not lock.waiting:
            self._locks.pop(key, None)
        return result

    def _failed(self, failure, stanza):
        if failure.check(StanzaError):
            if stanza.getAttribute("type") != "error":
                self.router.bounce(stanza, failure.value.condition, failure.value.text)
            return
        log.err(failure, "groupchat failed")
        self.router.bounce(stanza, "internal-server-error")

    async def _dispatch(self, stanza):
        to = jidlib.JID(stanza["to"])
        if stanza.name == "iq":
            return await self._on_iq(stanza, to)
        if to.user is None:
            if stanza.name == "message" and stanza.getAttribute("type") != "error":
                raise StanzaError("service-unavailable")
            return
        if stanza.name == "presence":
            return await self._on_presence(stanza, to)
        return await self._on_message(stanza, to)

    def is_room(self, service: str, node_id: str, config=None) -> bool:
        if service != self.domain:
            return False
        return config is None or config.extra.get(KIND) == "room"

    async def room(self, name: str) -> Room | None:
        node = await self.storage.get_node(self.domain, name)
        if node is None or node.config.extra.get(KIND) != "room":
            return None
        return Room(node)

    def room_jid(self, room: Room, nick: str | None = None) -> str:
        jid = f"{room.node.node_id}@{self.domain}"
        return f"{jid}/{nick}" if nick else jid

    # Occupants -----------------------------------------------------------------

    async def occupants(self, room: Room) -> list[Occupant]:
        return await occupants_of(self.engine, room)

    def _user_x(self, occupant: Occupant, statuses=(), extra: str = "", real_jid: bool = True) -> str:
        jid_attribute = f" jid={quoteattr(occupant.jid)}" if real_jid else ""
        inner = (f"<item affiliation={quoteattr(occupant.affiliation)} role={quoteattr(occupant.role)}"
                 f"{jid_attribute}{extra}/>")
        inner += "".join(f"<status code='{code}'/>" for code in statuses)
        return f"<x xmlns='{NS_USER}'>{inner}</x>"

    def _presence_template(self, room: Room, occupant: Occupant, *, type=None, statuses=(),
                           children: str | None = None, item_extra: str = "") -> Template:
        if children is None:
            children = self.presences.get((room.node.node_id, occupant.jid), "")
        inner = children + self._user_x(occupant, statuses, item_extra)
        return Template.presence(self.room_jid(room, occupant.nick), type, inner)

    def _broadcast(self, room: Room, occupants, template: Template, own: Occupant | None = None,
                   own_statuses=()) -> None:
        """Send a presence to every occupant; ``own`` gets status 110 added."""
        for occupant in occupants:
            if own is not None and occupant.jid == own.jid:
                continue
            self.router.deliver_serialized(occupant.jid, template.to(occupant.jid), "presence")
        if own is not None:
            self.router.deliver_serialized(own.jid, own_statuses(own).to(own.jid), "presence")

    # Presence: join, change, leave -------------------------------------------------

    async def _on_presence(self, stanza, to):
        sender = stanza["from"]
        kind = stanza.getAttribute("type")
        if kind == "error":
            return await self._leave_by_error(stanza, to)
        room = await self.room(to.user)
        if kind == "unavailable":
            if room is not None:
                await self.leave(room, sender, status_text=self._status(stanza))
            return
        if kind is not None:
            return  # subscriptions to rooms mean nothing
        if to.resource is None:
            raise StanzaError("jid-malformed", text="join as room@service/nick")
        nick = to.resource
        current = None
        if room is not None:
            current = next((o for o in await self.occupants(room) if o.jid == sender), None)
        children = "".join(c.toXml() for c in stanza.elements()
                           if c.uri != NS_MUC and c.name in ("show", "status", "priority", "c")
                           or c.uri not in (NS_MUC, NS_USER, "jabber:client", None))
        if current is None:
            await self.join(room, to.user, nick, sender, stanza, children)
        elif current.nick != nick:
            await self.change_nick(room, current, nick, children)
        else:
            self.presences[(room.node.node_id, sender)] = children
            occupants = await self.occupants(room)
            template = self._presence_template(room, current)
            self._broadcast(room, occupants, template, current,
                            lambda o: self._presence_template(room, o, statuses=(110,)))

    @staticmethod
    def _status(stanza) -> str:
        return "".join(str(s) for s in stanza.elements() if s.name == "status")

    async def join(self, room: Room | None, name: str, nick: str, sender: str, stanza, children: str):
        """Joining is subscribing with a ``roomnick``: the room kind admits
        (or refuses) exactly as it does an XEP-0060 subscribe."""
        created = room is None
        muc = next(stanza.elements(NS_MUC, "x"), None)
        options = {NICK: nick}
        given = next(muc.elements(NS_MUC, "password"), None) if muc is not None else None
        if given is not None:
            options[PASSWORD_OPTION] = str(given)
        subscription = await self.engine.subscribe(sender, self.domain, name, sender, options,
                                                   via=VIA_LEGACY)
        room = await self.room(name)
        if created:
            self.fresh.add(name)
        else:
            self.fresh.discard(name)  # someone else is in: it is an instant room now
        occupants = [o for o in await self.occupants(room) if o.jid != sender]
        affiliations = await self.storage.get_affiliations(self.domain, name)
        affiliation = muc_affiliation(affiliations.get(bare(sender), NONE), bare(sender), room.admins)
        self.presences[(name, sender)] = children
        self.nicks[(name, sender)] = nick
        from xep207.pubsub.kinds.room import role_of

        occupant = Occupant(sender, nick, affiliation, role_of(room, affiliation, subscription), subscription)
        # 1. the occupant list, 2. the joiner's own presence (110, 201), then to the others.
        for other in occupants:
            self.router.deliver_serialized(sender, self._presence_template(room, other).to(sender), "presence")
        statuses = (110, 100, 201) if created else (110, 100)
        self._broadcast(room, occupants + [occupant], self._presence_template(room, occupant), occupant,
                        lambda o: self._presence_template(room, o, statuses=statuses))
        # 3. history, 4. the subject.
        await self.send_history(room, sender, muc)
        subject = room.node.config.extra.get("subject", "")
        subject_from = room.node.config.extra.get("subject_from") or self.room_jid(room)
        self.router.deliver_serialized(
            sender, f"<message from={quoteattr(subject_from)} to={quoteattr(sender)} type='groupchat'>"
                    f"<subject>{escape(subject)}</subject></message>")

    async def send_history(self, room: Room, to: str, muc) -> None:
        """XEP-0045 §7.2.15: persisted items with XEP-0203 delay, within the asked limits."""
        history = next(muc.elements(NS_MUC, "history"), None) if muc is not None else None
        limit, max_chars, since = DEFAULT_HISTORY, None, None
        if history is not None:
            try:
                if history.getAttribute("maxstanzas") is not None:
                    limit = int(history["maxstanzas"])
                if history.getAttribute("maxchars") is not None:
                    max_chars = int(history["maxchars"])
                if history.getAttribute("seconds") is not None:
                    since = time.time() - int(history["seconds"])
                if history.getAttribute("since"):
                    since = datetime.datetime.fromisoformat(history["since"].replace("Z", "+00:00")).timestamp()
            except ValueError:
                limit = DEFAULT_HISTORY
        if limit <= 0:
            return
        page = await self.storage.page_items(self.domain, room.node.node_id, limit)
        chosen = [i for i in page.items if since is None or i.published >= since]
        rendered = []
        for item in chosen:
            xml = self._as_groupchat(self.room_jid(room), item)
            if xml is None:
                continue
            xml = with_child(xml, f"<delay xmlns='{NS_DELAY}' from={quoteattr(self.room_jid(room))}"
                                  f" stamp='{stamp(item.published)}'/>")
            rendered.append(Template.around(xml, "message").to(to))
        if max_chars is not None:
            kept, total = [], 0
            for xml in reversed(rendered):
                total += len(xml)
                if total > max_chars:
                    break
                kept.append(xml)
            rendered = list(reversed(kept))
        for xml in rendered:
            self.router.deliver_serialized(to, xml)

    async def change_nick(self, room: Room, occupant: Occupant, nick: str, children: str):
        occupants = await self.occupants(room)
        subscription = await self.engine.set_subscription_options(
            occupant.jid, self.domain, room.node.node_id, occupant.jid, {NICK: nick})
        gone = self._presence_template(room, occupant, type="unavailable", children="", statuses=(303,),
                                       item_extra=f" nick={quoteattr(nick)}")
        self._broadcast(room, occupants, gone, occupant,
                        lambda o: self._presence_template(room, o, type="unavailable", children="",
                                                          statuses=(303, 110), item_extra=f" nick={quoteattr(nick)}"))
        self.presences[(room.node.node_id, occupant.jid)] = children
        self.nicks[(room.node.node_id, occupant.jid)] = nick
        renamed = Occupant(occupant.jid, nick, occupant.affiliation, occupant.role, subscription)
        occupants = await self.occupants(room)
        self._broadcast(room, occupants, self._presence_template(room, renamed), renamed,
                        lambda o: self._presence_template(room, o, statuses=(110,)))

    async def leave(self, room: Room, jid: str, *, statuses=(), status_text: str = "", actor_extra: str = "",
                    actor: str | None = None):
        """``actor``: a moderator removing someone (a kick), checked by the room kind."""
        occupants = await self.occupants(room)
        occupant = next((o for o in occupants if o.jid == jid), None)
        if occupant is None:
            return
        key = (room.node.node_id, jid)
        self._leaving.add(key)
        try:
            if actor is None:
                await self.engine.unsubscribe(Trusted(jid), self.domain, room.node.node_id, jid)
            else:
                failed = await self.engine.set_node_subscriptions(actor, self.domain, room.node.node_id,
                                                                  [(jid, NONE)])
                if failed:
                    raise StanzaError("not-allowed", text="moderators cannot remove an admin")
        except errors.StanzaError as exc:
            if exc.condition == "unexpected-request":
                return  # left meanwhile (a dropped session racing its own leave): told already
            raise
        finally:
            self._leaving.discard(key)
        await self.announce_leave(room, occupants, occupant, statuses=statuses, status_text=status_text,
                                  actor_extra=actor_extra)

    async def announce_leave(self, room: Room, occupants, occupant: Occupant, *, statuses=(),
                             status_text: str = "", actor_extra: str = "") -> None:
        jid = occupant.jid
        self.presences.pop((room.node.node_id, jid), None)
        self.nicks.pop((room.node.node_id, jid), None)
        children = f"<status>{escape(status_text)}</status>" if status_text else ""
        gone = self._presence_template(room, occupant, type="unavailable", children=children,
                                       statuses=statuses, item_extra=actor_extra)
        self._broadcast(room, occupants, gone, occupant,
                        lambda o: self._presence_template(room, o, type="unavailable", children=children,
                                                          statuses=tuple(statuses) + (110,), item_extra=actor_extra))
        if len(occupants) == 1 and not room.flag("persistentroom"):
            # A temporary room ends, through the engine: native subscribers are told.
            try:
                await self.engine.delete_node(self.trusted, self.domain, room.node.node_id)
            except errors.StanzaError:
                pass  # the last two occupants left at once: the other leave ended it

    async def _leave_by_error(self, stanza, to):
        room = await self.room(to.user) if to.user else None
        if room is not None:
            await self.leave(room, stanza["from"], statuses=(333,))

    def _session_gone(self, session) -> defer.Deferred:
        async def leave_all():
            for subscription in await self.storage.get_entity_subscriptions(session.bare, self.domain):
                if subscription.subscriber == session.full and subscription.options.get(NICK):
                    room = await self.room(subscription.node_id)
                    if room is not None:
                        await self.leave(room, session.full)

        d = defer.ensureDeferred(leave_all())
        return d.addErrback(log.err, f"leaving rooms for {session.full} failed")

    # Messages -----------------------------------------------------------------------

    async def _on_message(self, stanza, to):
        sender = stanza["from"]
        kind = stanza.getAttribute("type", "normal")
        if kind == "error":
            return
        room = await self.room(to.user)
        if room is None:
            raise StanzaError("item-not-found", text="no such room")
        occupants = await self.occupants(room)
        me = next((o for o in occupants if o.jid == sender), None)
        invite = next((x for x in stanza.elements(NS_USER, "x") if next(x.elements(NS_USER, "invite"), None)), None)
        if invite is not None:
            return await self._invite(room, sender, me, invite)
        if me is None:
            raise StanzaError("not-acceptable", text="only occupants may send messages to the room")
        if to.resource is not None:
            return self._private(room, me, occupants, to.resource, stanza)
        if kind != "groupchat":
            raise StanzaError("bad-request", text="messages to the room are of type groupchat")
        if me.role == "visitor":
            raise StanzaError("forbidden", text="visitors have no voice in this moderated room")
        subject = next((c for c in stanza.elements() if c.name == "subject"), None)
        if subject is not None:
            if me.role != "moderator" and not room.flag("changesubject"):
                raise StanzaError("forbidden", text="only moderators change the subject")
            extra = {**room.node.config.extra, "subject": str(subject),
                     "subject_from": self.room_jid(room, me.nick)}
            await self.engine.configure_node(self.trusted, self.domain, room.node.node_id, {}, extra=extra)
        # History renders room/nick from the item alone (XEP-0172).
        payload = add_nick(restamped(stanza, sender, without_uri=NS_NICK).toXml(), me.nick)
        await self.engine.publish(sender, self.domain, room.node.node_id, [(None, payload)], vetted=True)

    def _private(self, room, me, occupants, nick, stanza):
        target = [o for o in occupants if o.nick == nick]
        if not target:
            raise StanzaError("item-not-found", text="no occupant by that nickname")
        copy = restamped(stanza, self.room_jid(room, me.nick), drop=("to",),
                         extra=(domish.Element((NS_USER, "x")),))
        template = Template.around(copy.toXml(), "message")  # serialized once, addressed per resource
        for occupant in target:
            self.router.deliver_serialized(occupant.jid, template.to(occupant.jid))

    async def _invite(self, room, sender, me, x):
        if me is None:
            raise StanzaError("not-acceptable", text="only occupants invite")
        for invite in x.elements(NS_USER, "invite"):
            try:
                invitee = jidlib.JID(invite.getAttribute("to", "")).full()
            except jidlib.InvalidFormat:
                raise StanzaError("jid-malformed")
            if room.flag("membersonly"):
                if me.affiliation not in (OWNER, ADMIN):
                    raise StanzaError("forbidden", text="only admins invite to a members-only room")
                await self.engine.set_node_affiliations(sender, self.domain, room.node.node_id,
                                                        {bare(invitee): PUBLISHER})
            reason = next(invite.elements(NS_USER, "reason"), None)
            reason_xml = f"<reason>{escape(str(reason))}</reason>" if reason is not None else ""
            password = (f"<password>{escape(room['roomsecret'])}</password>"
                        if room.flag("passwordprotectedroom") else "")
            stanza = domish.Element((None, "message"))
            stanza["from"], stanza["to"] = self.room_jid(room), invitee
            stanza.addRawXml(f"<x xmlns='{NS_USER}'><invite from={quoteattr(sender)}>{reason_xml}</invite>"
                             f"{password}</x>")
            self.router.route(stanza)

    def _as_groupchat(self, room_jid: str, item) -> str | None:
        """A room item as the groupchat message occupants see (from room/nick)."""
        try:
            message = parse_stanza(item.payload)
        except Exception:
            return None
        nick = next((str(c) for c in message.elements(NS_NICK, "nick")), None)
        nick = nick or message.getAttribute("from", item.publisher).split("/")[0].split("@")[0]
        message["from"] = f"{room_jid}/{nick}"
        message["type"] = "groupchat"
        message.attributes.pop("to", None)
        return message.toXml()

    # Rendering of room events (EventDelivery hands them over) ------------------------

    def prepare(self, event) -> TemplateRendering:
        """Room items as groupchat messages from room/nick; occupants learn
        of configuration changes and destruction from presence instead."""
        if event.kind != ITEMS:
            return TemplateRendering(())
        room_jid = f"{event.node_id}@{self.domain}"
        rendered = (self._as_groupchat(room_jid, item) for item in event.items)
        return TemplateRendering(tuple(Template.around(xml, "message") for xml in rendered if xml))

    def render_authorization(self, request):
        return None

    # Native subscriptions (XEP-0207 §5): the roomnick makes an occupant --------------

    def on_subscription_change(self, change) -> None:
        """A native client joins by subscribing with a ``roomnick`` (XEP-0207 §5):
        legacy occupants see it arrive and leave under that nick."""
        subscription = change.subscription
        # A native occupant may subscribe its full JID (as XEP-0207 §5 shows) or
        # its bare JID (then all its resources follow the room).
        if subscription.service != self.domain:
            return
        key = (subscription.node_id, subscription.subscriber)
        if subscription.state == NONE and key in self._leaving:
            return  # the XEP-0045 side is announcing this departure itself
        if subscription.via != "pubsub" and subscription.state != NONE:
            return  # XEP-0045 joins announce themselves, in XEP-0045's order
        d = defer.ensureDeferred(self._native_change(change))
        d.addErrback(log.err, "native room subscription follow-up failed")

    async def _native_change(self, change) -> None:
        subscription = change.subscription
        room = await self.room(subscription.node_id)
        if room is None:
            return
        key = (room.node.node_id, subscription.subscriber)
        nick = subscription.options.get(NICK)
        if subscription.state == SUBSCRIBED and nick and key not in self.nicks:
            occupants = await self.occupants(room)  # the room kind admitted the nick
            self.nicks[key] = nick
            occupant = next(o for o in occupants if o.jid == subscription.subscriber)
            others = [o for o in occupants if o.jid != occupant.jid]
            self._broadcast(room, others, self._presence_template(room, occupant))
        elif subscription.state == NONE and key in self.nicks:
            # Left, or removed through XEP-0060 by a moderator (a kick: 307).
            nick = self.nicks.pop(key)
            self.presences.pop(key, None)
            occupant = Occupant(subscription.subscriber, nick, NONE, "none", subscription)
            kicked = (307,) if bare(change.actor) != bare(subscription.subscriber) else ()
            gone = self._presence_template(room, occupant, type="unavailable", children="", statuses=kicked)
            remaining = await self.occupants(room)
            self._broadcast(room, remaining, gone)
            if not remaining and not room.flag("persistentroom"):
                try:  # the last occupant left: a temporary room ends, native subscribers told
                    await self.engine.delete_node(self.trusted, self.domain, room.node.node_id)
                except errors.StanzaError:
                    pass
            if subscription.via != "pubsub":
                self.router.deliver_serialized(
                    subscription.subscriber,
                    self._presence_template(room, occupant, type="unavailable", children="",
                                            statuses=kicked + (110,)).to(subscription.subscriber),
                    "presence")

    async def clear_stale(self) -> None:
        """At start-up nobody is in any room: drop occupancies a crash left."""
        for node_id in await self.storage.list_nodes(self.domain):
            room = await self.room(node_id)
            if room is None:
                continue
            for subscription in await self.storage.get_subscriptions(self.domain, node_id):
                if subscription.options.get(NICK):
                    await self.engine.unsubscribe(self.trusted, self.domain, node_id, subscription.subscriber)
            if not room.flag("persistentroom"):
                await self.engine.delete_node(self.trusted, self.domain, node_id)

    # Owner and admin (XEP-0045 §10, §9) ------------------------------------------

    async def _on_iq(self, iq, to):
        if to.user is None or to.resource is not None:
            raise StanzaError("service-unavailable")
        room = await self.room(to.user)
        if room is None:
            raise StanzaError("item-not-found", text="no such room")
        sender = bare(iq["from"])
        affiliations = await self.storage.get_affiliations(self.domain, room.node.node_id)
        mine = muc_affiliation(affiliations.get(sender, NONE), sender, room.admins)
        query = iq.query
        if query.uri == NS_OWNER:
            if mine != OWNER:
                raise StanzaError("forbidden", text="only owners configure rooms")
            response = await self._owner(iq, room, query)
        else:
            if mine not in (OWNER, ADMIN) and not (iq["type"] == "set" and await self._is_moderator(room, iq["from"])):
                raise StanzaError("forbidden", text="only admins and moderators")
            response = await self._admin(iq, room, query, mine, affiliations)
        self.send(response)

    async def _is_moderator(self, room, jid) -> bool:
        return any(o.jid == jid and o.role == "moderator" for o in await self.occupants(room))

    async def _lock(self, room: Room, locked: bool) -> None:
        await self.engine.configure_node(self.trusted, self.domain, room.node.node_id, {},
                                         extra={**room.node.config.extra, "locked": locked})

    async def _owner(self, iq, room: Room, query):
        if iq["type"] == "get" and room.node.node_id in self.fresh:
            # XEP-0045 §10.1.3: the creator asked for the form before anyone
            # came in, so this is a reserved room: locked until configured.
            self.fresh.discard(room.node.node_id)
            await self._lock(room, True)
            room = await self.room(room.node.node_id)
        if iq["type"] == "get":
            response = xmlstream.toResponse(iq, "result")
            form = data_form.Form("form", formNamespace=NS_ROOMCONFIG)
            for var, (kind, label) in ROOM_FIELDS.items():
                value = room.settings.get(var)
                if kind == "jid-multi":
                    form.addField(data_form.Field(kind, var=var, label=label,
                                                  values=[jidlib.JID(v) for v in value or []]))
                elif kind == "boolean":
                    form.addField(data_form.Field(kind, var=var, label=label, value=_truth(value)))
                else:
                    form.addField(data_form.Field(kind, var=var, label=label, value=str(value or "")))
            response.addElement((NS_OWNER, "query")).addChild(form.toElement())
            return response
        destroy = next(query.elements(NS_OWNER, "destroy"), None)
        if destroy is not None:
            await self.destroy(room, destroy)
            return xmlstream.toResponse(iq, "result")
        form = data_form.findForm(query, NS_ROOMCONFIG)
        if form is None:
            raise StanzaError("bad-request", text="submit a muc#roomconfig form")
        if form.formType == "cancel":
            if room.node.config.extra.get("locked"):
                await self.destroy(room)  # §10.1.3: the initial configuration was cancelled
            return xmlstream.toResponse(iq, "result")
        settings = dict(room.settings)
        for var, field in form.fields.items():
            if var == "FORM_TYPE":
                continue
            if var not in ROOM_FIELDS:
                raise StanzaError("not-acceptable", text=f"unknown room setting {var}")
            kind = ROOM_FIELDS[var][0]
            values = [str(v) for v in field.values]
            if kind == "boolean":
                settings[var] = (values[0] if values else "0").lower() in ("1", "true")
            elif kind == "jid-multi":
                try:
                    settings[var] = [jidlib.JID(v).userhost() for v in values]
                except jidlib.InvalidFormat:
                    raise StanzaError("not-acceptable", text=f"{var}: invalid JID")
            else:
                settings[var] = values[0] if values else ""
        for number in ("muc#roomconfig_maxusers", "muc#roomconfig_historylength"):
            if not str(settings[number]).isdigit():
                raise StanzaError("not-acceptable", text=f"{number} must be a number")
        history = max(1, min(int(settings["muc#roomconfig_historylength"]), self.engine.max_items_limit))
        self.fresh.discard(room.node.node_id)
        values = {"pubsub#access_model": "whitelist" if _truth(settings["muc#roomconfig_membersonly"]) else "open",
                  "pubsub#max_items": str(history), "pubsub#title": settings["muc#roomconfig_roomname"]}
        await self.engine.configure_node(self.trusted, self.domain, room.node.node_id, values,
                                         extra={**room.node.config.extra, "muc": settings, "locked": False})
        affiliations = await self.storage.get_affiliations(self.domain, room.node.node_id)
        admins = {a: PUBLISHER for a in settings["muc#roomconfig_roomadmins"] if affiliations.get(a) != OWNER}
        if admins:
            await self.engine.set_node_affiliations(self.trusted, self.domain, room.node.node_id, admins)
        return xmlstream.toResponse(iq, "result")

    async def destroy(self, room: Room, destroy=None) -> None:
        """XEP-0045 §10.9: occupants told, then the node (items and all) deleted."""
        occupants = await self.occupants(room)
        reason = next(destroy.elements(NS_OWNER, "reason"), None) if destroy is not None else None
        inner = f"<destroy>{'<reason>' + escape(str(reason)) + '</reason>' if reason is not None else ''}</destroy>"
        for occupant in occupants:
            x = (f"<x xmlns='{NS_USER}'><item affiliation='none' role='none'/>{inner}</x>")
            template = Template.presence(self.room_jid(room, occupant.nick), "unavailable", x)
            self.router.deliver_serialized(occupant.jid, template.to(occupant.jid), "presence")
            self.nicks.pop((room.node.node_id, occupant.jid), None)
            self.presences.pop((room.node.node_id, occupant.jid), None)
        await self.engine.delete_node(self.trusted, self.domain, room.node.node_id)

    async def _admin(self, iq, room: Room, query, mine: str, affiliations):
        items = list(query.elements(NS_ADMIN, "item"))
        if iq["type"] == "get":
            wanted = items[0].getAttribute("affiliation") if items else None
            role = items[0].getAttribute("role") if items else None
            response = xmlstream.toResponse(iq, "result")
            answer = response.addElement((NS_ADMIN, "query"))
            if role:
                for occupant in await self.occupants(room):
                    if occupant.role == role:
                        item = answer.addElement("item")
                        item["nick"], item["role"], item["jid"] = occupant.nick, occupant.role, occupant.jid
                        item["affiliation"] = occupant.affiliation
                return response
            for entity, affiliation in sorted(affiliations.items()):
                muc = muc_affiliation(affiliation, entity, room.admins)
                if entity != self.domain and (wanted is None or muc == wanted):
                    item = answer.addElement("item")
                    item["jid"], item["affiliation"] = entity, muc
            return response
        for item in items:
            if item.getAttribute("affiliation") is not None:
                await self._set_affiliation(room, item, mine, iq["from"])
            elif item.getAttribute("role") is not None:
                await self._set_role(room, item, mine, iq["from"])
            else:
                raise StanzaError("bad-request", text="an item sets an affiliation or a role")
        return xmlstream.toResponse(iq, "result")

    async def _set_affiliation(self, room: Room, item, mine: str, actor: str):
        """The room kind decides who may change which affiliation (XEP-0045
        §9–10), as it does for an XEP-0060 affiliations set."""
        affiliation = item["affiliation"]
        if affiliation not in (OWNER, ADMIN, MEMBER, NONE, OUTCAST):
            raise StanzaError("bad-request", text="unknown affiliation")
        try:
            entity = jidlib.JID(item.getAttribute("jid", "")).userhost()
        except jidlib.InvalidFormat:
            raise StanzaError("jid-malformed")
        if affiliation == ADMIN and mine != OWNER:
            raise StanzaError("forbidden", text="only owners grant admin status")
        occupants = await self.occupants(room)
        leaving = {(room.node.node_id, o.jid) for o in occupants if bare(o.jid) == entity}
        self._leaving |= leaving  # a ban ends their subscriptions; announced below with 301
        try:
            await self.engine.set_node_affiliations(actor, self.domain, room.node.node_id,
                                                    {entity: pubsub_affiliation(affiliation)})
        finally:
            self._leaving -= leaving
        settings = dict(room.settings)
        admins = [a for a in settings["muc#roomconfig_roomadmins"] if a != entity]
        if affiliation == ADMIN:
            admins.append(entity)
        if admins != list(settings["muc#roomconfig_roomadmins"]):
            settings["muc#roomconfig_roomadmins"] = admins
            await self.engine.configure_node(self.trusted, self.domain, room.node.node_id, {},
                                             extra={**room.node.config.extra, "muc": settings})
        room = await self.room(room.node.node_id)
        for occupant in occupants:
            if bare(occupant.jid) != entity:
                continue
            if affiliation == OUTCAST:  # the engine ended the subscription
                await self.announce_leave(room, occupants, occupant, statuses=(301,))
            elif affiliation == NONE and room.flag("membersonly"):
                await self.leave(room, occupant.jid, statuses=(321,))
            else:
                updated = next((o for o in await self.occupants(room) if o.jid == occupant.jid), occupant)
                self._broadcast(room, await self.occupants(room), self._presence_template(room, updated))

    async def _set_role(self, room: Room, item, mine: str, actor: str):
        """A kick or a role change, checked by the room kind like any
        subscription change."""
        role = item["role"]
        nick = item.getAttribute("nick")
        occupant = next((o for o in await self.occupants(room) if o.nick == nick), None)
        if occupant is None:
            raise StanzaError("item-not-found", text="no occupant by that nickname")
        if occupant.affiliation in (OWNER, ADMIN) and mine not in (OWNER,):
            raise StanzaError("not-allowed", text="moderators cannot change an admin's role")
        if role == "none":
            await self.leave(room, occupant.jid, statuses=(307,), actor=actor)  # kicked
            return
        subscription = await self.engine.set_subscription_options(
            actor, self.domain, room.node.node_id, occupant.jid, {ROLE: role})
        updated = Occupant(occupant.jid, occupant.nick, occupant.affiliation, role, subscription)
        self._broadcast(room, await self.occupants(room), self._presence_template(room, updated))

    # Discovery -----------------------------------------------------------------------

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        return defer.ensureDeferred(self._disco_info(target, nodeIdentifier))

    async def _disco_info(self, target, node_identifier):
        if target.host != self.domain or node_identifier:
            return []
        if target.user is None:
            return [disco.DiscoIdentity("conference", "text", "xep207 rooms"),
                    disco.DiscoFeature(NS_MUC)]
        room = await self.room(target.user)
        if room is None or target.resource is not None:
            return []
        features = [NS_MUC,
                    "muc_membersonly" if room.flag("membersonly") else "muc_open",
                    "muc_passwordprotected" if room.flag("passwordprotectedroom") else "muc_unsecured",
                    "muc_persistent" if room.flag("persistentroom") else "muc_temporary",
                    "muc_public" if room.flag("publicroom") else "muc_hidden",
                    "muc_moderated" if room.flag("moderatedroom") else "muc_unmoderated",
                    "muc_nonanonymous"]
        return [disco.DiscoIdentity("conference", "text", room.name)] + [disco.DiscoFeature(f) for f in features]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return defer.ensureDeferred(self._disco_items(target, nodeIdentifier))

    async def _disco_items(self, target, node_identifier):
        if target.host != self.domain or target.user is not None or node_identifier:
            return []
        items = []
        for node_id in await self.storage.list_nodes(self.domain):
            room = await self.room(node_id)
            if room is not None and room.flag("publicroom") and not room.flag("membersonly"):
                items.append(disco.DiscoItem(jidlib.JID(self.room_jid(room)), name=room.name))
        return items
