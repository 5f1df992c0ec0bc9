"""Service discovery of the chat service (XEP-0045 §6): the service, each
room's features, and the public rooms listed as items."""

from __future__ import annotations

from twisted.words.protocols.jabber import jid as jidlib
from wokkel import disco

from xep207.legacy.groupchat.rooms import NS_MUC, Rooms


async def info(rooms: Rooms, target: jidlib.JID, node_identifier: str) -> list:
    if target.host != rooms.domain or node_identifier:
        return []
    if target.user is None:
        return [disco.DiscoIdentity("conference", "text", "xep207 rooms"),
                disco.DiscoFeature(NS_MUC)]
    room = await rooms.room(target.user)
    if room is None or target.resource is not None:
        return []
    features = [NS_MUC,
                "muc_membersonly" if room.flag("membersonly") else "muc_open",
                "muc_passwordprotected" if room.flag("passwordprotectedroom") else "muc_unsecured",
                "muc_persistent" if room.flag("persistentroom") else "muc_temporary",
                "muc_public" if room.flag("publicroom") else "muc_hidden",
                "muc_moderated" if room.flag("moderatedroom") else "muc_unmoderated",
                "muc_nonanonymous" if room.non_anonymous else "muc_semianonymous"]
    return [disco.DiscoIdentity("conference", "text", room.name)] + [disco.DiscoFeature(f) for f in features]


async def items(rooms: Rooms, target: jidlib.JID, node_identifier: str) -> list:
    if target.host != rooms.domain or target.user is not None or node_identifier:
        return []
    found = []
    for node_id in await rooms.storage.list_nodes(rooms.domain):
        room = await rooms.room(node_id)
        if room is not None and room.flag("publicroom") and not room.flag("membersonly"):
            found.append(disco.DiscoItem(jidlib.JID(rooms.jid(room)), name=room.name))
    return found
