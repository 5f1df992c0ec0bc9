"""Node kinds: the rules of each kind of node, asked by the engine (see ``base``)."""

from xep207.pubsub.kinds.account import PRESENCE_NODE, ROSTER_NODE, PresenceKind, RosterKind
from xep207.pubsub.kinds.base import Access, INodeKind, NodeKind, Trusted, is_trusted
from xep207.pubsub.kinds.pair import PairKind, pair_node_id, pair_parties



def standard_kinds(pubsub_domain: str, chat_domain: str) -> list[NodeKind]:
    """The kinds a full server has besides the account nodes: pair nodes on
    the pubsub service, rooms on the chat service."""
    from xep207.pubsub.kinds.room import RoomKind

    return [PairKind(pubsub_domain), RoomKind(chat_domain)]


__all__ = ["standard_kinds", 
    "Access", "INodeKind", "NodeKind", "PairKind", "PresenceKind", "RosterKind", "Trusted",
    "is_trusted", "pair_node_id", "pair_parties", "PRESENCE_NODE", "ROSTER_NODE",
]
