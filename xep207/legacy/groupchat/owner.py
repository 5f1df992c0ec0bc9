"""muc#owner (XEP-0045 §10): the room configuration form (whose submission,
even the empty instant-room one, lifts the lock a new room starts with), and
destroying a room.

The form's settings are kept in the room node's configuration, and the ones
XEP-0060 knows (members-only, history length, title) are mirrored onto its
pubsub settings so that both doors see the same room.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish
from wokkel import data_form

from xep207.legacy.groupchat.occupants import Occupants
from xep207.legacy.groupchat.rooms import NS_OWNER, NS_USER, Rooms
from xep207.legacy.render import Template
from xep207.pubsub.kinds.room import Room, truth
from xep207.storage.records import NONE, OWNER, PUBLISHER

NS_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"

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
    "muc#roomconfig_whois": ("list-single", "Who may see occupants' real JIDs"),
}
FIELD_OPTIONS = {"muc#roomconfig_whois": {"moderators": "Moderators only", "anyone": "Anyone"}}


class Owner:
    def __init__(self, rooms: Rooms, occupants: "Occupants"):
        self.rooms = rooms
        self.occupants = occupants

    async def on_iq(self, iq: domish.Element, room: Room) -> domish.Element:
        if await self.rooms.affiliation(room, iq["from"]) != OWNER:
            raise StanzaError("forbidden", text="only owners configure rooms")
        if iq["type"] == "get":
            response = xmlstream.toResponse(iq, "result")
            response.addElement((NS_OWNER, "query")).addChild(self._form(room).toElement())
            return response
        destroy = next(iq.query.elements(NS_OWNER, "destroy"), None)
        if destroy is not None:
            await self.destroy(room, destroy)
            return xmlstream.toResponse(iq, "result")
        form = roomconfig_form(iq.query)
        if form is None:
            raise StanzaError("bad-request", text="submit a muc#roomconfig form")
        if form.formType == "cancel":
            if room.locked:
                await self.destroy(room)  # §10.1.3: the initial configuration was cancelled
            return xmlstream.toResponse(iq, "result")
        await self._configure(room, form)
        return xmlstream.toResponse(iq, "result")

    @staticmethod
    def _form(room: Room) -> data_form.Form:
        form = data_form.Form("form", formNamespace=NS_ROOMCONFIG)
        for var, (kind, label) in ROOM_FIELDS.items():
            value = room.settings.get(var)
            if kind == "jid-multi":
                form.addField(data_form.Field(kind, var=var, label=label,
                                              values=[jidlib.JID(v) for v in value or []]))
            elif kind == "boolean":
                form.addField(data_form.Field(kind, var=var, label=label, value=truth(value)))
            elif kind == "list-single":
                options = [data_form.Option(v, text) for v, text in FIELD_OPTIONS[var].items()]
                form.addField(data_form.Field(kind, var=var, label=label, value=str(value), options=options))
            else:
                form.addField(data_form.Field(kind, var=var, label=label, value=str(value or "")))
        return form

    async def _configure(self, room: Room, form: data_form.Form) -> None:
        rooms = self.rooms
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
            elif kind == "list-single":
                if len(values) != 1 or values[0] not in FIELD_OPTIONS[var]:
                    raise StanzaError("not-acceptable", text=f"{var}: one of {', '.join(FIELD_OPTIONS[var])}")
                settings[var] = values[0]
            else:
                settings[var] = values[0] if values else ""
        for number in ("muc#roomconfig_maxusers", "muc#roomconfig_historylength"):
            if not str(settings[number]).isdigit():
                raise StanzaError("not-acceptable", text=f"{number} must be a number")
        history = max(1, min(int(settings["muc#roomconfig_historylength"]), rooms.engine.max_items_limit))
        mirrored = {"pubsub#access_model": "whitelist" if truth(settings["muc#roomconfig_membersonly"]) else "open",
                    "pubsub#max_items": str(history), "pubsub#title": settings["muc#roomconfig_roomname"]}
        await rooms.configure(room, mirrored, muc=settings, locked=False)
        affiliations = await rooms.storage.get_affiliations(rooms.domain, room.node.node_id)
        admins = {a: PUBLISHER for a in settings["muc#roomconfig_roomadmins"] if affiliations.get(a) != OWNER}
        if admins:
            await rooms.engine.set_node_affiliations(rooms.trusted, rooms.domain, room.node.node_id, admins)
        await self._announce_change(room, settings)
        if truth(settings["muc#roomconfig_membersonly"]) and not room.flag("membersonly"):
            # XEP-0045 §9.9: a room that becomes members-only removes whoever is
            # not a member, with status 322 (else they would stay, hearing nothing).
            updated = await rooms.room(room.node.node_id)
            assert updated is not None
            for occupant in await rooms.occupants(updated):
                if occupant.affiliation == NONE:
                    await self.occupants.leave(updated, occupant.jid, statuses=(322,), actor=rooms.trusted)

    async def _announce_change(self, before: Room, settings: dict) -> None:
        """XEP-0045 §10.2.1: occupants are told the configuration changed
        (104), and whether real JIDs are now shown to all (172) or to
        moderators only (173), in one status message as Prosody does."""
        if settings == before.settings:
            return
        codes = [104]
        if settings["muc#roomconfig_whois"] != before["whois"]:
            codes.append(172 if settings["muc#roomconfig_whois"] == "anyone" else 173)
        rooms = self.rooms
        status = "".join(f"<status code='{code}'/>" for code in codes)
        template = Template.around(f"<message from={quoteattr(rooms.jid(before))} type='groupchat'>"
                                   f"<x xmlns='{NS_USER}'>{status}</x></message>", "message")
        for occupant in await rooms.occupants(before):
            rooms.router.deliver_serialized(occupant.jid, template.to(occupant.jid))

    async def destroy(self, room: Room, destroy: domish.Element | None = None) -> None:
        """XEP-0045 §10.9: occupants told, then the node (items and all) deleted."""
        rooms = self.rooms
        reason = next(destroy.elements(NS_OWNER, "reason"), None) if destroy is not None else None
        inner = f"<destroy>{'<reason>' + escape(str(reason)) + '</reason>' if reason is not None else ''}</destroy>"
        x = f"<x xmlns='{NS_USER}'><item affiliation='none' role='none'/>{inner}</x>"
        for occupant in await rooms.occupants(room):
            template = Template.presence(rooms.jid(room, occupant.nick), "unavailable", x)
            rooms.router.deliver_serialized(occupant.jid, template.to(occupant.jid), "presence")
            rooms.forget(room, occupant.jid)
        await rooms.engine.delete_node(rooms.trusted, rooms.domain, room.node.node_id)


def roomconfig_form(query) -> data_form.Form | None:
    """The submitted room configuration. XEP-0045 §10.1.2: an empty submit
    (no FORM_TYPE at all) accepts the defaults, and clients that forget
    ``type='hidden'`` on FORM_TYPE are read as they mean (XEP-0068 asks it of
    forms, we ask only that the FORM_TYPE, if any, is muc#roomconfig)."""
    for element in query.elements(data_form.NS_X_DATA, "x"):
        form = data_form.Form.fromElement(element)
        form_type = form.fields.get("FORM_TYPE")
        if form_type is None or str(form_type.value) == NS_ROOMCONFIG:
            return form
    return None
