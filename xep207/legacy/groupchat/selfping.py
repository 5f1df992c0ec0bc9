"""XEP-0410 MUC self-ping: a client asks whether it is still in a room by
pinging its own occupant JID (room@service/nick).

We implement §3's server optimization: the service answers for the occupant
instead of forwarding the ping to it. A result says "still joined"; anyone
who is not the occupant behind that nick (a stranger, a former occupant after
a restart, another account's session) gets ``not-acceptable`` — whether or not
the room exists, so the answer tells a non-occupant nothing about it.
"""

from __future__ import annotations

from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from xep207.legacy.groupchat.rooms import NS_MUC, Rooms
from xep207.pubsub.kinds.room import occupant_of

NS_PING = "urn:xmpp:ping"
SELF_PING_OPTIMIZATION = NS_MUC + "#self-ping-optimization"
PING_REQUEST = f"/iq[@type='get']/ping[@xmlns='{NS_PING}']"


async def answer(rooms: Rooms, iq: domish.Element, to: jidlib.JID) -> domish.Element:
    """The answer to an XEP-0199 ping to the service, a room or an occupant."""
    if to.user is not None:
        room = await rooms.room(to.user)
        if to.resource is not None:
            occupant = occupant_of(await rooms.occupants(room), iq["from"]) if room is not None else None
            if occupant is None or occupant.nick != to.resource:
                raise StanzaError("not-acceptable", text="you are not this occupant")
        elif room is None:
            raise StanzaError("item-not-found", text="no such room")
    return xmlstream.toResponse(iq, "result")
