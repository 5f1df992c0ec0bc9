"""Issue 15: the same workloads on 1, 2 and 3 processes of a cluster (shared
PostgreSQL and Redis), each client's peer on another process; and what each
delivered stanza costs Redis and PostgreSQL (the capacity model of
docs/cluster.md).

    python bench/cluster.py [PAIRS] [MESSAGES] [SUBSCRIBERS] [ITEMS]
        # default 60 pairs x 40 messages (window 10); 60 subscribers x 60 items

Configurations, interleaved in one run (compare within a run, not across):
``1 alone`` is one process without --cluster (PostgreSQL), ``1``/``2``/``3``
are cluster processes. Per workload: delivered/s, server CPU seconds per
1000 deliveries (all processes), Redis commands and PostgreSQL transactions
per delivery.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

from twisted.internet import defer

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])
from bench.common import (ServerProcess, connect, cpu_seconds, create_accounts, percentile,  # noqa: E402
                          report, run)

PAIRS = int(sys.argv[1]) if len(sys.argv) > 1 else 60
MESSAGES = int(sys.argv[2]) if len(sys.argv) > 2 else 40
SUBSCRIBERS = int(sys.argv[3]) if len(sys.argv) > 3 else 60
ITEMS = int(sys.argv[4]) if len(sys.argv) > 4 else 60
WINDOW = 10
NS_PUBSUB = "http://jabber.org/protocol/pubsub"


def redis_commands(redis) -> int:
    import socket

    with socket.create_connection(("127.0.0.1", redis.port)) as s:
        s.sendall(b"INFO stats\r\n")
        data = b""
        while b"total_commands_processed" not in data or not data.endswith(b"\r\n"):
            data += s.recv(65536)
    line = next(l for l in data.split(b"\r\n") if l.startswith(b"total_commands_processed"))
    return int(line.split(b":")[1])


def pg_transactions(url: str) -> int:
    import psycopg

    database = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                                 (database,)).fetchone()
    return int(row[0])


class Cluster:
    def __init__(self, count: int, pg, redis, users, clustered: bool = True):
        self.url = pg.new_database()
        create_accounts(self.url, users)
        self.redis_url = redis.new_url()
        self.processes = []
        tag = uuid.uuid4().hex[:4]
        try:
            for i in range(count):
                args = ["--no-tls", "--allow-plaintext-auth"]
                if clustered:
                    args += ["--cluster", self.redis_url, "--node-name", f"b{tag}-{i}"]
                self.processes.append(ServerProcess(*args, storage="postgresql", pg_url=self.url))
        except BaseException:
            self.stop()  # no process outlives a failed start
            raise

    def port(self, i: int) -> int:
        return self.processes[i % len(self.processes)].port

    def cpu(self) -> float:
        return sum(cpu_seconds(p.popen.pid) for p in self.processes)

    def stop(self):
        for p in self.processes:
            p.stop()


async def measure(cluster, redis, work, label: str, title: str) -> None:
    await asyncio_free_turn()
    cpu, commands, xacts = cluster.cpu(), redis_commands(redis), pg_transactions(cluster.url)
    started = time.perf_counter()
    latencies = await work()
    elapsed = time.perf_counter() - started
    time.sleep(0.6)  # PostgreSQL publishes its statistics at most every 500 ms (not a synchronization)
    delivered = len(latencies)
    report(f"{title} — {label}", delivered=delivered, delivered_per_second=delivered / elapsed,
           latency_p50_ms=percentile(latencies, 0.5) * 1000, latency_p99_ms=percentile(latencies, 0.99) * 1000,
           server_cpu_ms_per_delivery=(cluster.cpu() - cpu) * 1000 / max(1, delivered),
           redis_commands_per_delivery=(redis_commands(redis) - commands) / max(1, delivered),
           pg_transactions_per_delivery=(pg_transactions(cluster.url) - xacts) / max(1, delivered))


async def asyncio_free_turn():
    from twisted.internet import reactor, task

    await task.deferLater(reactor, 0, lambda: None)


async def one_to_one(cluster) -> list[float]:
    """Pair i: a_i on process i, b_i on process i+1 (another one when there are two or more)."""
    latencies: list[float] = []
    done = []
    senders = []
    for i in range(PAIRS):
        sender = await connect(cluster.port(i), f"a{i}", "r")
        receiver = await connect(cluster.port(i + 1), f"b{i}", "r")
        for client in (sender, receiver):
            client.send("<presence/>")
        state = {"sent": 0, "received": 0, "done": defer.Deferred()}

        def send_one(sender=sender, state=state, i=i):
            state["sent"] += 1
            sender.send(f"<message to='b{i}@localhost' type='chat'><body>t={time.time():.6f}</body></message>")

        def on_data(data, state=state, send_one=send_one):
            import re

            for match in re.finditer(rb"<body>t=([0-9.]+)</body>", data):
                latencies.append(time.time() - float(match.group(1)))
                state["received"] += 1
                if state["sent"] < MESSAGES:
                    send_one()
            if state["received"] >= MESSAGES and not state["done"].called:
                state["done"].callback(None)

        receiver.on_data = on_data
        senders.append(send_one)
        done.append(state["done"])
    await settle_presence(cluster)
    for send_one in senders:
        for _ in range(min(WINDOW, MESSAGES)):
            send_one()
    await defer.gatherResults(done)
    return latencies


async def settle_presence(cluster) -> None:
    """Every process has registered every session (a round trip through each)."""
    for i in range(len(cluster.processes)):
        probe = await connect(cluster.port(i), "a0", f"probe{i}")
        answered = defer.Deferred()
        probe.on_stanza = lambda e, d=answered: d.callback(None) if not d.called and e.name == "iq" else None
        probe.send("<iq type='get' id='ping' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        await answered
        probe.transport.loseConnection()


async def fan_out(cluster) -> list[float]:
    """One publisher, SUBSCRIBERS on every process, ITEMS items (window 1)."""
    publisher = await connect(cluster.port(0), "pub", "r")
    created = defer.Deferred()
    publisher.on_stanza = lambda e: created.callback(None) if not created.called and e.name == "iq" else None
    node = f"n{uuid.uuid4().hex[:6]}"
    publisher.send(f"<iq type='set' id='c' to='pubsub.localhost'><pubsub xmlns='{NS_PUBSUB}'>"
                   f"<create node='{node}'/></pubsub></iq>")
    await created
    latencies: list[float] = []
    state = {"received": 0, "item": 0, "next": None}
    total = SUBSCRIBERS * ITEMS
    finished = defer.Deferred()

    def publish():
        state["item"] += 1
        state["next"] = state["item"] * SUBSCRIBERS
        publisher.send(f"<iq type='set' id='p{state['item']}' to='pubsub.localhost'><pubsub xmlns='{NS_PUBSUB}'>"
                       f"<publish node='{node}'><item><t xmlns='urn:bench'>t={time.time():.6f}</t></item>"
                       "</publish></pubsub></iq>")

    def on_data(data):
        import re

        for match in re.finditer(rb">t=([0-9.]+)</t>", data):
            latencies.append(time.time() - float(match.group(1)))
            state["received"] += 1
            if state["received"] == state["next"] and state["item"] < ITEMS:
                publish()
            if state["received"] >= total and not finished.called:
                finished.callback(None)

    for i in range(SUBSCRIBERS):
        subscriber = await connect(cluster.port(i + 1), f"s{i}", "r")
        subscribed = defer.Deferred()
        subscriber.on_stanza = lambda e, d=subscribed: d.callback(None) if not d.called and e.name == "iq" else None
        subscriber.send(f"<iq type='set' id='s' to='pubsub.localhost'><pubsub xmlns='{NS_PUBSUB}'>"
                        f"<subscribe node='{node}' jid='s{i}@localhost/r'/></pubsub></iq>")
        await subscribed
        subscriber.on_data = on_data
    publish()
    await finished
    return latencies


async def main():
    from tests.pg import Cluster as PostgreSQL
    from tests.redis_peer import RedisServer

    pg, redis = PostgreSQL(), RedisServer()
    users = [f"a{i}" for i in range(PAIRS)] + [f"b{i}" for i in range(PAIRS)] + \
        [f"s{i}" for i in range(SUBSCRIBERS)] + ["pub"]
    configurations = [("1 alone", 1, False), ("1", 1, True), ("2", 2, True), ("3", 3, True)]
    try:
        for title, work in (("one-to-one", one_to_one), ("fan-out", fan_out)):
            for label, count, clustered in configurations:
                cluster = Cluster(count, pg, redis, users, clustered)
                try:
                    await measure(cluster, redis, lambda: work(cluster), f"{label} process(es)", title)
                finally:
                    cluster.stop()
    finally:
        redis.destroy()
        pg.destroy()


if __name__ == "__main__":
    os.environ.setdefault("CI", "true")
    run(main)
