"""A receiving XML stream that refuses what RFC 6120 says a server must refuse.

On top of Twisted's ``XmlStream``: restricted XML (no DTD, entity declaration,
comment or processing instruction — so an XML bomb never expands), limits on
what one stanza may hold while it is parsed (bytes, elements, depth: a parsed
element costs a few hundred bytes of memory however few bytes it took on the
wire, and a deep tree breaks every recursive walk over it), ``not-well-formed``
reported as a stream error before closing, XEP-0138 zlib compression with
bounded inflation, traffic shaping of what the peer sends (a token bucket:
reading pauses while the peer is over its rate), reading paused as well while
the storage writer is behind (``xep207.server.backpressure``) and a bound on
what waits to be written to a peer that does not read.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable
from xml.sax.saxutils import quoteattr

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.python import log
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import error, xmlstream
from twisted.words.xish import domish
from twisted.words.xish import xmlstream as xish_xmlstream
from zope.interface import implementer

from xep207.server import idle_parser, idle_tls
from xep207.server.element_dispatch import FastElementDispatch

if TYPE_CHECKING:
    from xep207.server.backpressure import Backpressure

NS_STREAMS = "http://etherx.jabber.org/streams"
INFLATE_CHUNK = 16 * 1024
PARSE_SLICE = 16 * 1024  # bytes of one read parsed per reactor turn
WRITE_CHUNK = 16 * 1024  # the largest TLS record's plaintext
COMPACT_DICT = 42  # the attributes a dict of 64 slots holds

# Why a stream's socket is not read (``ServerStream.hold_reading``). Each
# reason is released on its own; the socket is read again once none holds,
# so the shaper's refill never resumes a socket the storage holds, nor the
# reverse.
HELD_BY_RATE = 1  # over its shaping rate (``ServerStream._charge``)
HELD_BY_STORAGE = 2  # the storage writer is behind (``xep207.server.backpressure``)


class RestrictedXML(Exception):
    """The peer sent XML that RFC 6120 §11.1 forbids on a stream."""


class UnsafeNamespace(Exception):
    """A namespace name that Twisted's serializer would write unescaped."""


# domish writes ``xmlns='…'`` (and the declarations of attribute namespaces)
# without escaping: a quote would end the declaration and let the rest of the
# name write elements, even whole stanzas, into what the recipient reads. No
# real namespace holds these (a tab or newline would come back as a space).
_UNSAFE_IN_NAMESPACE = re.compile("['\"<>&\t\n\r]")


class StanzaTooLarge(Exception):
    """A complete stanza larger than the configured limit."""


class StanzaTooComplex(Exception):
    """A stanza with more elements, or deeper, than the limits allow."""


@dataclass(frozen=True)
class StreamLimits:
    """What one stanza may cost while it is parsed.

    ``stanza_size`` bounds the bytes held since the last complete stanza,
    ``elements`` the parsed elements of one stanza (each a Python object of a
    few hundred bytes, so this is what bounds memory for ``<a/><a/>…``), and
    ``depth`` the nesting below the stream root.
    """

    stanza_size: int = 256 * 1024
    elements: int = 5000
    depth: int = 64


# Before authentication a client only negotiates: STARTTLS, SASL, XEP-0077.
PRE_AUTH_LIMITS = StreamLimits(stanza_size=16 * 1024, elements=64, depth=8)


@dataclass(frozen=True)
class Shaping:
    """Traffic shaping of what a peer sends, and the bound on its unread output.

    ``rate`` bytes per second with ``burst`` bytes of credit (a token bucket);
    ``max_output`` bytes may wait for a peer that does not read before it is
    disconnected. Zero disables a part.
    """

    rate: int = 32 * 1024
    burst: int = 128 * 1024
    max_output: int = 1024 * 1024


class _Stopped(Exception):
    """Raised from a parser callback after the stream failed, so that expat
    stops there instead of handing on the rest of the buffer it is parsing."""


def _refuse(*_):
    raise RestrictedXML()


# Namespaced attributes on one element: Twisted's serializer looks each one's
# prefix up in a list of those declared before it (quadratic: 8000 of them, a
# 250 KB stanza, took half a second per copy written). A real stanza has a few.
MAX_QUALIFIED = 64


