"""Numbers for operators: Prometheus metrics, served over HTTP with ``--metrics-port``.

Counters are module-level and always counted (an increment of a pre-bound
child is a lock and an add; no per-stanza label lookups); the endpoint is off
unless configured and binds to loopback unless told otherwise. Values that
already exist as state (sessions, queues) are read when scraped, on the
reactor thread, so nothing has to keep them in step.
"""

from __future__ import annotations

import time
from bisect import bisect_left

from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.application import internet, service
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web import resource, server
from zope.interface import implementer

from xep207 import logs
from xep207.storage.interface import IStorage, StorageUnavailable

KINDS = ("message", "presence", "iq")
OFFLINE_REFRESH = 30.0  # seconds between counts of waiting offline messages



class _StanzaCounts:
    """Stanzas to and from client sessions, by kind: plain integers bumped on
    the reactor thread (a prometheus ``Counter`` takes a lock per increment,
    twice per message), read when scraped."""

    def __init__(self) -> None:
        self.received = dict.fromkeys((*KINDS, "other"), 0)
        self.sent = dict.fromkeys((*KINDS, "other"), 0)

    def collect(self):
        for name, doc, counts in (
                ("xep207_stanzas_received", "Stanzas received from client sessions, by kind.", self.received),
                ("xep207_stanzas_sent", "Stanzas sent to client sessions, by kind.", self.sent)):
            family = CounterMetricFamily(name, doc, labels=["kind"])
            for kind, count in counts.items():
                family.add_metric([kind], count)
            yield family


STANZA_COUNTS = _StanzaCounts()
REGISTRY.register(STANZA_COUNTS)
# The counts themselves: the client stream bumps them inline (a call less per stanza).
RECEIVED, SENT = STANZA_COUNTS.received, STANZA_COUNTS.sent
_RECEIVED, _SENT = RECEIVED, SENT
# Serialized stanzas start with their name: '<m', '<p', '<i'.
KIND_BY_INITIAL = _KIND_BY_INITIAL = {kind[0]: kind for kind in KINDS}

LOGINS = Counter("xep207_logins", "Successful SASL authentications.")
AUTH_FAILURES = Counter("xep207_auth_failures", "Failed SASL authentications, by RFC 6120 condition.",
                        ["condition"])


class _Timings:
    """A histogram by storage operation, exposed as a prometheus ``Histogram``
    with the label ``operation`` is (same samples, same text), but kept as
    plain numbers bumped on the reactor thread: ``Histogram.observe`` takes
    two locks and four Python calls, and one runs for every message stored."""

    name = "xep207_storage_operation_seconds"
    documentation = "Time from a storage call to its answer (queueing included)."

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self._le = [floatToGoString(b) for b in (*self.bounds, float("inf"))]
        # operation -> [count per bucket (the last: above every bound)..., sum]; and when made
        self.counts: dict[str, list[float]] = {}
        self._created: dict[str, float] = {}

    def labels(self, operation: str) -> list[float]:
        """The numbers of one operation (``observe`` adds to them)."""
        counts = self.counts.get(operation)
        if counts is None:
            counts = self.counts[operation] = [0] * (len(self.bounds) + 1) + [0.0]
            self._created[operation] = time.time()
        return counts

    def observe(self, counts: list[float], seconds: float) -> None:
        counts[bisect_left(self.bounds, seconds)] += 1  # the first bucket whose bound is >= seconds
        counts[-1] += seconds

    def collect(self):
        family = Metric(self.name, self.documentation, "histogram")
        for operation, counts in list(self.counts.items()):
            labels = {"operation": operation}
            total = 0.0
            for le, count in zip(self._le, counts):
                total += count
                family.add_sample(self.name + "_bucket", {"le": le, **labels}, total)
            family.add_sample(self.name + "_count", labels, total)
            family.add_sample(self.name + "_sum", labels, counts[-1])
            family.add_sample(self.name + "_created", labels, self._created[operation])
        yield family


