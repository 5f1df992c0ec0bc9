"""Prepared JIDs, cheaply: each distinct string is prepared once.

Twisted's ``jid.JID(text)`` runs the pure-Python stringprep tables on every
call (tens of microseconds), and a server parses the same few thousand JIDs
over and over. Here every string goes through a bounded LRU cache, and a
cache miss on a plain-ASCII part takes a fast path that needs no tables; any
other input falls back to Twisted's own nodeprep/nameprep/resourceprep, so
the results are Twisted's. The objects returned are Twisted ``JID`` instances
(equal to and hashing like the ones ``jid.JID`` makes), shared between
callers: treat them as immutable.

Where Twisted is laxer than RFC 7622, this module follows the RFC and raises
``InvalidFormat``:

- an empty localpart or resourcepart (``@example.com``, ``a@example.com/``;
  Twisted drops the empty part), or one that preparation maps to nothing;
- a part longer than 1023 octets (§3.1);
- an empty domain label (``a..b``; Twisted fails with ``IndexError``);
- a trailing dot in the domainpart is stripped (§3.2; Twisted keeps it).
"""

from __future__ import annotations

import functools
import re

from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.protocols.jabber.xmpp_stringprep import nameprep, nodeprep, resourceprep

__all__ = ["JID", "InvalidFormat", "parse_jid", "jid_from_parts", "bare_jid", "full_jid", "CACHE_SIZE"]

CACHE_SIZE = 16384  # distinct strings remembered per cache; a few MiB at most
MAX_PART_OCTETS = 1023

# RFC 7622 nodeprep on ASCII: case folding, and these are prohibited (C.1.1
# space, C.2.1 controls, and the JID delimiters nodeprep adds).
_NODE_BAD = re.compile(r"[\x00-\x20\x7f\"&'/:<>@]")
# resourceprep on ASCII: only the C.2.1 controls are prohibited; case is kept.
_RESOURCE_BAD = re.compile(r"[\x00-\x1f\x7f]")
# nameprep with STD3 rules (Twisted's) on ASCII, after case folding: LDH labels
# that neither start nor end with a hyphen.
_HOST_OK = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")


def _checked(part: str, what: str) -> str:
    if not part:
        raise InvalidFormat(f"empty {what}")
    if len(part) > MAX_PART_OCTETS // 4 and len(part.encode("utf-8")) > MAX_PART_OCTETS:
        raise InvalidFormat(f"{what} longer than {MAX_PART_OCTETS} octets")
    return part


@functools.lru_cache(maxsize=CACHE_SIZE)
def _localpart(text: str) -> str:
    if text.isascii() and not _NODE_BAD.search(text):
        return _checked(text.lower(), "localpart")
    try:
        return _checked(nodeprep.prepare(text), "localpart")
    except UnicodeError as exc:
        raise InvalidFormat(f"invalid character in localpart: {exc}")


@functools.lru_cache(maxsize=CACHE_SIZE)
def _domainpart(text: str) -> str:
    if text.isascii():
        folded = text.lower()
        if folded.endswith("."):
            folded = folded[:-1]
        if _HOST_OK.fullmatch(folded):
            return _checked(folded, "domainpart")
    try:
        prepared = nameprep.prepare(text)
    except UnicodeError as exc:
        raise InvalidFormat(f"invalid character in domainpart: {exc}")
    except IndexError:  # Twisted's nameprep on an empty label
        raise InvalidFormat("empty label in domainpart")
    if prepared.endswith("."):  # RFC 7622 §3.2: a final dot is not part of the domain
        prepared = prepared[:-1]
        if not prepared or prepared.endswith("."):
            raise InvalidFormat("empty label in domainpart")
    return _checked(prepared, "domainpart")


@functools.lru_cache(maxsize=CACHE_SIZE)
def _resourcepart(text: str) -> str:
    if text.isascii() and not _RESOURCE_BAD.search(text):
        return _checked(text, "resourcepart")
    try:
        return _checked(resourceprep.prepare(text), "resourcepart")
    except UnicodeError as exc:
        raise InvalidFormat(f"invalid character in resourcepart: {exc}")


def _make(user: str | None, host: str, resource: str | None) -> JID:
    """A JID from parts already prepared (no stringprep again)."""
    made = JID.__new__(JID)
    made.user, made.host, made.resource = user, host, resource
    return made


def _prepare(user: str | None, host: str, resource: str | None) -> JID:
    if not host:
        raise InvalidFormat("empty domainpart")
    return _make(None if user is None else _localpart(user), _domainpart(host),
                 None if resource is None else _resourcepart(resource))


@functools.lru_cache(maxsize=CACHE_SIZE)
def _parse(text: str) -> JID | str:
    # RFC 7622 §3.1: the first "/" starts the resourcepart; an "@" before it ends the localpart.
    slash = text.find("/")
    head, resource = (text, None) if slash == -1 else (text[:slash], text[slash + 1:])
    at = head.find("@")
    user, host = (None, head) if at == -1 else (head[:at], head[at + 1:])
    try:
        return _prepare(user, host, resource)
    except InvalidFormat as exc:
        return str(exc)  # cached too: the same bad string costs nothing the second time


def parse_jid(text: str) -> JID:
    """The prepared JID for ``text``; ``InvalidFormat`` if it is not one."""
    result = _parse(text)
    if isinstance(result, str):
        raise InvalidFormat(result)
    return result


def jid_from_parts(user: str | None, host: str, resource: str | None = None) -> JID:
    """``JID(tuple=(user, host, resource))``, each part prepared through the caches."""
    return _prepare(user, host, resource)


@functools.lru_cache(maxsize=CACHE_SIZE)
def bare_jid(text: str) -> str:
    """The prepared bare JID string (``user@host`` or ``host``) of ``text``."""
    return parse_jid(text).userhost()


@functools.lru_cache(maxsize=CACHE_SIZE)
def full_jid(text: str) -> str:
    """The prepared JID string of ``text``, resource included."""
    return parse_jid(text).full()
