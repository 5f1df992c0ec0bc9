"""slixmpp, as our end-to-end tests use it: STARTTLS against a self-signed
certificate, and XEP-0138 zlib compression, which slixmpp itself lacks (this
test-side extension is how we drive the server's compression with a real client).
"""

from __future__ import annotations

import asyncio
import ssl
import zlib

import slixmpp
from slixmpp.stanza import StreamFeatures
from slixmpp.xmlstream import ElementBase, StanzaBase, register_stanza_plugin
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

NS_FEATURE = "http://jabber.org/features/compress"
NS_COMPRESS = "http://jabber.org/protocol/compress"


class CompressionFeature(ElementBase):
    name = "compression"
    namespace = NS_FEATURE
    plugin_attrib = "compression"
    interfaces = set()


class Compressed(StanzaBase):
    name = "compressed"
    namespace = NS_COMPRESS
    interfaces = set()


class Client(slixmpp.ClientXMPP):
    """A ClientXMPP that can negotiate XEP-0138 and accepts our test certificate."""

    def __init__(self, jid, password, *, compress=True, plugins=("xep_0030", "xep_0199")):
        super().__init__(jid, password)
        for plugin in plugins:
            self.register_plugin(plugin)
        self.enable_direct_tls = False
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.compressed = False
        self._inflater = None
        self._deflater = None
        self._compress_wanted = compress
        register_stanza_plugin(StreamFeatures, CompressionFeature)
        self.register_stanza(Compressed)
        self.register_handler(Callback("Compressed", MatchXPath(Compressed.tag_name()),
                                       self._on_compressed, instream=True))
        self.register_feature("compression", self._offer_compression, restart=True, order=9500)

    def _offer_compression(self, features):
        if not self._compress_wanted or self.compressed:
            return False
        self.send_raw(f"<compress xmlns='{NS_COMPRESS}'><method>zlib</method></compress>")
        return True

    def _on_compressed(self, stanza):
        self.compressed = True
        self._deflater = zlib.compressobj()
        self._inflater = zlib.decompressobj()
        self.init_parser()
        self.send_raw(self.stream_header)

    def data_received(self, data):
        if self._inflater is not None:
            data = self._inflater.decompress(data)
        super().data_received(data)

    def send_raw(self, data):
        if self._deflater is not None:
            if isinstance(data, str):
                data = data.encode("utf-8")
            data = self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
        super().send_raw(data)

    async def online(self, host, port, timeout=20, presence=True):
        started = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", lambda _: started.done() or started.set_result(True))
        self.add_event_handler("failed_auth", lambda _: started.done() or started.set_exception(
            RuntimeError("authentication failed")))
        self.connect(host, int(port))
        await asyncio.wait_for(started, timeout)
        if presence:
            self.send_presence()
        return self
