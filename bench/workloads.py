"""The comparison workloads: the same client traffic, from ``bench.common.Client``
and ``bench.common.Latencies``, against any XMPP server (xep207, Prosody, ejabberd).

Throughput workloads are closed loops bounded in time: each sender keeps a
window of messages incomplete (a fan-out message is complete once every copy
arrived), until ``seconds`` have passed; then the last ones drain. The figure
is deliveries over the time to the last delivery.
"""

from __future__ import annotations

import itertools
import re
import time

from twisted.internet import defer, reactor, task

from bench.common import DOMAIN, Latencies, connect, percentile, rss_kib  # noqa: F401 (connect: compare.py)

DRAIN_SECONDS = 30
IDLE_SECONDS = 2.0
_ids = itertools.count()


class Outcome(dict):
    """A workload's main ``value`` (with its ``unit``) and whatever else it measured."""


async def connect_all(server, users, concurrency: int = 50, **kwargs) -> list:
    """Log in ``users`` with SCRAM-SHA-1, as real clients do: with PLAIN, servers that
    store only SCRAM keys (all three) would run PBKDF2 on every login, and ejabberd
    keeps the garbage of that in each idle session's heap."""
    kwargs.setdefault("scram", "SCRAM-SHA-1")
    semaphore = defer.DeferredSemaphore(concurrency)
    return await defer.gatherResults([semaphore.run(
        lambda u=u: defer.ensureDeferred(connect(server.port, u, "r", **kwargs))) for u in users],
        consumeErrors=True)


def close_all(clients) -> None:
    for client in clients:
        client.transport.loseConnection()


def _quoted(name: bytes, value: bytes) -> re.Pattern:
    return re.compile(name + rb"=['\"]" + re.escape(value) + rb"['\"]")


def wait_for(client, pattern: re.Pattern) -> defer.Deferred:
    """Fires once ``pattern`` shows in the client's raw input (which still reaches
    the previous ``on_data``)."""
    d = defer.Deferred()
    previous = client.on_data
    state = {"tail": b""}

    def watch(data):
        if previous is not None:
            previous(data)
        window = state["tail"] + data
        state["tail"] = window[-200:]
        if pattern.search(window) and not d.called:
            client.on_data = previous
            d.callback(window)

    client.on_data = watch
    return d


async def iq(client, body: str, to: str = DOMAIN) -> bytes:
    """Send an IQ and wait for its answer (raw bytes around it)."""
    ident = f"q{next(_ids)}"
    d = wait_for(client, re.compile(rb"<iq[^>]*id=['\"]" + ident.encode() + rb"['\"][^>]*>"))
    client.send(f"<iq type='{'get' if 'ping' in body else 'set'}' id='{ident}' to='{to}'>{body}</iq>")
    return await d


def sync(clients) -> defer.Deferred:
    """A round trip on each client: everything sent before has been handled."""
    return defer.gatherResults([defer.ensureDeferred(iq(c, "<ping xmlns='urn:xmpp:ping'/>")) for c in clients])


def _ignore(data):
    return None


class Windowed:
    """Senders that keep ``window`` messages incomplete until a deadline."""

    def __init__(self, senders, window: int, copies: int, seconds: float):
        self.senders = senders  # callables send(key)
        self.window, self.copies, self.seconds = window, copies, seconds
        self.seq = itertools.count()
        self.in_flight = [0] * len(senders)
        self.remaining: dict[bytes, int] = {}
        self.drained = defer.Deferred()
        self.sent = 0

    def _send(self, i: int) -> None:
        key = f"{i}.{next(self.seq)}"
        self.remaining[key.encode()] = self.copies
        self.in_flight[i] += 1
        self.sent += 1
        self.senders[i](key)

    def on_key(self, key: bytes) -> None:
        left = self.remaining.get(key)
        if left is None:
            return
        if left > 1:
            self.remaining[key] = left - 1
            return
        del self.remaining[key]
        i = int(key.split(b".")[0])
        self.in_flight[i] -= 1
        if time.time() < self.deadline:
            self._send(i)
        elif not self.remaining and not self.drained.called:
            self.drained.callback(None)

    async def run(self) -> float:
        self.started = time.time()
        self.deadline = self.started + self.seconds
        for i in range(len(self.senders)):
            for _ in range(self.window):
                self._send(i)
        self.drained.addTimeout(self.seconds + DRAIN_SECONDS, reactor)
        try:
            await self.drained
        except defer.TimeoutError:
            pass  # some copies never came: reported as lost
        return self.started

    @property
    def lost(self) -> int:
        return sum(self.remaining.values())


