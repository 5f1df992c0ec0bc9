"""The mirror of the other processes' sessions, kept from ``P:all``.

The router asks it, beside its own sessions, which resources an address
has (``Router.session``, ``Router.resources``): RFC 6121 §8's choices
(highest priority, the addressed resource) are made over the whole
cluster, and a stanza for a session elsewhere is handed to a
``RemoteSession``, whose ``send`` crosses to its process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.words.protocols.jabber import jid as jidlib

from xep207.cluster.registry import SessionInfo


@dataclass(eq=False)
class RemoteSession:
    """A session bound on another process. It has the attributes routing and
    rendering read on a local ``Session``; ``send`` forwards."""

    jid: jidlib.JID
    node: str
    info: SessionInfo
    routing: Any  # xep207.cluster.routing.Routing
    remote = True
    stream = None  # no socket here
    carbons = False  # only the holding process renders carbons
    lang = ""
    pubsub_nodes: frozenset = frozenset()
    directed: set = field(default_factory=set)

    @property
    def full(self) -> str:
        return self.jid.full()

    @property
    def bare(self) -> str:
        return self.jid.userhost()

    @property
    def available(self) -> bool:
        return self.info.available

    @property
    def priority(self) -> int:
        return self.info.priority

    @property
    def interested(self) -> frozenset:
        return frozenset(self.info.interested)

    @property
    def roster_requested(self) -> bool:
        return self.info.roster_requested

    @property
    def presence(self) -> str | None:
        return self.info.presence

    def send(self, stanza) -> None:
        self.routing.forward_stanza(self, stanza)

    def close(self, condition: str, text: str | None = None) -> None:
        """Its process ends it with this stream error (a kick, a password change)."""
        self.routing.close_session(self, condition, text)


class Directory:
    def __init__(self, routing):
        self.routing = routing
        self.nodes: dict[str, dict[str, RemoteSession]] = {}  # node → full JID → session
        self.by_bare: dict[str, dict[str, RemoteSession]] = {}  # bare → full JID → session

    def session(self, full: str) -> RemoteSession | None:
        return self.by_bare.get(full.partition("/")[0], {}).get(full)

    def resources(self, bare: str) -> list[RemoteSession]:
        found = self.by_bare.get(bare)
        return list(found.values()) if found else []

    def count(self) -> int:
        return sum(len(sessions) for sessions in self.nodes.values())

    def set(self, node: str, full: str, info: SessionInfo | None) -> None:
        """One session of ``node`` bound, changed (``info``) or gone (None)."""
        self._drop(node, full)
        if info is None:
            return
        try:
            jid = jidlib.JID(full)
        except (jidlib.InvalidFormat, IndexError):
            return
        if jid.resource is None:
            return
        # A full JID lives on one process: a newer binding elsewhere replaces it.
        for other in [n for n, sessions in self.nodes.items() if full in sessions and n != node]:
            self._drop(other, full)
        session = RemoteSession(jid, node, info, self.routing)
        self.nodes.setdefault(node, {})[full] = session
        self.by_bare.setdefault(session.bare, {})[full] = session

    def replace(self, node: str, sessions: dict[str, SessionInfo]) -> None:
        """Everything ``node`` holds, as it just said or as Redis has it."""
        self.drop_node(node)
        self.nodes.setdefault(node, {})
        for full, info in sessions.items():
            self.set(node, full, info)

    def drop_node(self, node: str) -> None:
        for full in list(self.nodes.get(node, {})):
            self._drop(node, full)
        self.nodes.pop(node, None)

    def _drop(self, node: str, full: str) -> None:
        session = self.nodes.get(node, {}).pop(full, None)
        if session is None:
            return
        resources = self.by_bare.get(session.bare)
        if resources is not None and resources.get(full) is session:
            del resources[full]
            if not resources:
                del self.by_bare[session.bare]
