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


def peer_address(stream_or_session) -> str:
    """The client's IP address, from a stream or a session (``?`` if gone)."""
    is_session = hasattr(stream_or_session, "jid")  # an XmlStream's .stream is its parser
    stream = stream_or_session.stream if is_session else stream_or_session
    transport = getattr(stream, "transport", None)
    if transport is None:
        return "?"
    peer = transport.getPeer()
    return getattr(peer, "host", str(peer))


def failure(reason: Failure, what: str) -> None:
    """Log a failed operation: a line for storage trouble, a traceback for a bug."""
    if reason.check(StorageUnavailable):
        log.msg(f"{what}: {reason.getErrorMessage()}")
    else:
        log.err(reason, what)


# --log-format json -------------------------------------------------------------------

_json_path = "-"


def json_output(logfile: str | None) -> None:
    """Where ``json_observer`` writes: twistd's ``--logfile`` (``-`` or unset: stdout)."""
    global _json_path
    _json_path = logfile or "-"


def json_observer():
    """twistd ``--logger`` factory: one JSON event per line (``jsonFileLogObserver``)."""
    import sys

    from twisted.logger import jsonFileLogObserver

    if _json_path == "-":
        output = sys.stdout
    else:
        output = open(_json_path, "a", encoding="utf-8")  # noqa: SIM115 (open for the process' life)
    return jsonFileLogObserver(output, recordSeparator="")