def _throughput(latencies: Latencies, started: float, unit: str, loop: Windowed) -> Outcome:
    elapsed = max(latencies.last - started, 1e-9)
    return Outcome(value=len(latencies.values) / elapsed, unit=unit, delivered=len(latencies.values), lost=loop.lost,
                   seconds=elapsed, p50_ms=percentile(latencies.values, 0.5) * 1000,
                   p99_ms=percentile(latencies.values, 0.99) * 1000)


async def online(server, users) -> list:
    """Logged-in, available clients (closed again if that fails)."""
    clients = await connect_all(server, users)
    try:
        for client in clients:
            client.on_data = _ignore
            client.send("<presence/>")
        await sync(clients)
    except BaseException:
        close_all(clients)
        raise
    return clients


async def first_contact(senders, receivers) -> None:
    """Each sender's first message to its receiver, delivered, before any clock
    starts: a conversation's first message makes xep207's pair node (once per
    pair, ever), which the peers have no counterpart of; the one-to-one
    figures are of conversations under way."""
    arrived = []
    for sender, receiver in zip(senders, receivers):
        arrived.append(wait_for(receiver, re.compile(rb"<body>hello</body>")))
        sender.send(f"<message to='{receiver.jid}' type='chat'><body>hello</body></message>")
    await defer.gatherResults(arrived)


async def chat(server, users, pairs: int = 50, window: int = 10, seconds: float = 3.0) -> Outcome:
    """One-to-one: ``pairs`` senders each keep ``window`` messages in flight to their receiver."""
    clients = await online(server, users[:2 * pairs])
    try:
        senders, receivers = clients[0::2], clients[1::2]
        await first_contact(senders, receivers)

        def sender(i):
            client, to = senders[i], receivers[i].jid
            return lambda key: client.send(
                f"<message to='{to}' type='chat'><body>t={time.time():.6f} k={key}</body></message>")

        loop = Windowed([sender(i) for i in range(pairs)], window, 1, seconds)
        latencies = Latencies(rb"<body>t=([0-9.]+) k=([0-9.]+)</body>", float("inf"), loop.on_key)
        for receiver in receivers:
            receiver.on_data = latencies.on_data
        started = await loop.run()
        return _throughput(latencies, started, "msgs/s", loop)
    finally:
        close_all(clients)


