"""A receiving XML stream that refuses what RFC 6120 says a server must refuse.

On top of Twisted's ``XmlStream``: restricted XML (no DTD, entity declaration,
comment or processing instruction — so an XML bomb never expands), a stanza
size limit (``policy-violation``), ``not-well-formed`` reported as a stream
error before closing, and XEP-0138 zlib compression with bounded inflation.
"""

from __future__ import annotations

import zlib

from twisted.python import log
from twisted.words.protocols.jabber import error, xmlstream
from twisted.words.xish import domish

NS_STREAMS = "http://etherx.jabber.org/streams"
INFLATE_CHUNK = 16 * 1024
WRITE_CHUNK = 16 * 1024  # the largest TLS record's plaintext


class RestrictedXML(Exception):
    """The peer sent XML that RFC 6120 §11.1 forbids on a stream."""


class StanzaTooLarge(Exception):
    """A complete stanza larger than the configured limit."""


def _refuse(*_):
    raise RestrictedXML()


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


class ServerStream(xmlstream.XmlStream):
    """The receiving side of a client (or component) stream."""

    max_stanza_size = 256 * 1024
    # Once negotiation is over (no transport switch can follow), everything sent
    # in one reactor turn leaves in one write: one TLS record, one zlib flush,
    # one trip through the transport instead of one per stanza.
    coalesce = False
    _pending: list | None = None

    def __init__(self, authenticator, max_stanza_size: int | None = None):
        super().__init__(authenticator)
        if max_stanza_size is not None:
            self.max_stanza_size = max_stanza_size
        self._inflater = None
        self.compressed = False

    def _initializeStream(self):
        super()._initializeStream()
        stream = self.stream
        # Twisted's own cap catches a stanza that never ends (bytes since the
        # last complete one); the byte offsets below catch a complete stanza
        # that arrived within one read.
        stream.maxStanzaSize = self.max_stanza_size
        stream.ElementEvent = self._on_complete_stanza
        parser = stream.parser
        start_element = parser.StartElementHandler
        self._stanza_start = 0

        def on_start(name, attributes):
            if stream.documentStarted and stream.currElem is None:
                self._stanza_start = parser.CurrentByteIndex
            start_element(name, attributes)

        parser.StartElementHandler = on_start
        parser.StartDoctypeDeclHandler = _refuse
        parser.EntityDeclHandler = _refuse
        parser.CommentHandler = _refuse
        parser.ProcessingInstructionHandler = _refuse
        parser.UnparsedEntityDeclHandler = _refuse
        parser.NotationDeclHandler = _refuse

    def _on_complete_stanza(self, element) -> None:
        if self.stream.parser.CurrentByteIndex - self._stanza_start > self.max_stanza_size:
            raise StanzaTooLarge()
        self.onElement(element)

    def resetDispatchFn(self):
        self.stream.ElementEvent = self._on_complete_stanza

    def dataReceived(self, data: bytes) -> None:
        if self.stream is None:
            return
        if self._inflater is not None:
            self._inflate(data)
        else:
            self._parse(data)

    def _inflate(self, data: bytes) -> None:
        # Inflate in bounded pieces, checking the stanza limit in between, so
        # a compression bomb cannot grow memory past one stanza.
        try:
            while data and self.stream is not None:
                chunk = self._inflater.decompress(data, INFLATE_CHUNK)
                data = self._inflater.unconsumed_tail
                if chunk:
                    self._parse(chunk)
        except zlib.error:
            self.fail("bad-format", "invalid zlib data")

    def _parse(self, data: bytes) -> None:
        try:
            if self.rawDataInFn:
                self.rawDataInFn(data)
            self.stream.parse(data)
        except StanzaTooLarge:
            self.fail("policy-violation", f"stanza larger than {self.max_stanza_size} bytes")
        except RestrictedXML:
            self.fail("restricted-xml", "DTDs, entities, comments and processing instructions are not allowed")
        except domish.ParserError as exc:
            message = str(exc)
            if "Maximum" in message:
                self.fail("policy-violation", f"stanza larger than {self.max_stanza_size} bytes")
            else:
                self.fail("not-well-formed", message)

    def fail(self, condition: str, text: str | None = None) -> None:
        """Send a stream error and close (RFC 6120 §4.9)."""
        self.stop_coalescing()
        log.msg(f"stream error {condition} to {self.transport.getPeer()}: {text or ''}")
        if not self._headerSent:
            self.namespace = self.namespace or "jabber:client"
        try:
            self.sendStreamError(error.StreamError(condition, text))
        finally:
            self.stream = None  # parse nothing more from this peer

    def start_compression(self) -> None:
        """Switch both directions to zlib (XEP-0138 §3), then expect a new header."""
        self.transport = _CompressingTransport(self.transport)
        self._inflater = zlib.decompressobj()
        self.compressed = True
        self.reset()

    def send(self, obj) -> None:
        if self.transport is None:
            return
        if not self.coalesce:
            super().send(obj)
            return
        if not isinstance(obj, (str, bytes)):
            obj = obj.toXml()
        if isinstance(obj, str):
            obj = obj.encode("utf-8")
        if self.rawDataOutFn:
            self.rawDataOutFn(obj)
        if self._pending is None:
            from twisted.internet import reactor

            self._pending = [obj]
            reactor.callLater(0, self.flush)
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
            self.transport.write(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), WRITE_CHUNK):
            self.transport.write(bytes(view[start:start + WRITE_CHUNK]))

    def stop_coalescing(self) -> None:
        """Flush, and write directly from now on (closing, or a transport switch)."""
        self.coalesce = False
        self.flush()

    def onDocumentEnd(self):
        self.stop_coalescing()  # the peer closed its stream: what we queued goes before ours
        super().onDocumentEnd()