STORAGE_SECONDS = _Timings(buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
REGISTRY.register(STORAGE_SECONDS)
STORAGE_FAILURES = Counter("xep207_storage_failures", "Storage operations that failed, by operation.",
                           ["operation"])


def received(stanza) -> None:
    """A stanza from a client session."""
    name = stanza.name
    _RECEIVED[name if name in _RECEIVED else "other"] += 1


def sent(stanza) -> None:
    """A stanza (an Element or serialized text) to a client session."""
    if isinstance(stanza, str):
        _SENT[_KIND_BY_INITIAL.get(stanza[1:2], "other")] += 1
    else:
        name = stanza.name
        _SENT[name if name in _SENT else "other"] += 1


# Storage ----------------------------------------------------------------------------

_TIMED = tuple(name for name in IStorage.names() if name not in ("url", "start", "stop"))


@implementer(IStorage)
class TimedStorage:
    """Measures every storage operation of the wrapped backend, and remembers
    whether the last one answered found the database unusable (``unavailable``:
    the storage cache then sends logins to the database, which refuses them
    as it refuses everything else, rather than admit sessions from memory)."""

    unavailable = False

    def __init__(self, backend):
        self.backend = backend
        self.url = backend.url
        for name in _TIMED:
            setattr(self, name, self._timed(getattr(backend, name), STORAGE_SECONDS.labels(name),
                                            STORAGE_FAILURES.labels(name), self))

    def __getattr__(self, name):
        return getattr(self.backend, name)

    @staticmethod
    def _timed(method, counts, failures, health):
        bounds, clock = STORAGE_SECONDS.bounds, time.perf_counter

        def done(result, started):
            seconds = clock() - started
            counts[bisect_left(bounds, seconds)] += 1  # (STORAGE_SECONDS.observe, without the call)
            counts[-1] += seconds
            if isinstance(result, Failure):
                failures.inc()
                health.unavailable = result.check(StorageUnavailable) is not None
            elif health.unavailable:
                health.unavailable = False
            return result

        def timed(*args, **kwargs):
            started = clock()
            d = method(*args, **kwargs)
            if d.called and not isinstance(d.result, (Failure, defer.Deferred)):
                seconds = clock() - started  # answered at once (memory:, a cache)
                counts[bisect_left(bounds, seconds)] += 1
                counts[-1] += seconds
                return d
            return d.addBoth(done, started)

        return timed


# State read at scrape time ------------------------------------------------------------

class ServerCollector:
    """Sessions and queue depths of one running server."""

    def __init__(self, server):
        self.server = server
        self.offline: tuple[int, int] | None = None

    def collect(self):
        router = self.server.router
        sessions = GaugeMetricFamily("xep207_sessions", "Bound client sessions.")
        sessions.add_metric([], sum(len(resources) for resources in router.sessions.values()))
        yield sessions
        accounts = GaugeMetricFamily("xep207_online_accounts", "Accounts with at least one session.")
        accounts.add_metric([], sum(1 for resources in router.sessions.values() if resources))
        yield accounts
        queues = GaugeMetricFamily("xep207_queue_depth", "Work waiting or under way, by queue.",
                                   labels=["queue"])
        queues.add_metric(["routing"], len(router.in_flight))
        queues.add_metric(["groupchat"], len(self.server.groupchat.in_flight))
        depth = getattr(self.server.storage_backend, "queue_depth", None)
        if depth is not None:
            queues.add_metric(["storage"], depth())
        yield queues
        backpressure = getattr(self.server, "backpressure", None)  # (xep207/server/backpressure.py)
        if backpressure is not None:
            holding = GaugeMetricFamily("xep207_backpressure_holding",
                                        "1 while the storage writer is behind: client streams stop reading.")
            holding.add_metric([], int(backpressure.holding))
            yield holding
            paused = GaugeMetricFamily("xep207_backpressure_paused_streams",
                                       "Client streams not read until the storage writer catches up.")
            paused.add_metric([], len(backpressure.paused))
            yield paused
            pauses = CounterMetricFamily("xep207_backpressure_pauses",
                                         "Times the storage writer fell behind and client streams stopped reading.")
            pauses.add_metric([], backpressure.pauses)
            yield pauses
        if self.offline is not None:
            conversations, waiting = self.offline
            gauge = GaugeMetricFamily("xep207_offline_conversations",
                                      "One-to-one conversations with messages waiting for an offline "
                                      f"recipient (refreshed every {OFFLINE_REFRESH:g} s).")
            gauge.add_metric([], conversations)
            yield gauge
            gauge = GaugeMetricFamily("xep207_offline_accounts",
                                      "Accounts with messages waiting for their next login "
                                      f"(refreshed every {OFFLINE_REFRESH:g} s).")
            gauge.add_metric([], waiting)
            yield gauge

    async def refresh_offline(self) -> None:
        """Count waiting conversations (a query, so periodically, not per scrape)."""
        from xep207.legacy.chat import OFFLINE_MARK

        count = getattr(self.server.storage, "count_subscriptions_with_option", None)
        if count is None:
            return  # a backend without it: no such metric
        try:
            self.offline = await count(self.server.chat.pubsub_domain, OFFLINE_MARK)
        except Exception:
            logs.failure(Failure(), "counting offline messages for metrics failed")


class _Metrics(resource.Resource):
    isLeaf = True

    def __init__(self, registries):
        super().__init__()
        self.registries = registries

    def render_GET(self, request):
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return b"".join(generate_latest(registry) for registry in self.registries)


class MetricsService(service.MultiService):
    """The HTTP endpoint (``/metrics``; any path answers) and this server's collector."""

    def __init__(self, port: int, interface: str, xmpp_server=None):
        super().__init__()
        self.collector_registry = CollectorRegistry(auto_describe=False)
        if xmpp_server is not None:
            self.collector = collector = ServerCollector(xmpp_server)
            self.collector_registry.register(collector)
            refresh = internet.TimerService(OFFLINE_REFRESH, lambda: defer.ensureDeferred(
                collector.refresh_offline()))
            refresh.setServiceParent(self)
        factory = _site(_Metrics([REGISTRY, self.collector_registry]))
        self.listener = internet.TCPServer(port, factory, interface=interface)
        self.listener.setServiceParent(self)

    @property
    def port(self) -> int:
        listening = self.listener._port
        if listening is None:
            raise RuntimeError("the metrics endpoint is not listening (service not started)")
        return listening.getHost().port


class _QuietSite(server.Site):
    noisy = False

    def log(self, request) -> None:
        """Scrapes come every few seconds: not worth a log line each."""


def _site(root) -> server.Site:
    return _QuietSite(root)
