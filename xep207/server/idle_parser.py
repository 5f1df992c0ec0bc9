"""Free the XML parser of a stream that is quiet between stanzas.

A live expat parser costs about 11 KiB (its input buffer, name pools and hash
tables, its intern dict) however small the stanzas were, and most client
sessions are idle most of the time. So a stream that has been between stanzas
for ``QUIET_SECONDS`` drops its parser; the next bytes from the peer get a
fresh one, primed (handlers off) with a copy of the stream header's namespace
declarations and root name, so prefixes, the default namespace and the final
``</stream:stream>`` resolve exactly as before; the stream then sets its
handlers on it. A busy stream pays one parser creation (about 10 µs) per
``QUIET_SECONDS`` at most.
"""

from __future__ import annotations

import pyexpat
from typing import Any
from xml.sax.saxutils import quoteattr

QUIET_SECONDS = 1.0

_CLIENT_HEADER = (b'<stream:stream xmlns="jabber:client" '
                  b'xmlns:stream="http://etherx.jabber.org/streams">')
_NS_STREAMS = "http://etherx.jabber.org/streams"
_CLIENT_PREFIXES = {"stream": _NS_STREAMS}


def header_for(root: Any) -> bytes | None:
    """An opening tag that binds what ``root`` (domish's stream root) bound, under
    the same qualified name; None when that name cannot be told (two prefixes for
    the root's namespace), and the parser is then never freed."""
    if (getattr(root, "localPrefixes", None) == _CLIENT_PREFIXES and root.defaultUri == "jabber:client"
            and root.uri == _NS_STREAMS and root.name == "stream"):
        return _CLIENT_HEADER  # (nearly every stream: what derived_header makes of it)
    return derived_header(root)


def derived_header(root: Any) -> bytes | None:
    """``header_for``, worked out from the root's declarations."""
    prefixes = dict(getattr(root, "localPrefixes", None) or {})
    default = root.defaultUri or ""
    names = [p for p, uri in prefixes.items() if uri == root.uri]
    if len(names) > 1 or (names and default == root.uri):
        return None
    if names:
        qname = f"{names[0]}:{root.name}"
    elif default == root.uri:
        qname = root.name
    else:
        return None
    declarations = [f" xmlns={quoteattr(default)}"] if default else []
    declarations += [f" xmlns:{p}={quoteattr(uri)}" for p, uri in sorted(prefixes.items())]
    header = f"<{qname}{''.join(declarations)}>".encode()
    # The usual client header shares one bytes object among all sessions.
    return _CLIENT_HEADER if header == _CLIENT_HEADER else header


# Text handed over in pieces of up to this many bytes. pyexpat's default is
# 8 KiB per parser, allocated while the stream is busy: 1,000 sessions that
# all spoke at once kept 7 KiB more RSS each after their parsers were freed.
# 512 bytes stay in Python's small-object allocator, and 250 KB of text is
# 500 calls (one per line or reference without buffering, each appended to
# the text so far, took a second).
TEXT_BUFFER = 512


def buffer_text(parser: Any) -> None:
    """Character data in one call per ``TEXT_BUFFER`` bytes of a run of text."""
    parser.buffer_size = TEXT_BUFFER
    parser.buffer_text = True


def fresh_parser(header: bytes) -> Any:
    """A parser in the state of one that has just read ``header`` (without
    handlers or text buffering yet: the stream sets its own)."""
    parser = pyexpat.ParserCreate("UTF-8", " ")
    parser.Parse(header)
    return parser
