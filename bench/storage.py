"""Issue 7: publish/s, item reads/s and subscription changes/s through the engine,
for memory, SQLite and PostgreSQL, with N items already stored.

    python bench/storage.py [N] [OPS] [ROUNDS]
        # default 100000 stored items, 2000 operations each, 1 round

PostgreSQL runs when a server is at hand: set XEP207_BENCH_POSTGRESQL to a URL,
or have Debian's postgresql installed (a private cluster is started).
Operations run 8 at a time, as a busy server would issue them. With ROUNDS > 1,
SQLite and PostgreSQL take turns (a fresh database each round) and each round
prints PostgreSQL's rates as a fraction of SQLite's: on a loaded machine
compare within a round.
"""

import os
import random
import sys
import time

from twisted.internet import defer

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])
from bench.common import report, run  # noqa: E402
from xep207.pubsub.engine import PubSubEngine  # noqa: E402
from xep207.storage import open_storage  # noqa: E402
from xep207.storage.cache import with_cache  # noqa: E402
from xep207.storage.records import Item  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
OPS = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 1
CONCURRENCY = 8
SERVICE = "pubsub.localhost"
NODES = 100


async def timed(operation, count):
    semaphore = defer.DeferredSemaphore(CONCURRENCY)
    started = time.perf_counter()
    await defer.gatherResults([semaphore.run(lambda i=i: defer.ensureDeferred(operation(i)))
                               for i in range(count)])
    return count / (time.perf_counter() - started)


async def bench(url: str, label: str):
    storage = with_cache(open_storage(url))  # as the server uses it
    await defer.maybeDeferred(storage.start)
    engine = PubSubEngine(storage, max_items_limit=N)
    for n in range(NODES):
        await engine.create_node("owner@localhost/r", SERVICE, f"n{n}", {"pubsub#max_items": str(N)})
    started = time.perf_counter()

    async def fill(i):
        await storage.put_item(SERVICE, f"n{i % NODES}", Item(f"i{i}", "<entry xmlns='urn:x'>hello</entry>",
                                                              "owner@localhost/r"), None)

    fill_rate = await timed(fill, N)
    payload = "<entry xmlns='urn:x'>a fresh item</entry>"

    async def publish(i):
        await engine.publish("owner@localhost/r", SERVICE, f"n{i % NODES}", [(None, payload)])

    async def read(i):
        await engine.get_items("reader@localhost/r", SERVICE, f"n{i % NODES}",
                               item_ids=[f"i{random.randrange(N)}"])

    async def subscription_change(i):
        node = f"n{i % NODES}"
        await engine.subscribe(f"s{i}@localhost", SERVICE, node, f"s{i}@localhost")
        await engine.unsubscribe(f"s{i}@localhost", SERVICE, node, f"s{i}@localhost")

    rates = {"fill_puts_per_second": fill_rate, "publishes_per_second": await timed(publish, OPS),
             "item_reads_per_second": await timed(read, OPS),
             "subscription_changes_per_second": 2 * await timed(subscription_change, OPS // 2)}
    report(f"storage {label}: {N} items in {NODES} nodes, {OPS} operations, {CONCURRENCY} at a time",
           fill_seconds=N / fill_rate, **rates)
    await defer.maybeDeferred(storage.stop)
    del started
    return rates


async def main():
    import tempfile

    directory = tempfile.mkdtemp(prefix="xep207-bench-")
    await bench("memory:", "memory")
    url = os.environ.get("XEP207_BENCH_POSTGRESQL")
    cluster = None
    if not url:
        try:
            from tests.pg import Cluster

            cluster = Cluster()
        except Exception as exc:  # no PostgreSQL here: say so, measure the rest
            print(f"storage PostgreSQL: skipped ({exc})")
    try:
        for round_number in range(1, ROUNDS + 1):
            label = "" if ROUNDS == 1 else f" (round {round_number})"
            sqlite = await bench("sqlite:///" + os.path.join(directory, f"bench{round_number}.sqlite"),
                                 "SQLite" + label)
            if cluster is None and (not url or round_number > 1):
                continue  # a server of your own (XEP207_BENCH_POSTGRESQL): its database is filled once
            postgresql = await bench(url if cluster is None else cluster.new_database(), "PostgreSQL" + label)
            report(f"storage PostgreSQL / SQLite{label}",
                   **{key: postgresql[key] / sqlite[key] for key in sqlite})
    finally:
        if cluster is not None:
            cluster.destroy()


run(main)
