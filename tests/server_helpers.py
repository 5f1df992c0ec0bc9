"""An in-process server on a free port, and a raw-bytes client for it."""

from __future__ import annotations

import base64
import os
import sys

from twisted.internet import defer, protocol, reactor, utils
from twisted.trial import unittest

from peers import CLIENTS, temp_dir
from xep207.server import accounts
from xep207.server.tap import Server
from xep207.tap import Options

DOMAIN = "localhost"
PASSWORD = "wonderland"
STREAM_HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                 "xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>")


class RawClient(protocol.Protocol):
    """Bytes in, bytes out; waits on what the server says, never on time."""

    def __init__(self):
        self.received = b""
        self._cursor = 0
        self._waiters: list[tuple[bytes, defer.Deferred]] = []
        self.closed = defer.Deferred()

    def dataReceived(self, data):
        self.received += data
        self._check()

    def _check(self):
        for needle, d in list(self._waiters):
            index = self.received.find(needle, self._cursor)
            if index >= 0:
                self._waiters.remove((needle, d))
                self._cursor = index + len(needle)
                d.callback(self.received)

    def connectionLost(self, reason):
        for needle, d in self._waiters:
            if not d.called:
                d.errback(AssertionError(f"closed before {needle!r}; got {self.received[-600:]!r}"))
        self._waiters = []
        self.closed.callback(self.received)

    def expect(self, needle: str | bytes, timeout: float = 10) -> defer.Deferred:
        """Fires when ``needle`` shows up after the previous expectation."""
        if isinstance(needle, str):
            needle = needle.encode("utf-8")
        d = defer.Deferred()
        self._waiters.append((needle, d))
        self._check()
        return d.addTimeout(timeout, reactor)

    def send(self, data: str | bytes) -> None:
        self.transport.write(data.encode("utf-8") if isinstance(data, str) else data)

    def header(self, domain: str = DOMAIN) -> None:
        self.send(STREAM_HEADER.format(domain=domain))

    async def login(self, user: str, password: str = PASSWORD, resource: str = "raw") -> None:
        """Plain-TCP PLAIN login and bind (the server must allow it)."""
        self.header()
        await self.expect("</stream:features>")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        await self.expect("<success")
        self.header()
        await self.expect("</stream:features>")
        self.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource}</resource></bind></iq>")
        await self.expect("</bind>")


class ServerTestCase(unittest.TestCase):
    """Starts a server with memory storage on free loopback ports."""

    server_args: tuple[str, ...] = ()
    users = ("alice", "bob")

    async def start_server(self, *args: str) -> Server:
        self.data_dir = temp_dir(self)
        options = Options()
        options.parseOptions(["--domain", DOMAIN, "--data-dir", self.data_dir, "--storage", "memory:",
                              "--c2s-port", "0", "--c2s-interfaces", "127.0.0.1",
                              *self.server_args, *args])
        self.server = Server(options)
        self.server.top.startService()
        self.addCleanup(self.server.top.stopService)
        await self.server.storage_service.ready
        self.port = self.server.listeners[0]._port.getHost().port
        for user in self.users:
            await accounts.create_account(self.server.storage, self.server.engine_defaults,
                                          f"{user}@{DOMAIN}", PASSWORD)
        return self.server

    async def connect(self) -> RawClient:
        client = await protocol.ClientCreator(reactor, RawClient).connectTCP("127.0.0.1", self.port)
        self.addCleanup(self._close, client)
        return client

    @staticmethod
    def _close(client):
        if client.transport.connected:
            client.transport.abortConnection()
            return client.closed

    async def run_client(self, script: str, *args, timeout: float = 90) -> dict:
        """A slixmpp scenario in a child process, while this reactor serves it."""
        import json

        out, err, code = await utils.getProcessOutputAndValue(
            sys.executable, [os.path.join(CLIENTS, script), *map(str, args)], env=os.environ)
        if code != 0:
            raise AssertionError(f"{script} exited {code}:\n{out.decode()}\n{err.decode()[-4000:]}")
        return json.loads(out.decode().strip().splitlines()[-1])
