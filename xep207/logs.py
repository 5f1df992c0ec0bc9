"""What goes into the log: one line per event, never a message body.

Stanzas are described by their envelope (kind, type, id, from, to) so an
operator can follow them without the log holding anyone's conversation. A
database that is down or full is an operating condition, not a bug: it gets
one line, not a traceback per stanza.
"""

from __future__ import annotations

from twisted.python import log
from twisted.python.failure import Failure

from xep207.storage.interface import StorageUnavailable


def describe(stanza) -> str:
    """A stanza's envelope: ``message type=chat id=m1 from=a@b/r to=c@d``."""
    parts = [stanza.name]
    for attribute in ("type", "id", "from", "to"):
        value = stanza.getAttribute(attribute)
        if value:
            parts.append(f"{attribute}={value}")
    return " ".join(parts)


def failure(reason: Failure, what: str) -> None:
    """Log a failed operation: a line for storage trouble, a traceback for a bug."""
    if reason.check(StorageUnavailable):
        log.msg(f"{what}: {reason.getErrorMessage()}")
    else:
        log.err(reason, what)
