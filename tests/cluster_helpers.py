"""The end-to-end suites again, against three processes sharing PostgreSQL
and Redis: ``ClusterMixin`` starts the cluster in place of the one server,
and ``connect`` hands each new client the next process, so that any two
clients of a test sit on different processes (up to three clients)."""

from __future__ import annotations

import os
import uuid

from twisted.internet import protocol, reactor

from tests.server_helpers import RawClient
from xep207.server.tap import Server
from xep207.tap import Options

PROCESSES = 3
# Seconds of missed heartbeats before a process is dead: these suites test no failure,
# and a loaded machine must not make three healthy processes reap each other.
TIMEOUT = 10.0


class ClusterMixin:
    """Mix in before a ``ServerTestCase`` subclass."""

    storage = "postgresql"
    processes = PROCESSES

    async def _launch(self) -> None:
        from tests.redis_peer import shared_redis

        if not hasattr(self, "redis_url"):
            self.redis_url = shared_redis().new_url()
            self.node_names = [f"n{i}-{uuid.uuid4().hex[:6]}" for i in range(self.processes)]
        self.servers = []
        for name in self.node_names:
            data_dir = os.path.join(self.data_dir, name)  # a data dir is one process's (locked, admin.sock)
            os.makedirs(data_dir, exist_ok=True)
            options = Options()
            options.parseOptions([*self.server_argv, "--cluster", self.redis_url, "--node-name", name,
                                  "--cluster-timeout", str(TIMEOUT), "--data-dir", data_dir])
            server = Server(options)
            server.top.startService()
            self.addCleanup(server.top.stopService)
            await server.storage_service.ready  # storage open, the cluster joined, listening
            self.servers.append(server)
        self.server = self.servers[0]
        self.ports = [s.listeners[0]._port.getHost().port for s in self.servers]
        self.port = self.ports[0]
        self._next = 0
        if os.environ.get("CLUSTER_DEBUG"):
            self.addCleanup(lambda: print("STATS", self.id(), [dict(s.cluster.stats) for s in self.servers]))

    async def restart_server(self):
        for server in reversed(self.servers):
            await server.top.stopService()
        await self._launch()
        return self.server

    async def connect(self, source: str | None = None) -> RawClient:
        port = self.ports[self._next % len(self.ports)]
        self._next += 1
        bind = (source, 0) if source else None
        client = await protocol.ClientCreator(reactor, RawClient).connectTCP("127.0.0.1", port, bindAddress=bind)
        self.addCleanup(self._close, client)
        return client
