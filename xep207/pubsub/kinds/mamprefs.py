"""The account's XEP-0313 archiving preferences as a private node of its PEP service.

Node ``mam-prefs`` on an account's bare JID: each item is one version of the
preferences (``<prefs xmlns='urn:xmpp:mam:2' default='…'>``), oldest first,
the last one in force. Versions are kept (up to ``MAX_VERSIONS``) because a
pair node is shared by two parties: the archive is each party's *view* of it,
and a message belongs to a party's view when that party's preferences in
force at the message's time said "archive" (see ``xep207.legacy.archive``).
Like ``roster``, nobody but the account may learn the node exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from xml.sax.saxutils import escape

from twisted.words.protocols.jabber.jid import InvalidFormat

from xep207.jids import bare_jid
from xep207.pubsub import errors
from xep207.pubsub.kinds.base import Access, AccountPrivateKind, NodeKindName
from xep207.storage.records import NodeConfig
from xep207.xmlutil import parse_stanza

MAM_PREFS_NODE = "mam-prefs"
NS_MAM = "urn:xmpp:mam:2"
DEFAULTS = ("always", "never", "roster")
MAX_VERSIONS = 50
MAX_JIDS = 1000


@dataclass(frozen=True)
class Prefs:
    default: str = "always"  # the server archives everything unless told otherwise
    always: frozenset[str] = frozenset()
    never: frozenset[str] = frozenset()

    def archives(self, contact: str, in_roster) -> bool:
        """Whether a message with ``contact`` (a bare JID) is archived; ``in_roster``
        is asked only for the ``roster`` default."""
        if contact in self.never:
            return False
        if contact in self.always:
            return True
        if self.default == "roster":
            return bool(in_roster(contact))
        return self.default == "always"

    def to_xml(self) -> str:
        def jids(values):
            return "".join(f"<jid>{escape(j)}</jid>" for j in sorted(values))
        return (f"<prefs xmlns='{NS_MAM}' default='{self.default}'><always>{jids(self.always)}</always>"
                f"<never>{jids(self.never)}</never></prefs>")


def parse_prefs(element) -> Prefs:
    """A ``<prefs/>`` element as sent (``bad-request`` / ``jid-malformed`` otherwise)."""
    if element.name != "prefs" or element.uri != NS_MAM:
        raise errors.bad_request("invalid-payload", text=f"the item is <prefs xmlns='{NS_MAM}'/>")
    default = element.getAttribute("default")
    if default not in DEFAULTS:
        raise errors.bad_request("invalid-payload", text="default is always, never or roster")
    lists: dict[str, set[str]] = {"always": set(), "never": set()}
    for child in element.elements():
        if child.uri != NS_MAM or child.name not in lists:
            raise errors.bad_request("invalid-payload", text="prefs hold <always/> and <never/>")
        for jid in child.elements():
            if jid.name != "jid" or jid.uri != NS_MAM:
                raise errors.bad_request("invalid-payload", text="lists hold <jid/> elements")
            try:
                lists[child.name].add(bare_jid(str(jid).strip()))
            except (InvalidFormat, ValueError):
                raise errors.StanzaError("jid-malformed", text=f"not a JID: {str(jid)[:100]!r}")
    if len(lists["always"]) + len(lists["never"]) > MAX_JIDS:
        raise errors.not_acceptable(text="too many JIDs in the archiving preferences")
    # A JID in both lists: never wins (the safer reading).
    return Prefs(default, frozenset(lists["always"] - lists["never"]), frozenset(lists["never"]))


def prefs_of(payload: str) -> Prefs:
    try:
        return parse_prefs(parse_stanza(payload))
    except Exception:
        return Prefs()


class MamPrefsKind(AccountPrivateKind):
    name: ClassVar[NodeKindName] = "mamprefs"
    node_name = MAM_PREFS_NODE
    what = "the archiving preferences"

    def initial_config(self, engine, service: str, node_id: str) -> NodeConfig:
        return super().initial_config(engine, service, node_id).replace(
            access_model="whitelist", persist_items=True, max_items=MAX_VERSIONS,
            deliver_notifications=False, send_last_published_item="never")

    async def vet_item(self, access: Access, item_id, payload: str):
        """A new version: always a new item (history is what the archive reads)."""
        try:
            element = parse_stanza(payload)
        except Exception:
            raise errors.bad_request("invalid-payload")
        return None, parse_prefs(element).to_xml()

    def overwrites_any(self, access: Access) -> bool:
        return False

    async def check_overwrite(self, access: Access, existing) -> None:
        raise errors.forbidden(text="a version of the preferences is never rewritten")

    async def check_retract(self, access: Access, existing) -> None:
        raise errors.forbidden(text="a version of the preferences is history; publish a new one")

    async def check_owner(self, access: Access, operation: str) -> None:
        """Purging or deleting the versions is retracting them all at once: the
        archive would read past messages under preferences never in force then."""
        await super().check_owner(access, operation)
        if operation in ("purge", "delete"):
            raise errors.forbidden(text="a version of the preferences is history; publish a new one")