def _qualified(attributes: dict) -> dict:
    """domish's attributes: a namespaced one ("uri name" from expat) keyed
    (uri, name), after the plain ones, each group in document order."""
    plain = {key: value for key, value in attributes.items() if " " not in key}
    if len(attributes) - len(plain) > MAX_QUALIFIED:
        raise StanzaTooComplex(f"more than {MAX_QUALIFIED} namespaced attributes on an element")
    for key, value in attributes.items():
        if " " in key:
            uri, _, name = key.rpartition(" ")
            plain[(uri, name)] = value
    return plain


class _CompressingTransport:
    """Wraps a transport so that everything written is zlib-compressed and flushed."""

    def __init__(self, transport):
        self._transport = transport
        self._deflater = zlib.compressobj()

    def write(self, data: bytes) -> None:
        self._transport.write(self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH))

    def writeSequence(self, data) -> None:
        self.write(b"".join(data))

    def __getattr__(self, name):
        return getattr(self._transport, name)


@implementer(IPushProducer)
class ServerStream(FastElementDispatch, xmlstream.XmlStream):
    """The receiving side of a client stream.

    ``limits`` apply once ``authenticated`` is set (the negotiator sets it
    before restarting the stream), ``pre_auth_limits`` before. The stream is
    the push producer of its transport: while the transport's buffer is full
    it counts what is still written, and past ``shaping.max_output`` the peer
    is disconnected.
    """

    max_stanza_size = 256 * 1024
    # Once negotiation is over (no transport switch can follow), everything sent
    # in one reactor turn leaves in one write: one TLS record, one zlib flush,
    # one trip through the transport instead of one per stanza.
    coalesce = False
    _pending: list | None = None
    # A TCP or TLS transport is at once an ITransport, an IConsumer (we register
    # as its producer) and an IPushProducer (shaping pauses it); no single Twisted
    # type says so. None once the connection is gone.
    transport: Any | None
    # domish's element stream (expat's or sux's: no common type); None once
    # nothing more is to be parsed from this peer.
    stream: Any | None
    # While the stream is quiet between stanzas its parser is freed
    # (idle_parser): the header that primes the next one (its handlers are
    # made again then), the bytes the current one was fed, the pending check.
    _parser_header: bytes | None = None
    _fed = 0
    _quiet_call: IDelayedCall | None = None
    _clock: Any = None  # a test's task.Clock; None: the reactor
    # What most streams never change stays a class default, not an instance
    # attribute: a stream's __dict__ is one of its largest objects, and past
    # 42 entries it doubles (1.6 KiB instead of 0.8 per idle session).
    authenticated = False
    compressed = False
    _inflater: Any | None = None  # a zlib Decompress object once compressed
    _refilled: float | None = None
    _resume_reading: IDelayedCall | None = None  # the shaper's refill
    _reading_held = 0  # HELD_BY_* reasons the socket is not read for
    _output_blocked = False
    _queued_output = 0
    _producing = False
    _closed = False  # our </stream:stream> is out
    # Slices of a large read, parsed one per reactor turn: (bytes, paid to the
    # shaper already); None while there are none (an idle stream keeps no deque).
    _unparsed: deque[tuple[bytes, bool]] | None = None
    _next_slice: IDelayedCall | None = None
    # The negotiator's two handlers, called directly rather than registered as
    # xish observers: an observer costs a CallbackList, a wrapper and two dicts
    # per stream (3.4 KiB for the three every client stream had). Each element
    # goes to ``element_handler`` after every observer (as priority -1 did); the
    # connection's end to ``end_handler`` before STREAM_END_EVENT's observers.
    element_handler: Callable[[Any], object] | None = None
    end_handler: Callable[[Failure], object] | None = None

    def __init__(self, authenticator, limits: StreamLimits = StreamLimits(),
                 pre_auth_limits: StreamLimits = PRE_AUTH_LIMITS, shaping: Shaping = Shaping(), clock=None):
        super().__init__(authenticator)
        self.full_limits = limits
        self.pre_auth_limits = pre_auth_limits
        self.shaping = shaping
        if clock is not None:
            self._clock = clock
        self._tokens = float(shaping.burst)

    @property
    def limits(self) -> StreamLimits:
        if self.authenticated:
            return self.full_limits
        pre, full = self.pre_auth_limits, self.full_limits
        return StreamLimits(min(pre.stanza_size, full.stanza_size), min(pre.elements, full.elements),
                            min(pre.depth, full.depth))

    @property
    def backpressure(self) -> Backpressure | None:
        """What holds client streams while storage is behind: the listener's
        (``ClientFactory.backpressure``); None for a stream never held so.
        (Looked up, not kept: one attribute less on every stream.)"""
        return getattr(self.factory, "backpressure", None)

    @property
    def clock(self):
        if self._clock is None:  # (not kept: one attribute less on every stream)
            return _reactor()
        return self._clock

    def connectionMade(self) -> None:
        if self.shaping.max_output:
            assert self.transport is not None  # Twisted sets it before connectionMade
            self.transport.registerProducer(self, True)
            self._producing = True
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._parse_the_rest()
        backpressure = self.backpressure
        if backpressure is not None:
            backpressure.forget(self)  # (not kept among the paused: nothing more to read)
        self._producing = False
        if self._resume_reading is not None and self._resume_reading.active():
            self._resume_reading.cancel()
        self._resume_reading = None
        if self._quiet_call is not None and self._quiet_call.active():
            self._quiet_call.cancel()
        self._quiet_call = None
        if self.end_handler is not None:
            self.end_handler(reason)
        stream = self.stream
        super().connectionLost(reason)
        # Nothing more comes: the links that make this stream, its parser and
        # its negotiator a cycle go, so that they are freed at once rather
        # than by the garbage collector (whose passes cost a login ~8%, issue 13).
        _dismantle(stream)
        self.element_handler = self.end_handler = None
        self.authenticator = None

    def onDocumentStart(self, rootElement):
        """Twisted's, without the one-time observer it registers at every stream
        start for ``<stream:error/>`` (``onElement`` looks for that itself)."""
        xish_xmlstream.XmlStream.onDocumentStart(self, rootElement)
        self.authenticator.streamStarted(rootElement)

    def onElement(self, element):
        if element.name == "error" and element.uri == NS_STREAMS:
            self.onStreamError(element)  # the peer's stream error: we close too
        self.dispatch_element(element)  # (xish observers: tests', plugins'; by plans)
        if self.element_handler is not None:
            self.element_handler(element)

    def _initializeStream(self):
        super()._initializeStream()
        stream = self.stream
        assert stream is not None  # just created by XmlStream._initializeStream
        limits = self.limits
        self._current_limits = limits
        # Twisted's own cap catches a stanza that never ends (bytes since the
        # last complete one); the byte offsets below catch a complete stanza
        # that arrived within one read.
        stream.maxStanzaSize = limits.stanza_size
        stream.maxElementCount = limits.elements
        stream.ElementEvent = self._on_complete_stanza
        self._stanza_start = 0
        self._depth = 0
        self._elements = 0
        self._fed = 0
        self._parser_header = None
        start_document = stream.DocumentStartEvent

        def on_document(root):
            stream.DocumentStartEvent = start_document  # this closure is needed once
            self._parser_header = idle_parser.header_for(root)
            start_document(root)

        stream.DocumentStartEvent = on_document
        self._install_parser_handlers(stream, stream.parser)

    def _install_parser_handlers(self, stream: Any, parser: Any) -> None:
        """Set ``stream``'s handlers on ``parser``: its first, and each fresh
        one after an idle spell. (Made again then, not kept while the parser
        is freed: an idle session would hold two dozen objects more for the
        collector to walk — six closures, their cells, the bound methods.)"""
        limits = self._current_limits
        start_element = stream._onStartElement  # (domish's: the stream header)
        # Below the root, the limits and domish's tree building in one handler
        # per event (issue 13: not a wrapper calling domish's): the same
        # Elements, the same state on ``stream`` (currElem, elementCount,
        # localPrefixes: the idle parser and Twisted read it).
        Element = domish.Element

        # After a restart (STARTTLS, SASL, compression) ``self.stream`` is a new
        # one: this parser stops there, and the rest of what it was given is
        # dropped (after <starttls/> it came in the clear, RFC 6120 §5.4.3.3).
        this = stream  # (compared, not ``stream``: mypy would narrow that to Optional)
        def on_start(name, attributes):
            if self.stream is not this:
                raise _Stopped()
            if not stream.documentStarted:
                return start_element(name, attributes)  # the stream header
            parent = stream.currElem
            if parent is None:
                self._stanza_start = stream.parser.CurrentByteIndex
                self._elements = 0
            self._depth += 1
            self._elements += 1
            if self._depth > limits.depth:
                raise StanzaTooComplex(f"elements nested deeper than {limits.depth}")
            if self._elements > limits.elements:
                raise StanzaTooComplex(f"more than {limits.elements} elements in a stanza")
            # expat gives "uri name" (a space: the separator) or a bare name;
            # a namespaced attribute becomes a (uri, name) key, after the others.
            uri, _, local = name.rpartition(" ")
            for key in attributes:
                if " " in key:
                    attributes = _qualified(attributes)
                    break
            # The client's prefixes are dropped, as Prosody and ejabberd do:
            # an element is its namespace and name, and what we send of it
            # (serialized once, then quoted into archives, carbons, MUC
            # reflections) must read as ``<message …>…</message>`` whatever
            # prefix the sender chose. A prefixed element declares its own
            # namespace as the default instead.
            element = Element((uri, local), uri or stream.defaultNsStack[-1], attributes)
            if stream.localPrefixes:
                stream.localPrefixes = {}
            stream.elementCount += 1
            if stream.elementCount > stream.maxElementCount:
                raise domish.ParserError("Maximum element count exceeded")
            if parent is not None:
                parent.children.append(element)
                element.parent = parent
            stream.currElem = element

        def on_end(name):
            if self.stream is not this:
                raise _Stopped()
            self._depth -= 1
            element = stream.currElem
            if element is None:
                stream.DocumentEndEvent()  # </stream:stream>
            elif element.parent is None:
                stream.ElementEvent(element)  # a complete stanza
                stream.currElem = None
                stream.elementCount = 0
                stream.stanzaSize = 0
            else:
                stream.currElem = element.parent

        def on_text(data):
            element = stream.currElem
            if element is not None:
                children = element.children
                if children and isinstance(children[-1], str):
                    children[-1] = children[-1] + data
                else:
                    children.append(data)

        start_namespace = stream._onStartNamespace

        def on_namespace(prefix, uri):
            if uri and _UNSAFE_IN_NAMESPACE.search(uri):
                raise UnsafeNamespace()
            start_namespace(prefix, uri)

        def on_cdata(*_):  # (a section open between stanzas counts as a level:
            self._depth += 1  # the idle parser, which would forget it, is kept)

        def on_cdata_end(*_):
            self._depth -= 1

        parser.StartElementHandler = on_start
        parser.EndNamespaceDeclHandler = stream._onEndNamespace
        parser.StartNamespaceDeclHandler = on_namespace
        parser.StartCdataSectionHandler = on_cdata
        parser.EndCdataSectionHandler = on_cdata_end
        parser.EndElementHandler = on_end
        parser.CharacterDataHandler = on_text
        # Text in few calls, not one per line or reference: on_text appends
        # each piece to what it has, and 250 KB of newlines cost a second.
        idle_parser.buffer_text(parser)
        parser.StartDoctypeDeclHandler = _refuse
        parser.EntityDeclHandler = _refuse
        parser.CommentHandler = _refuse
        parser.ProcessingInstructionHandler = _refuse
        parser.UnparsedEntityDeclHandler = _refuse
        parser.NotationDeclHandler = _refuse

    def _on_complete_stanza(self, element) -> None:
        if self.stream is None:
            raise _Stopped()
        if self.stream.parser.CurrentByteIndex - self._stanza_start > self._current_limits.stanza_size:
            raise StanzaTooLarge()
        self.onElement(element)

    def reset(self) -> None:
        """A new stream on this connection: what was read before it and is
        still waiting to be parsed belongs to the old one (see on_start)."""
        call = self.__dict__.pop("_next_slice", None)  # (back to the class defaults:
        if call is not None and call.active():  # no attribute more on every stream)
            call.cancel()
        self.__dict__.pop("_unparsed", None)
        super().reset()

    def resetDispatchFn(self):
        assert self.stream is not None  # only called while parsing
        self.stream.ElementEvent = self._on_complete_stanza

    def dataReceived(self, data: bytes) -> None:
        as_one_read(self._data_received, data)

    def _data_received(self, data: bytes) -> None:
        if self.stream is None:
            return
        backpressure = self.backpressure
        if self._unparsed or len(data) > PARSE_SLICE or (backpressure is not None and backpressure.holding):
            # A large read (a first burst of hundreds of KB) is parsed a slice
            # per reactor turn, so other connections are served in between;
            # what arrives meanwhile waits behind it, in order (issue 12).
            # While the storage writer is behind, a read waits there unparsed
            # (_parse_next_slice pauses the stream) until it caught up.
            # The shaper is paid for the whole read now, as when it was parsed at once.
            charged = self._inflater is None
            if charged:
                self._charge(len(data))
            view = memoryview(data)
            if self._unparsed is None:
                self._unparsed = deque()
            self._unparsed.extend((bytes(view[i:i + PARSE_SLICE]), charged)
                                  for i in range(0, len(data), PARSE_SLICE))
            if self._next_slice is None:
                self._parse_next_slice()
            return
        self._feed(data)

    def _feed(self, data: bytes, charged: bool = False) -> None:
        stream = self.stream
        if stream is None:
            return
        if self._inflater is not None:
            self._inflate(self._inflater, data)
        else:
            self._parse(stream, data, charged)

    def _parse_next_slice(self) -> None:
        self._next_slice = None
        unparsed = self._unparsed
        if self.stream is None or not unparsed:
            self._unparsed = None
            return
        if self._inflater is not None and self._resume_reading is not None:
            return  # compressed, over its rate: _read_again carries on (see _inflate)
        if self._wait_for_storage():
            return  # storage_caught_up carries on
        self._feed(*unparsed.popleft())
        if unparsed and self.stream is not None:
            self._next_slice = self.clock.callLater(0, self._parse_next_slice)
        elif self._unparsed is unparsed:
            self._unparsed = None

    def _parse_the_rest(self) -> None:
        """The connection is gone: what it sent before is still handled (RFC 6120 §10.1)."""
        if self._next_slice is not None and self._next_slice.active():
            self._next_slice.cancel()
        self._next_slice = None
        unparsed = self._unparsed
        while unparsed and self.stream is not None:
            if self._inflater is not None and (self._resume_reading is not None
                                               or self._reading_held & HELD_BY_STORAGE):
                break  # (held for its rate or the storage) what it inflates to is dropped, not parsed at once
            self._feed(*unparsed.popleft())
        self._unparsed = None

    # Shaping what the peer sends ----------------------------------------------

    def _charge(self, size: int) -> None:
        """Take ``size`` bytes from the bucket; when it is empty, stop reading
        until the rate has refilled it (ejabberd's shapers, Prosody's limits)."""
        rate = self.shaping.rate
        if not rate:
            return
        now = self.clock.seconds()
        if self._refilled is not None:
            self._tokens = min(float(self.shaping.burst), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        self._tokens -= size
        if self._tokens < 0 and self._resume_reading is None and self.transport is not None:
            self.hold_reading(HELD_BY_RATE)
            self._resume_reading = self.clock.callLater(-self._tokens / rate, self._read_again)

    def _read_again(self) -> None:
        self._resume_reading = None
        self.release_reading(HELD_BY_RATE)
        if self.transport is not None and self.stream is not None:
            if self._unparsed and self._next_slice is None:
                self._parse_next_slice()  # compressed data that waited for the rate

    # Holding reading: the shaper's reason and the storage's ------------------------

    def hold_reading(self, reason: int) -> None:
        """Stop reading the socket for ``reason`` (a HELD_BY_* flag)."""
        held = self._reading_held
        self._reading_held = held | reason
        if not held and self.transport is not None:
            self.transport.pauseProducing()

    def release_reading(self, reason: int) -> None:
        """``reason`` holds no more: the socket is read again unless another one does."""
        held = self._reading_held
        if not held & reason:
            return
        self._reading_held = held = held & ~reason
        if not held and self.transport is not None and self.stream is not None:
            self.transport.resumeProducing()

    def _wait_for_storage(self) -> bool:
        """Whether what was read must wait for the storage writer to catch up
        (``Backpressure.holding``); if so, this stream stops reading until then."""
        backpressure = self.backpressure
        if backpressure is None or not backpressure.holding:
            return False
        backpressure.pause(self)
        return True

    def storage_caught_up(self) -> None:
        """Called by ``Backpressure`` in its turn: read again (unless over its
        rate), and parse a slice of what waited now, the rest as usual."""
        self.release_reading(HELD_BY_STORAGE)
        if self._unparsed and self._next_slice is None and self.stream is not None:
            self._parse_next_slice()

    # Bounded output (IPushProducer, for our transport) -----------------------------

    def pauseProducing(self) -> None:
        self._output_blocked = True

    def resumeProducing(self) -> None:
        self._output_blocked = False
        self._queued_output = 0

    def stopProducing(self) -> None:
        self._producing = False

    def _release_transport(self) -> None:
        """Let a closing transport close: with a paused producer registered it
        would wait for that producer instead."""
        if self._producing and self.transport is not None:
            self._producing = False
            self.transport.unregisterProducer()

    def _inflate(self, inflater: Any, data: bytes) -> None:
        # Inflate in bounded pieces, checking the stanza limit in between, so
        # a compression bomb cannot grow memory past one stanza.
        # zlib may hold output back after consuming all input (a long match cut
        # at the chunk size): keep asking until it gives nothing more.
        # What it inflates to is charged to shaping as it is parsed; past the
        # rate, the rest of the input waits (16 KB inflate to 16 MB: a read of
        # tiny stanzas held the reactor for seconds) and _read_again goes on.
        try:
            while (stream := self.stream) is not None:
                chunk = inflater.decompress(data, INFLATE_CHUNK)
                data = inflater.unconsumed_tail
                if not chunk and not data:
                    break
                if chunk:
                    self._parse(stream, chunk)
                    if self.stream is not None and (data or len(chunk) == INFLATE_CHUNK) \
                            and (self._resume_reading is not None or self._wait_for_storage()):
                        if self._unparsed is None:
                            self._unparsed = deque()
                        self._unparsed.appendleft((data, False))
                        return
        except zlib.error:
            self.fail("bad-format", "invalid zlib data")

    def _parse(self, stream: Any, data: bytes, charged: bool = False) -> None:
        if not charged:
            self._charge(len(data))
        size = self._current_limits.stanza_size
        self.live_parser(stream)
        self._fed += len(data)
        try:
            if self.rawDataInFn:
                self.rawDataInFn(data)
            stream.parse(data)
            if self._quiet_call is None and self.stream is stream:
                self._quiet_call = self.clock.callLater(idle_parser.QUIET_SECONDS, self._free_parser)
        except _Stopped:
            pass  # failed meanwhile: the stream error is out, the rest is not read
        except StanzaTooLarge:
            self.fail("policy-violation", f"stanza larger than {size} bytes")
        except StanzaTooComplex as exc:
            self.fail("policy-violation", str(exc))
        except UnsafeNamespace:
            self.fail("bad-format", "a namespace name holds a quote, <, >, & or a control character")
        except RestrictedXML:
            self.fail("restricted-xml", "DTDs, entities, comments and processing instructions are not allowed")
        except domish.ParserError as exc:
            message = str(exc)
            if "Maximum" in message:
                self.fail("policy-violation", f"stanza larger than {size} bytes")
            else:
                self.fail("not-well-formed", message)
        finally:
            if self.stream is not stream:
                _dismantle(stream)  # restarted (SASL, STARTTLS, compression) or failed: done with

    def _free_parser(self) -> None:
        """Drop the parser if the stream is between stanzas with nothing held
        (expat has reported every byte it was fed); see ``idle_parser``."""
        call, self._quiet_call = self._quiet_call, None
        if call is not None and call.active():  # called before its time
            call.cancel()
        stream = self.stream
        if stream is not None and self.transport is not None:
            connection = idle_tls.tls_connection(self.transport)
            if connection is not None:
                idle_tls.release_buffers(connection)
        if (stream is None or stream.parser is None or self._parser_header is None
                or not stream.documentStarted or stream.currElem is not None or self._depth
                or stream.parser.CurrentByteIndex != self._fed):
            return
        stream.parser = None
        self.__dict__.pop("_plans", None)  # the dispatch plans too (remade at the next stanza)
        # CPython grew this stream's __dict__ to 128 slots when it passed 30
        # attributes; a copy is sized for what it holds (64 slots, 0.8 KiB less).
        attributes = vars(self)
        if len(attributes) <= COMPACT_DICT:
            self.__dict__ = dict(attributes)

    def live_parser(self, stream: Any) -> Any:
        """``stream``'s expat parser, renewed first if it was freed while idle."""
        if stream.parser is None:
            assert self._parser_header is not None
            stream.parser = idle_parser.fresh_parser(self._parser_header)
            self._install_parser_handlers(stream, stream.parser)
            self._fed = len(self._parser_header)
        return stream.parser

    def fail(self, condition: str, text: str | None = None) -> None:
        """Send a stream error and close (RFC 6120 §4.9)."""
        if self.transport is None:
            return
        self.stop_coalescing()
        log.msg(f"stream error {condition} to {self.transport.getPeer()}: {text or ''}")
        if not self._headerSent and self.namespace in (None, "", "invalid"):  # (Twisted's default)
            self.namespace = "jabber:client"  # RFC 6120 §4.9.1.2: the header we owe says the usual
        try:
            self.sendStreamError(error.StreamError(condition, text))
        finally:
            self.stream = None  # parse nothing more from this peer

    def sendStreamError(self, streamError):
        if self._closed:
            return
        self._release_transport()
        super().sendStreamError(streamError)
        self._closed = True

    def onDocumentEnd(self):
        """The peer closed its stream: close ours too (RFC 6120 §4.4), then the connection."""
        self.stop_coalescing()  # what we queued goes before our </stream:stream>
        self._release_transport()
        if self._headerSent and self.transport is not None and not self._closed:
            self.sendFooter()
        self._closed = True
        super().onDocumentEnd()

    def start_compression(self) -> None:
        """Switch both directions to zlib (XEP-0138 §3), then expect a new header."""
        self.transport = _CompressingTransport(self.transport)
        self._inflater = zlib.decompressobj()
        self.compressed = True
        self.reset()

    def serialize(self, element: Any) -> str:
        """An element as ``send`` writes it on this stream."""
        return element.toXml(prefixes=self.prefixes, defaultUri=self.namespace,
                             prefixesInScope=list(self.prefixes.values()))

    def send_header(self, features: str) -> None:
        """Our stream header and the features after it, in one write (one
        segment, one read for the client). Twisted builds and serializes an
        element for the header; for the usual client stream it is formatted
        directly."""
        if self.prefixes != {NS_STREAMS: "stream"} or self.otherEntity or self.initiating \
                or not self.thisEntity or self.version < (1, 0):
            self.sendHeader()
            self.send(features)
            return
        opening = _opening(self.namespace, self.thisEntity.userhost())
        sid = self.sid
        sid = "" if not sid else f' id="{sid}"' if sid.isalnum() else f" id={quoteattr(sid)}"
        self.send(f"{opening}{sid} version='%d.%d'>" % self.version + features)
        self._headerSent = True

    def send(self, obj) -> None:
        if self.transport is None or self._closed:
            return  # nothing after </stream:stream> (an answer that was still being worked out)
        if type(obj) is str:  # (most output: serialized once per event, issue 13)
            obj = obj.encode("utf-8")
        elif domish.IElement.providedBy(obj):
            obj = self.serialize(obj).encode("utf-8")  # as XmlStream.send would, to count it
        elif isinstance(obj, str):
            obj = obj.encode("utf-8")
        if self._output_blocked:
            self._queued_output += len(obj)
            if self._queued_output > self.shaping.max_output:
                return self._drop_reader()
        if self.rawDataOutFn:
            self.rawDataOutFn(obj)
        if not self.coalesce:
            write_now(self.transport, obj)  # negotiation: no turn to wait for
            return
        if self._pending is None:
            self._pending = [obj]
            _flush_later(self)
        else:
            self._pending.append(obj)

    def flush(self) -> None:
        """Write what this turn's ``send`` calls queued, in pieces of at most one
        TLS record: OpenSSL's memory BIO keeps the capacity of the largest write
        it ever held, for as long as the session lives."""
        pending, self._pending = self._pending, None
        if not pending or self.transport is None:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        if len(data) <= WRITE_CHUNK:
            write_now(self.transport, data)
            return
        view = memoryview(data)
        for start in range(0, len(data), WRITE_CHUNK):
            write_now(self.transport, bytes(view[start:start + WRITE_CHUNK]))

    def stop_coalescing(self) -> None:
        """Flush, and write directly from now on (closing, or a transport switch)."""
        self.coalesce = False
        self.flush()

    def _drop_reader(self) -> None:
        """The peer does not read what we write: drop it rather than buffer without end."""
        transport = self.transport
        assert transport is not None  # send() returned early without one
        log.msg(f"disconnecting {transport.getPeer()}: more than {self.shaping.max_output} "
                "bytes of output unread")
        self._release_transport()
        self._pending = None
        self.stream, self._closed = None, True
        transport.abortConnection()


def _dismantle(stream: Any) -> None:
    """Drop a finished element stream's parser: the parser's handlers refer to
    the stream, so the two were a cycle only the garbage collector frees."""
    if stream is not None:
        stream.parser = None


@functools.lru_cache(maxsize=64)  # (bounded: hosts of servers long gone, in tests)
def _opening(namespace: str, host: str) -> str:
    """The start of our stream header up to its id (quoted once per host, not per stream)."""
    return f"<stream:stream xmlns:stream='{NS_STREAMS}' xmlns={quoteattr(namespace)} from={quoteattr(host)}"


def _reactor():
    """The global reactor, imported when first needed (not at import: tests
    and ``twistd`` choose it first)."""
    global _the_reactor
    if _the_reactor is None:
        from twisted.internet import reactor

        _the_reactor = reactor
    return _the_reactor


_the_reactor: Any = None


def write_now(transport, data: bytes) -> None:
    """``transport.write``, but on plain TCP with nothing queued the socket is
    tried at once: Twisted would register for writability, wait for the next
    poll and unregister again (two ``epoll_ctl`` and a reactor turn per write,
    issue 13). What the socket does not take goes the usual way."""
    if (type(transport) is tcp.Server and not transport.TLS and transport.connected
            and not transport.disconnecting and not getattr(transport, "_writeDisconnected", True)
            and not transport._tempDataBuffer and len(transport.dataBuffer) == transport.offset):
        try:
            sent = transport.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # (the reactor's own write meets the error and closes as usual)
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


# Every stream with output queued and not yet written: a stream's ``send``
# queues, and the queue is written in one write per stream (a room message
# queues output on fifty streams; each gets one write, not one per stanza).
_to_flush: list = []
# How deep we are in ``dataReceived`` calls (nested: an in-memory transport's
# write is the other side's read). Output queued while reading leaves once the
# read is handled: a one-to-one message read in a reactor turn with twenty-four
# others is then written at once, not after the other twenty-four (issue 13:
# half the median latency at 5,000 msgs/s). Output queued anywhere else (a
# commit's results, a timer) leaves at the end of the turn, by one delayed call.
_reading = 0


def as_one_read(handle: Callable[..., object], *args: Any) -> None:
    """``handle(*args)`` as one read from a peer: what it causes (a delivery,
    an answer) leaves once it returns, not at the end of the reactor turn
    (``_flush_later``). ``ServerStream.dataReceived``, and the WebSocket
    connection's read (its messages reach their stream another way)."""
    global _reading
    _reading += 1
    try:
        handle(*args)
    finally:
        _reading -= 1
        if not _reading and _to_flush:
            _flush_all()


def _flush_later(stream) -> None:
    if not _to_flush and not _reading:
        _reactor().callLater(0, _flush_all)
    _to_flush.append(stream)


def _flush_all() -> None:
    streams = _to_flush[:]
    del _to_flush[:]
    for stream in streams:
        try:
            stream.flush()
        except Exception:  # one broken transport must not keep the others' output
            log.err(None, "flushing a stream's output failed")
