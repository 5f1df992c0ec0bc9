"""Service discovery of the chat service (XEP-0045 §6): the service, each
room's features, and the public rooms listed as items."""

from __future__ import annotations

from twisted.words.protocols.jabber import jid as jidlib
from wokkel import data_form, disco

from xep207.legacy.groupchat.rooms import NS_MUC, Rooms
from xep207.legacy.groupchat.selfping import NS_PING, SELF_PING_OPTIMIZATION
from xep207.pubsub.kinds.room import Room

NS_ROOMINFO = NS_MUC + "#roominfo"


async def info(rooms: Rooms, target: jidlib.JID, node_identifier: str) -> list:
    if target.host != rooms.domain or node_identifier:
        return []
    if target.user is None:
        return [disco.DiscoIdentity("conference", "text", "xep207 rooms"),
                disco.DiscoFeature(NS_MUC), disco.DiscoFeature(NS_PING)]
    room = await rooms.room(target.user)
    if room is None or target.resource is not None:
        return []
    features = [NS_MUC, NS_PING, SELF_PING_OPTIMIZATION,
                "muc_membersonly" if room.flag("membersonly") else "muc_open",
                "muc_passwordprotected" if room.flag("passwordprotectedroom") else "muc_unsecured",
                "muc_persistent" if room.flag("persistentroom") else "muc_temporary",
                "muc_public" if room.flag("publicroom") else "muc_hidden",
                "muc_moderated" if room.flag("moderatedroom") else "muc_unmoderated",
                "muc_nonanonymous" if room.non_anonymous else "muc_semianonymous"]
    return [disco.DiscoIdentity("conference", "text", room.name), *(disco.DiscoFeature(f) for f in features),
            await room_info(rooms, room)]


async def room_info(rooms: Rooms, room: Room) -> data_form.Form:
    """XEP-0045 §6.4's muc#roominfo extension (XEP-0128): what a client shows
    before joining."""
    form = data_form.Form("result", formNamespace=NS_ROOMINFO)
    fields = [("muc#roomconfig_roomname", room.name),
              ("muc#roominfo_description", str(room["roomdesc"] or "")),
              ("muc#roominfo_occupants", str(len(await rooms.occupants(room)))),
              ("muc#roomconfig_changesubject", "1" if room.flag("changesubject") else "0")]
    if not room.flag("membersonly") and not room.flag("passwordprotectedroom"):
        # The subject is what a stranger could read of the room anyway (its history).
        fields.append(("muc#roominfo_subject", str(room.node.config.extra.get("subject", ""))))
    for var, value in fields:
        form.addField(data_form.Field("text-single", var=var, value=value))
    return form


async def items(rooms: Rooms, target: jidlib.JID, node_identifier: str) -> list:
    if target.host != rooms.domain or target.user is not None or node_identifier:
        return []
    found = []
    for node_id in await rooms.storage.list_nodes(rooms.domain):
        room = await rooms.room(node_id)
        if room is not None and room.flag("publicroom") and not room.flag("membersonly"):
            found.append(disco.DiscoItem(jidlib.JID(rooms.jid(room)), name=room.name))
    return found
