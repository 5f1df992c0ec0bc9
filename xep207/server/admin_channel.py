"""The local admin channel: ``xep207ctl`` talking to the running server.

A UNIX socket, ``DATA-DIR/admin.sock`` (0600 in the 0700 data dir, and the
peer's uid is checked too: only the server's own user, or root, is served),
speaking Twisted AMP. Every command ends in ``AccountControl``, so a deletion
made here is the same as an XEP-0077 ``<remove/>``: contacts and rooms are
told, sessions end.

Lists come in pages (an AMP value holds at most 64 KiB): the client asks again
with ``after`` set to the last entry it got, until a page comes back empty.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from typing import Iterable

from twisted.application import service
from twisted.internet import error as net_error
from twisted.internet import protocol
from twisted.internet.interfaces import IListeningPort
from twisted.protocols import amp
from twisted.python import log

from xep207.server.accounts import AccountError

SOCKET_NAME = "admin.sock"
PAGE_BYTES = 48 * 1024


def socket_path(data_dir: str) -> str:
    return os.path.join(os.path.abspath(data_dir), SOCKET_NAME)


class _Command(amp.Command):
    errors = {AccountError: b"ACCOUNT_ERROR"}


class AddUser(_Command):
    arguments = [(b"jid", amp.Unicode()), (b"password", amp.Unicode())]
    response = [(b"jid", amp.Unicode())]


class Passwd(_Command):
    arguments = [(b"jid", amp.Unicode()), (b"password", amp.Unicode())]


class DelUser(_Command):
    arguments = [(b"jid", amp.Unicode())]


class ListUsers(_Command):
    arguments = [(b"after", amp.Unicode(optional=True))]
    response = [(b"jids", amp.ListOf(amp.Unicode()))]


class Sessions(_Command):
    arguments = [(b"jid", amp.Unicode(optional=True)), (b"after", amp.Unicode(optional=True))]
    response = [(b"sessions", amp.AmpList([(b"jid", amp.Unicode()), (b"address", amp.Unicode()),
                                           (b"available", amp.Boolean())]))]


class Kick(_Command):
    arguments = [(b"jid", amp.Unicode())]
    response = [(b"ended", amp.Integer())]


def page(rows: Iterable, key, after: str | None) -> list:
    """The rows after ``after`` (by ``key``), as many as fit in one AMP value."""
    chosen: list = []
    size = 0
    for row in rows:
        name = key(row)
        if after is not None and name <= after:
            continue
        size += len(name.encode("utf-8")) + 64
        if size > PAGE_BYTES:
            break
        chosen.append(row)
    return chosen


class AdminProtocol(amp.AMP):
    def __init__(self, control):
        super().__init__()
        self.control = control

    def connectionMade(self):
        super().connectionMade()
        uid = _peer_uid(self.transport)
        if uid is not None and uid not in (os.getuid(), 0) and self.transport is not None:
            log.msg(f"admin socket: refused a client of uid {uid}")
            self.transport.loseConnection()

    @AddUser.responder
    async def add_user(self, jid, password):
        return {"jid": await self.control.add_user(jid, password)}

    @Passwd.responder
    async def passwd(self, jid, password):
        await self.control.change_password(jid, password)
        return {}

    @DelUser.responder
    async def deluser(self, jid):
        await self.control.delete_user(jid)
        return {}

    @ListUsers.responder
    async def list_users(self, after=None):
        return {"jids": page(await self.control.list_users(), lambda j: j, after)}

    @Sessions.responder
    def sessions(self, jid=None, after=None):
        rows = sorted(self.control.sessions(jid), key=lambda s: s.jid)
        return {"sessions": [{"jid": s.jid, "address": s.address, "available": s.available}
                             for s in page(rows, lambda s: s.jid, after)]}

    @Kick.responder
    def kick(self, jid):
        return {"ended": self.control.kick(jid)}


def _peer_uid(transport) -> int | None:
    """SO_PEERCRED: who is on the other end of the socket (Linux)."""
    handle = getattr(transport, "socket", None)
    option = getattr(socket, "SO_PEERCRED", None)
    if handle is None or option is None:
        return None
    try:
        _, uid, _ = struct.unpack("3i", handle.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    except OSError:
        return None
    return uid


class _AdminFactory(protocol.Factory):
    noisy = False

    def __init__(self, control):
        self.control = control

    def buildProtocol(self, addr):
        built = AdminProtocol(self.control)
        built.factory = self
        return built


class AdminChannel(service.Service):
    """Listens on the admin socket while the server runs."""

    def __init__(self, control, data_dir: str):
        self.control = control
        self.path = socket_path(data_dir)
        self.port: IListeningPort | None = None

    def startService(self):
        super().startService()
        from twisted.internet import reactor
        from twisted.internet.interfaces import IReactorUNIX

        from xep207.startup import StartupError, prepare_data_dir

        factory = _AdminFactory(self.control)
        try:
            prepare_data_dir(os.path.dirname(self.path))
            if os.path.exists(self.path) and stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)  # left by a server that died: the data dir lock says it is ours
            self.port = IReactorUNIX(reactor).listenUNIX(self.path, factory, mode=0o600)
            log.msg(f"admin socket for xep207ctl at {self.path}")
        except (OSError, StartupError, net_error.CannotListenError) as exc:
            log.msg(f"no admin socket at {self.path} ({exc}): xep207ctl cannot reach this server")

    def stopService(self):
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


def install(server, options) -> AdminChannel:
    """The admin socket, as one of the server's listeners (an embedding that
    drops the listeners, like the in-memory harness, drops it too)."""
    channel = AdminChannel(server.accounts, options["data-dir"])
    channel.setServiceParent(server.started)
    server.listeners.append(channel)
    return channel
