"""Service-tree pieces shared by both modes (component and full server)."""

from __future__ import annotations

import os

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.python import log
from twisted.words.protocols.jabber import xmlstream
from wokkel.ping import PingHandler
from wokkel.subprotocols import XMPPHandler

from xep207.metrics import TimedStorage
from xep207.discovery import DiscoHandler
from xep207.pubsub.engine import PubSubEngine
from xep207.pubsub.protocol import PubSubProtocol
from xep207.startup import DATA_DIR_MODE, ExclusiveLock, StartupError, create_private, fatal
from xep207.storage import open_storage
from xep207.storage.cache import with_cache


def prepare_sqlite(url: str) -> None:
    """For a server on SQLite: the file private (0600) and used by this server
    alone (a second server on it is refused; xep207ctl may still write)."""
    if not url.startswith("sqlite:"):
        return
    from xep207.storage.sqlite import _path_from_url

    path = os.path.abspath(_path_from_url(url)[0])
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, mode=DATA_DIR_MODE)
        except OSError as exc:
            raise StartupError(f"cannot create {directory} for the SQLite database: "
                               f"{exc.strerror or exc}") from None
    create_private(path)
    ExclusiveLock(path + ".lock", f"the SQLite database {path}")


class StorageService(service.Service):
    """Owns the storage backend: opens and migrates it on start, closes on stop.

    ``ready`` fires once the schema is in place; services that touch storage
    wait for it (see ``WhenReady``).
    """

    def __init__(self, url: str):
        self.backend = open_storage(url)
        self.storage = with_cache(TimedStorage(self.backend))
        self.ready: defer.Deferred[object] = defer.Deferred()  # fires with start()'s result

    def startService(self):
        super().startService()
        d = defer.maybeDeferred(self.storage.start)
        d.addCallbacks(self.ready.callback, self._failed)

    def _failed(self, failure):
        # WhenReady reports it: one fatal line, exit status 1.
        self.ready.errback(StartupError(f"cannot open storage {self.storage.url}: {failure.getErrorMessage()}"))

    def stopService(self):
        super().stopService()
        return defer.maybeDeferred(self.storage.stop)


class OrderedServices(service.MultiService):
    """Stops its children one after another, last started first, each
    waiting for the one before (MultiService stops them all at once, which
    would close storage under stanzas still being routed)."""

    def stopService(self):
        if not self.running:
            return defer.succeed(None)
        service.Service.stopService(self)

        async def stop_children():
            for child in reversed(list(self)):
                if child.running:  # after a failed start, some never started
                    await defer.maybeDeferred(child.stopService)

        return defer.ensureDeferred(stop_children())


class WhenReady(OrderedServices):
    """Starts its children only after ``ready`` has fired.

    That includes listening: twistd binds ports in ``privilegedStartService``,
    before storage is open and before the internal routes exist, so clients
    could connect into a half-started server. Here children bind in
    ``startService`` (xep207's ports are unprivileged by default).
    """

    def privilegedStartService(self):
        pass

    def __init__(self, ready: defer.Deferred):
        super().__init__()
        self._ready = ready

    def startService(self):
        service.Service.startService(self)
        self._ready.addCallback(self._start_children)
        self._ready.addErrback(self._failed)

    def _start_children(self, result):
        if self.running:
            for child in self:
                try:
                    child.startService()
                except CannotListenError as exc:
                    reason = getattr(exc.socketError, "strerror", None) or exc.socketError
                    raise StartupError(f"cannot listen on {exc.interface or '*'} port {exc.port}: {reason}")
        return result

    def _failed(self, failure):
        """Nothing may run half-started: a listener that could not bind, storage
        that did not open, a start-up clean-up that failed end the process."""
        if not failure.check(StartupError):
            log.err(failure, "start-up failed")
        fatal(failure.getErrorMessage() if failure.check(StartupError)
              else f"start-up failed: {failure.getErrorMessage()}")


def pubsub_handlers(engine: PubSubEngine) -> list:
    """The XMPP handlers of a pubsub service: the service itself, disco, ping.

    The same list is attached to an external server (component mode) or to
    the internal router; the protocol is also the engine's event sink there.
    """
    protocol = PubSubProtocol(engine)
    engine.sink = protocol
    return [protocol, DiscoHandler(), PingHandler()]


class ComponentStatus(XMPPHandler):
    """Logs when the component connection comes up and goes down; operators
    (and the end-to-end tests) watch for these lines."""

    def __init__(self, jid: str):
        super().__init__()
        self.jid = jid

    def connectionMade(self):
        self.xmlstream.addObserver(xmlstream.STREAM_ERROR_EVENT, self._stream_error)

    def connectionInitialized(self):
        log.msg(f"xep207 component {self.jid} online")

    def _stream_error(self, reason):
        condition = getattr(reason.value, "condition", "unknown")
        log.msg(f"xep207 component {self.jid}: stream error {condition}")
        if condition in ("not-authorized", "host-unknown", "conflict"):
            # A wrong secret or an unknown component name will not fix itself:
            # say so once and stop, rather than hammering the server.
            self.parent.factory.stopTrying()
            fatal(f"the server refused the component {self.jid} ({condition}); "
                  "check --jid and the secret. Not retrying.")

    def connectionLost(self, reason):
        log.msg(f"xep207 component {self.jid} offline: {reason.getErrorMessage()}; will reconnect")
