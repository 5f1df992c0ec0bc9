"""Several xep207 processes serving one domain (``--cluster redis://…``).

PostgreSQL holds every node, as in one process; Redis holds who is
connected where (``registry``), carries stanzas and engine events between
processes (``routing``) and cache invalidations (``invalidation``). Without
``--cluster`` nothing here runs. See docs/cluster.md.
"""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer

from xep207.hooks import AVAILABILITY_CHANGED, SESSION_BOUND, SESSION_UNBOUND, STANZA
from xep207.startup import StartupError

from xep207.cluster.reuseport import ReusePortServer

__all__ = ["install", "ReusePortServer"]


class _ClusterService(service.Service):
    """Leaves the cluster on shutdown, after the sessions ended and before storage closes."""

    def __init__(self, cluster):
        self.cluster = cluster

    def stopService(self):
        super().stopService()
        return defer.ensureDeferred(self.cluster.stop())


def install(server, options):
    """Wire this process into the cluster named by ``options["cluster"]``;
    returns the ``Cluster``, or None in single-process mode."""
    url = options.get("cluster")
    if not url:
        return None
    try:
        import txredisapi  # noqa: F401
    except ImportError:
        raise StartupError("--cluster needs txredisapi: pip install 'xep207[cluster]'")
    from xep207.cluster.invalidation import Invalidation
    from xep207.cluster.link import RedisAddress
    from xep207.cluster.node import Cluster, default_node_name
    from xep207.cluster.rooms import RoomState

    if getattr(server.storage_backend, "single_writer", False) or server.storage.url.startswith("memory:"):
        raise StartupError(f"--cluster needs storage every process shares (postgresql://…), "
                           f"not {server.storage.url.split(':')[0]}")
    try:
        RedisAddress.parse(url)
    except ValueError as exc:
        raise StartupError(str(exc))
    cluster = Cluster(server, url, options.get("node-name") or default_node_name(),
                      float(options.get("cluster-timeout") or 15.0))
    server.cluster_invalidation = Invalidation(cluster)
    cluster.room_state = RoomState(cluster)
    server.chat.elsewhere = cluster.routing.handled_elsewhere
    server.router.directory = cluster.directory
    server.delivery.cluster = cluster
    server.hooks.add(SESSION_BOUND, cluster.session_bound)
    server.hooks.add(SESSION_UNBOUND, cluster.session_unbound)
    server.hooks.add(AVAILABILITY_CHANGED, cluster.availability_changed)
    server.hooks.add(STANZA, cluster.routing.room_stanza, priority=-1000)
    _ClusterService(cluster).setServiceParent(server.top)
    server.storage_service.ready.addCallback(lambda _: defer.ensureDeferred(cluster.start()))
    return cluster
