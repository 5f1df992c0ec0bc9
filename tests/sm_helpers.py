"""Raw XEP-0198 streams for the stream-management tests."""

from __future__ import annotations

from twisted.internet import defer, reactor, task

from tests.server_helpers import RawClient, plain_auth

NS_SM = "urn:xmpp:sm:3"
NS_STREAMS_ERROR = "urn:ietf:params:xml:ns:xmpp-streams"
STANZAS = ("message", "presence", "iq")


def sm(name):
    return lambda e: e.uri == NS_SM and e.name == name


def body_of(element) -> str | None:
    body = next((c for c in element.elements() if c.name == "body"), None)
    return None if body is None else str(body)


def bodies(client: RawClient) -> list[str]:
    return [b for b in (body_of(e) for e in client.stanzas if e.name == "message") if b is not None]


def failed_condition(element) -> str:
    return next(c.name for c in element.elements() if c.name != "text")


async def authenticate(client: RawClient, user: str) -> None:
    """SASL and the restarted stream, without binding (for ``<resume/>``)."""
    client.header()
    await client.expect("</stream:features>")
    client.send(plain_auth(user))
    await client.expect("<success")
    client.header()
    features = await client.expect("</stream:features>")
    assert b"<sm xmlns='urn:xmpp:sm:3'" in features[features.rfind(b"<stream:features"):], features
    # Out of dataReceived first: it is about to parse that chunk, stream header and all.
    await task.deferLater(reactor, 0, lambda: None)
    client.start_parsing(client.received[client._cursor:])


async def ask_resume(client: RawClient, user: str, previd: str, h: int = 0) -> None:
    """Authenticate on a new connection, without binding, and ask to resume."""
    await authenticate(client, user)
    client.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='{h}'/>")


async def enable(client: RawClient, resume: bool = True):
    client.send(f"<enable xmlns='{NS_SM}' resume='{'true' if resume else 'false'}'/>")
    return await client.wait_for(sm("enabled"))


def handled(client: RawClient, upto) -> int:
    """The client's h: stanzas received after ``<enabled/>``/``<resumed/>`` up to ``upto`` (included)."""
    count, counting = 0, False
    for element in client.stanzas:
        if element.uri == NS_SM and element.name in ("enabled", "resumed"):
            counting = True
            continue
        if counting and element.name in STANZAS and element.uri == "jabber:client":
            count += 1
        if element is upto:
            return count
    raise AssertionError("not received")


def server_side_gone(server, full: str) -> defer.Deferred:
    """Fires once the server has seen the connection of session ``full`` end."""
    from twisted.words.protocols.jabber import xmlstream

    d: defer.Deferred = defer.Deferred()
    server.router.session(full).stream.addObserver(xmlstream.STREAM_END_EVENT,
                                                   lambda _: d.called or d.callback(None))
    return d.addTimeout(10, reactor)


def stream_error(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    start = text.rfind("<stream:error>")
    assert start >= 0, text[-500:]
    return text[start:]


def all_of(*ds) -> defer.Deferred:
    return defer.gatherResults(list(ds))