async def groupchat(server, users, occupants: int = 50, senders: int = 5, window: int = 10,
                    seconds: float = 3.0) -> Outcome:
    """A room of ``occupants``; ``senders`` of them each keep ``window`` messages undelivered."""
    room = f"bench{next(_ids)}@{server.room_service}"
    clients = await connect_all(server, users[:occupants])
    try:
        subject = re.compile(rb"<subject")

        async def join(client):
            joined = wait_for(client, subject)
            client.send(f"<presence to='{room}/{client.user}'><x xmlns='http://jabber.org/protocol/muc'>"
                        "<history maxstanzas='0'/></x></presence>")
            await joined

        for client in clients:
            client.on_data = _ignore
        await join(clients[0])
        # An instant room (XEP-0045 §10.1.2), for servers that lock a new room until configured.
        await iq(clients[0], "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                             "<x xmlns='jabber:x:data' type='submit'/></query>", to=room)
        semaphore = defer.DeferredSemaphore(10)
        await defer.gatherResults([semaphore.run(lambda c=c: defer.ensureDeferred(join(c))) for c in clients[1:]])
        await sync(clients)

        def sender(i):
            client = clients[i]
            return lambda key: client.send(
                f"<message to='{room}' type='groupchat'><body>t={time.time():.6f} k={key}</body></message>")

        loop = Windowed([sender(i) for i in range(senders)], window, occupants, seconds)
        latencies = Latencies(rb"<body>t=([0-9.]+) k=([0-9.]+)</body>", float("inf"), loop.on_key)
        for client in clients:
            client.on_data = latencies.on_data
        started = await loop.run()
        return _throughput(latencies, started, "deliveries/s", loop)
    finally:
        close_all(clients)


async def presence(server, users, contacts: int = 100, window: int = 20, seconds: float = 3.0) -> Outcome:
    """One user whose ``contacts`` (subscribed through RFC 6121 subscription requests
    and approvals) are online; it changes status, ``window`` changes undelivered."""
    star = await connect(server.port, users[0], "r", scram="SCRAM-SHA-1")
    clients = await connect_all(server, users[1:1 + contacts])
    try:
        star_bare = star.jid.split("/")[0]

        def approve(element):
            if element.name == "presence" and element.getAttribute("type") == "subscribe":
                star.send(f"<presence type='subscribed' to='{element['from'].split('/')[0]}'/>")

        star.on_stanza = approve
        star.send("<presence/>")
        await sync([star])
        # Approved once the star's current presence arrives (RFC 6121 §3.1.5).
        subscribed = re.compile(rb"<presence[^>]*from=['\"]" + re.escape(star.jid.encode()) + rb"['\"]")
        done = []
        for client in clients:
            client.on_data = _ignore
            done.append(wait_for(client, subscribed))
            client.send("<presence/>")
            client.send(f"<presence type='subscribe' to='{star_bare}'/>")
        await defer.gatherResults(done)
        await sync([star, *clients])

        def change(key):
            star.send(f"<presence><status>t={time.time():.6f} k={key}</status></presence>")

        star.on_data = _ignore
        loop = Windowed([change], window, contacts, seconds)
        latencies = Latencies(rb"<status>t=([0-9.]+) k=([0-9.]+)</status>", float("inf"), loop.on_key)
        for client in clients:
            client.on_data = latencies.on_data
        started = await loop.run()
        return _throughput(latencies, started, "deliveries/s", loop)
    finally:
        close_all([star, *clients])


async def pubsub(server, users, subscribers: int = 100, window: int = 20, seconds: float = 3.0) -> Outcome:
    """A node on the pubsub service with ``subscribers`` (full JIDs, online); one
    publisher keeps ``window`` items undelivered."""
    node = f"bench{next(_ids)}"
    ns = "http://jabber.org/protocol/pubsub"
    publisher = await connect(server.port, users[0], "r", scram="SCRAM-SHA-1")
    clients = await connect_all(server, users[1:1 + subscribers])
    try:
        for client in [publisher, *clients]:
            client.on_data = _ignore
            client.send("<presence/>")
        created = await iq(publisher, f"<pubsub xmlns='{ns}'><create node='{node}'/></pubsub>",
                           to=server.pubsub_service)
        if b"error" in created:
            raise RuntimeError(f"creating node: {created[-300:]!r}")
        semaphore = defer.DeferredSemaphore(20)
        answers = await defer.gatherResults([semaphore.run(lambda c=c: defer.ensureDeferred(iq(
            c, f"<pubsub xmlns='{ns}'><subscribe node='{node}' jid='{c.jid}'/></pubsub>",
            to=server.pubsub_service))) for c in clients])
        if any(b"type='error'" in a or b'type="error"' in a for a in answers):
            raise RuntimeError(f"subscribing: {[a for a in answers if b'error' in a][0][-300:]!r}")
        await sync(clients)

        def publish(key):
            publisher.send(f"<iq type='set' id='p{key}' to='{server.pubsub_service}'><pubsub xmlns='{ns}'>"
                           f"<publish node='{node}'><item><entry xmlns='urn:bench'>t={time.time():.6f} k={key}"
                           "</entry></item></publish></pubsub></iq>")

        loop = Windowed([publish], window, subscribers, seconds)
        latencies = Latencies(rb">t=([0-9.]+) k=([0-9.]+)</entry>", float("inf"), loop.on_key)
        for client in clients:
            client.on_data = latencies.on_data
        started = await loop.run()
        return _throughput(latencies, started, "deliveries/s", loop)
    finally:
        close_all([publisher, *clients])


async def logins(server, users, concurrency: int = 50, seconds: float = 3.0) -> Outcome:
    """SCRAM-SHA-1 + bind, ``concurrency`` at a time, each connection closed once bound.
    The client caches SaltedPassword per account (as real clients do), so the
    PBKDF2 it pays is once per account, not per login."""
    users = users[:2 * concurrency]
    deadline = time.time() + seconds
    count = [0]
    started = time.time()
    last = [started]

    async def worker(i):
        n = i
        while time.time() < deadline:
            client = await connect(server.port, users[n % len(users)], f"l{n}", scram="SCRAM-SHA-1")
            count[0] += 1
            last[0] = time.time()
            client.transport.loseConnection()
            n += concurrency

    await defer.gatherResults([defer.ensureDeferred(worker(i)) for i in range(concurrency)], consumeErrors=True)
    return Outcome(value=count[0] / (last[0] - started), unit="logins/s", logins=count[0])


async def idle_memory(server, users, sessions: int = 1000) -> Outcome:
    """RSS growth of the server process per idle session (bound, available presence):
    ``sessions`` plaintext ones, then, while those stay open (so that no freed
    memory is reused), as many over STARTTLS (TLS 1.3 with every server here).
    ``users``: 2 × ``sessions`` + 10 accounts."""
    warm = await connect_all(server, users[2 * sessions:2 * sessions + 10])
    await sync(warm)
    clients = []
    try:
        figures = {}
        for tls, group in ((False, users[:sessions]), (True, users[sessions:2 * sessions])):
            before = rss_kib(server.pid)
            batch = await connect_all(server, group, tls=tls)
            clients += batch
            for client in batch:
                client.on_data = _ignore
                client.send("<presence/>")
            await sync(batch)
            # Idle means quiet for a moment (xep207 frees an idle stream's parser
            # after a second): the same pause for every server.
            await task.deferLater(reactor, IDLE_SECONDS, lambda: None)
            figures[tls] = (rss_kib(server.pid) - before) / sessions
        return Outcome(value=figures[False], unit="KiB/session", tls_kib=figures[True],
                       also={"memory_tls": figures[True]})
    finally:
        close_all([*warm, *clients])


async def latency(server, users, rate: float = 5000, pairs: int = 50, seconds: float = 3.0) -> Outcome:
    """p99 latency of one-to-one messages sent at a fixed total ``rate`` (open loop)."""
    clients = await online(server, users[:2 * pairs])
    try:
        senders, receivers = clients[0::2], clients[1::2]
        await first_contact(senders, receivers)
        latencies = Latencies(rb"<body>t=([0-9.]+)</body>", float("inf"))
        for receiver in receivers:
            receiver.on_data = latencies.on_data
        state = {"sent": 0, "next": 0}
        started = time.time()
        tick = 0.005

        def send_due():
            due = int((time.time() - started) * rate) - state["sent"]
            for _ in range(max(0, due)):
                i = state["next"]
                state["next"] = (i + 1) % pairs
                senders[i].send(f"<message to='{receivers[i].jid}' type='chat'>"
                                f"<body>t={time.time():.6f}</body></message>")
                state["sent"] += 1

        sending = task.LoopingCall(send_due)
        stopped = sending.start(tick)
        await task.deferLater(reactor, seconds, lambda: None)
        sending.stop()
        await stopped
        latencies.expected = state["sent"]
        if len(latencies.values) < state["sent"]:
            latencies.done = defer.Deferred()
            latencies.done.addTimeout(DRAIN_SECONDS, reactor)
            try:
                await latencies.done
            except defer.TimeoutError:
                pass
        lost = state["sent"] - len(latencies.values)
        p99 = percentile(latencies.values, 0.99) * 1000 if not lost else float("inf")
        return Outcome(value=p99, unit="ms p99", p50_ms=percentile(latencies.values, 0.5) * 1000,
                       sent_per_second=state["sent"] / seconds, lost=lost)
    finally:
        close_all(clients)
