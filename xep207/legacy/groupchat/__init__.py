"""Groupchat as pubsub (XEP-0207 §5): the XEP-0045 door to the room nodes.

A room is a node on the chat service and an occupant a subscription with a
``roomnick``; the rules (who may join, speak, kick, configure) are the room
kind's, ``xep207.pubsub.kinds.room``, the same for this door and XEP-0060's.
What is here translates XEP-0045 stanzas into engine calls and the results
back into XEP-0045's presences and messages:

- ``service``: where a stanza to the chat service enters (one room at a time);
- ``occupants``: join, nick or presence change, leave, and the presences about it;
- ``messages``: groupchat and private messages, subject, invitations, history;
- ``owner``: muc#owner — configuration form (it unlocks a new room), destroy;
- ``admin``: muc#admin — affiliations, roles, kicks, lists;
- ``native``: occupants that joined through XEP-0060, announced to legacy ones;
- ``rendering``: room items as groupchat messages for legacy sessions;
- ``discovery``: disco#info and #items of the service and its rooms;
- ``selfping``: XEP-0410 — an occupant asking whether it is still in;
- ``rooms``: the lookups and in-memory state the parts share.
"""

from xep207.legacy.groupchat.service import GroupchatService

__all__ = ["GroupchatService"]
