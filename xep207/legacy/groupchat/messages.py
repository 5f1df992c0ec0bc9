"""Messages in a room (XEP-0045 §7.4–7.8, §7.2.15–16): to everyone (a publish
to the room node), to one occupant, invitations, and the history and subject
a newcomer is sent."""

from __future__ import annotations

import datetime
import time
from typing import Callable
from xml.sax.saxutils import escape, quoteattr

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from xep207.legacy.pair_rendering import NS_DELAY
from xep207.legacy.groupchat.rendering import as_groupchat
from xep207.legacy.groupchat.rooms import NS_MUC, NS_USER, Rooms
from xep207.legacy.render import Template
from xep207.ordering import handed_off
from xep207.pubsub import errors
from xep207.pubsub.kinds.room import ADMIN, Occupant, Room, may_change_subject, room_item
from xep207.storage.records import OWNER, PUBLISHER, bare
from xep207.xmlutil import release, restamped, stamp, with_child

DEFAULT_HISTORY = 20


class Messages:
    def __init__(self, rooms: Rooms):
        self.rooms = rooms
        # Set by the service: a failure after a message was handed to storage,
        # and the work still under way.
        self.late_failure: Callable[[Failure, domish.Element], object] = lambda failure, stanza: failure
        self.track: Callable[[defer.Deferred], object] = lambda d: d

    async def on_message(self, stanza: domish.Element, name: str, nick: str | None) -> None:
        """A message to room ``name``, or to occupant ``nick`` in it."""
        sender = stanza["from"]
        kind = stanza.getAttribute("type", "normal")
        if kind == "error":
            return
        rooms = self.rooms
        room = await rooms.room(name)
        if room is None:
            raise StanzaError("item-not-found", text="no such room")
        occupants = await rooms.occupants(room)
        me = next((o for o in occupants if o.jid == sender), None)
        invite = next((x for x in stanza.elements(NS_USER, "x") if next(x.elements(NS_USER, "invite"), None)), None)
        if invite is not None:
            return await self._invite(room, sender, me, invite)
        if me is None:
            raise StanzaError("not-acceptable", text="only occupants may send messages to the room")
        if nick is not None:
            return self._private(room, me, occupants, nick, stanza)
        if kind != "groupchat":
            raise StanzaError("bad-request", text="messages to the room are of type groupchat")
        # Voice is the room kind's rule (RoomKind.check_publish), for both doors.
        subject = next((c for c in stanza.elements() if c.name == "subject"), None)
        if subject is not None:
            if not may_change_subject(room, me.role):
                raise StanzaError("forbidden", text="only moderators change the subject")
            await rooms.configure(room, subject=str(subject), subject_from=rooms.jid(room, me.nick))
        # The item is from room/nick, as the room kind stamps a native publish.
        payload = room_item(stanza, rooms.jid(room), me.nick)
        release(stanza)  # (it is the payload now: no cycle left to the garbage collector)
        # The room's next stanza goes on once this item is in storage's queue.
        await handed_off(
            lambda queued: rooms.engine.publish(sender, rooms.domain, room.node.node_id, [(None, payload)],
                                                vetted=True, queued=queued),
            lambda failure: self.late_failure(failure, stanza), self.track)

    def _private(self, room: Room, me: Occupant, occupants, nick: str, stanza) -> None:
        if stanza.getAttribute("type") == "groupchat":
            # §7.5: a private message of type groupchat would pass, to its one
            # recipient, for a public message (or a subject change) of the room.
            raise StanzaError("bad-request", text="private messages are not of type groupchat")
        target = [o for o in occupants if o.nick == nick]
        if not target:
            raise StanzaError("item-not-found", text="no occupant by that nickname")
        # §7.5: marked as from a room occupant (once: clients send the mark too).
        copy = restamped(stanza, self.rooms.jid(room, me.nick), drop=("to",), without_uri=NS_USER,
                         extra=(domish.Element((NS_USER, "x")),))
        template = Template.around(copy.toXml(), "message")  # serialized once, addressed per resource
        blocks, sender = self.rooms.engine.blocks, self.rooms.jid(room, me.nick)
        for occupant in target:
            if blocks and (blocks.blocks(bare(occupant.jid), sender) or blocks.blocks(bare(occupant.jid), me.jid)):
                continue  # XEP-0191: the recipient blocked that occupant
            self.rooms.router.deliver_serialized(occupant.jid, template.to(occupant.jid))

    async def _invite(self, room: Room, sender: str, me: Occupant | None, x) -> None:
        if me is None:
            raise StanzaError("not-acceptable", text="only occupants invite")
        rooms = self.rooms
        for invite in x.elements(NS_USER, "invite"):
            try:
                invitee = jidlib.JID(invite.getAttribute("to", "")).full()
            except jidlib.InvalidFormat:
                raise StanzaError("jid-malformed")
            blocks, occupant_jid = rooms.engine.blocks, rooms.jid(room, me.nick)
            if blocks and blocks.blocks(bare(sender), invitee):
                raise errors.blocked()  # XEP-0191 §3.5: the inviter blocked the invitee
            if blocks and (blocks.blocks(bare(invitee), sender) or blocks.blocks(bare(invitee), occupant_jid)):
                continue  # §3.6: the invitee blocked the inviter; silently, as a message would be
            if room.flag("membersonly"):  # membership is granted by admins: the room kind checks
                await rooms.engine.set_node_affiliations(sender, rooms.domain, room.node.node_id,
                                                         {bare(invitee): PUBLISHER})
            reason = next(invite.elements(NS_USER, "reason"), None)
            reason_xml = f"<reason>{escape(str(reason))}</reason>" if reason is not None else ""
            password = (f"<password>{escape(room['roomsecret'])}</password>"
                        if room.flag("passwordprotectedroom") else "")
            # §7.8.2 allows the inviter's occupant JID: a semi-anonymous room
            # shows the real one only to whom it would show it inside (Prosody too).
            invitee_affiliation = await rooms.affiliation(room, invitee)
            inviter = sender if room.non_anonymous or invitee_affiliation in (OWNER, ADMIN) \
                else rooms.jid(room, me.nick)
            stanza = domish.Element((None, "message"))
            stanza["from"], stanza["to"] = rooms.jid(room), invitee
            stanza.addRawXml(f"<x xmlns='{NS_USER}'><invite from={quoteattr(inviter)}>{reason_xml}</invite>"
                             f"{password}</x>")
            rooms.router.route(stanza)

    async def welcome(self, room: Room, to: str, muc: domish.Element | None) -> None:
        """After the presences of a join: the history, then the subject (§7.2.15–16)."""
        await self.send_history(room, to, muc)
        subject = str(room.node.config.extra.get("subject", ""))
        subject_from = str(room.node.config.extra.get("subject_from") or self.rooms.jid(room))
        self.rooms.router.deliver_serialized(
            to, f"<message from={quoteattr(subject_from)} to={quoteattr(to)} type='groupchat'>"
                f"<subject>{escape(subject)}</subject></message>")

    async def send_history(self, room: Room, to: str, muc: domish.Element | None) -> None:
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
        page = await self.rooms.storage.page_items(self.rooms.domain, room.node.node_id, limit)
        # A subject change is not history: the current subject follows once (§7.2.15–16).
        chosen = [i for i in page.items if (since is None or i.published >= since)
                  and "<subject" not in i.payload]
        room_jid = self.rooms.jid(room)
        rendered = []
        for item in chosen:
            xml = as_groupchat(room_jid, item)
            if xml is None:
                continue
            xml = with_child(xml, f"<delay xmlns='{NS_DELAY}' from={quoteattr(room_jid)}"
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
            self.rooms.router.deliver_serialized(to, xml)
