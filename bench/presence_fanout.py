"""Issue 4: one user with R online contacts subscribed to its presence changes
status M times; report deliveries/s and p50/p99 latency (publish to receipt).

    python bench/presence_fanout.py [R] [M]      # default 1000 contacts, 20 changes

Plain TCP (no TLS) so the numbers are the server's presence path, not crypto.
The load generator is one Python process on the same 2 cores as the server.
"""

import sys
import time

from twisted.internet import defer

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])
from bench.common import Latencies, ServerProcess, connect, run  # noqa: E402

R = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
M = int(sys.argv[2]) if len(sys.argv) > 2 else 20


async def main():
    contacts = [f"c{i}" for i in range(R)]
    server = ServerProcess("--no-tls", "--allow-plaintext-auth", users=["star", *contacts], subscribe_to="star")
    try:
        latencies = Latencies(rb"<status>t=([0-9.]+)</status>", R * M)

        semaphore = defer.DeferredSemaphore(100)
        clients = await defer.gatherResults([semaphore.run(
            lambda u=u: defer.ensureDeferred(connect(server.port, u, "r", on_data=latencies.on_data))) for u in contacts])
        for client in clients:
            client.send("<presence/>")
        star = await connect(server.port, "star", "r")
        # Let the contacts' own presences settle: a round trip for each would be slow; one ping per client.
        settled = defer.gatherResults([_ping(c) for c in clients[-5:]])
        await settled
        started = time.perf_counter()
        for _ in range(M):
            star.send(f"<presence><status>t={time.time():.6f}</status></presence>")
        await latencies.done
        latencies.report(f"presence fan-out: 1 user, {R} subscribed contacts online, {M} status changes",
                         time.perf_counter() - started)
    finally:
        server.stop()


def _ping(client):
    d = defer.Deferred()
    previous = client.on_data

    def watch(data):
        if b"id='sync'" in data and not d.called:
            client.on_data = previous
            d.callback(None)
        elif previous:
            previous(data)

    client.on_data = watch
    client.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
    return d


run(main)
