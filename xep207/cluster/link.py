"""The process's two connections to Redis: one for commands, one subscribed
to the cluster's channels.

txredisapi speaks the protocol; reconnection is Twisted's ``ClientService``
(exponential back-off). While Redis is unreachable every command fails at
once with ``ClusterUnavailable`` — callers turn that into a clear stanza
error — rather than queueing behind a connection that may never come back;
each reconnection is reported so the cluster can re-register and resync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlparse

import txredisapi
from twisted.application.internet import ClientService
from twisted.internet import defer, endpoints, protocol
from twisted.python import log


class ClusterUnavailable(Exception):
    """Redis cannot be reached right now."""


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int
    db: int
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> "RedisAddress":
        """``redis://[:password@]host[:port][/db]``."""
        parsed = urlparse(url)
        if parsed.scheme != "redis" or not parsed.hostname:
            raise ValueError(f"not a redis://host:port/db URL: {url!r}")
        path = parsed.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"the database of {url!r} is a number")
        return cls(parsed.hostname, parsed.port or 6379, int(path or 0), parsed.password or None)


class _Commands(txredisapi.RedisProtocol):
    pass


class _Subscriber(txredisapi.SubscriberProtocol):
    on_message: Callable[[str, str], None] = staticmethod(lambda channel, message: None)

    def messageReceived(self, pattern, channel, message):
        self.on_message(channel, message)


class _Factory(protocol.Factory):
    noisy = False

    def __init__(self, protocol_class, address: RedisAddress, reply_timeout: float, setup=None):
        self.protocol_class = protocol_class
        self.address = address
        self.reply_timeout = reply_timeout
        self.setup = setup

    def buildProtocol(self, addr):
        p = self.protocol_class(replyTimeout=self.reply_timeout, password=self.address.password,
                                dbid=self.address.db if self.protocol_class is _Commands else None,
                                convertNumbers=False)
        p.factory = self
        if self.setup is not None:
            self.setup(p)
        return p

    # txredisapi's protocol reports a failed AUTH/SELECT to its factory.
    def stopTrying(self):
        pass

    def connectionError(self, why):
        log.msg(f"cluster: redis refused the connection: {why}")

    isLazy = True


class RedisLink:
    """``on_message(channel, text)`` for every message on ``channels``;
    ``on_up()`` after each (re)connection of both connections, ``on_down()``
    when either is lost."""

    def __init__(self, url: str, channels: list[str], on_message: Callable[[str, str], None],
                 on_up: Callable[[], Any], on_down: Callable[[], Any], reply_timeout: float = 5.0,
                 reactor=None):
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.address = RedisAddress.parse(url)
        self.url = url
        self.channels = channels
        self.on_message = on_message
        self.on_up = on_up
        self.on_down = on_down
        self.reply_timeout = reply_timeout
        self.commands: _Commands | None = None
        self.subscriber: _Subscriber | None = None
        self._services: list[ClientService] = []

    @property
    def up(self) -> bool:
        return self.commands is not None and self.subscriber is not None

    def start(self) -> None:
        endpoint = endpoints.TCP4ClientEndpoint(self.reactor, self.address.host, self.address.port,
                                                timeout=self.reply_timeout)
        commands = ClientService(endpoint, _Factory(_Commands, self.address, self.reply_timeout),
                                 retryPolicy=_retry, prepareConnection=self._commands_ready,  # type: ignore[arg-type]
                                 clock=self.reactor)
        subscriber = ClientService(endpoint, _Factory(_Subscriber, self.address, 0, self._wire),
                                   retryPolicy=_retry, prepareConnection=self._subscriber_ready,  # type: ignore[arg-type]
                                   clock=self.reactor)
        self._services = [commands, subscriber]
        for service in self._services:
            service.startService()

    def stop(self) -> defer.Deferred:
        self._stopping = True
        return defer.DeferredList([defer.maybeDeferred(s.stopService) for s in self._services])

    def _wire(self, subscriber: _Subscriber) -> None:
        subscriber.on_message = self._received

    def _received(self, channel, message) -> None:
        try:
            self.on_message(channel, message)
        except Exception:
            log.err(None, f"cluster: a message on {channel} failed")

    async def _commands_ready(self, p: _Commands) -> None:
        await p.whenConnected()
        self.commands = p
        p.whenDisconnected().addCallback(self._lost, "commands")
        self._maybe_up()

    async def _subscriber_ready(self, p: _Subscriber) -> None:
        await p.whenConnected()
        await p.subscribe(self.channels)
        self.subscriber = p
        p.whenDisconnected().addCallback(self._lost, "subscriber")
        self._maybe_up()

    def _maybe_up(self) -> None:
        if self.up:
            log.msg(f"cluster: connected to {self.url}")
            d = defer.maybeDeferred(self.on_up)
            d.addErrback(log.err, "cluster: resync after connecting failed")

    def _lost(self, p, which: str) -> None:
        was_up = self.up
        if which == "commands" and self.commands is p:
            self.commands = None
        elif which == "subscriber" and self.subscriber is p:
            self.subscriber = None
        if was_up and not getattr(self, "_stopping", False):
            log.msg(f"cluster: lost the connection to {self.url}; reconnecting")
            self.on_down()

    def command(self, *args) -> defer.Deferred:
        """Run one Redis command; fails at once with ``ClusterUnavailable`` while
        Redis is unreachable, or after ``reply_timeout``."""
        p = self.commands
        if p is None or not p.connected:
            return defer.fail(ClusterUnavailable(f"redis at {self.url} is unreachable"))
        try:
            d = p.execute_command(*args)
        except txredisapi.ConnectionError as exc:
            return defer.fail(ClusterUnavailable(str(exc)))
        return d.addErrback(_unavailable)

    def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred:
        return self.command("EVAL", script, len(keys), *keys, *args)


def _unavailable(failure):
    if failure.check(txredisapi.ConnectionError):
        raise ClusterUnavailable(str(failure.value))
    return failure


def _retry(attempt: int) -> float:
    """Back off quickly to at most 2 s: a cluster wants its Redis back soon."""
    return min(0.1 * (2 ** min(attempt, 10)), 2.0)
