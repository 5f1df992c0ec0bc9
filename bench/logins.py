"""Issue 3: log in N clients (STARTTLS + SCRAM-SHA-256 + bind + presence), report
logins/s and the server's memory per idle session (RSS growth / N).

    python bench/logins.py [N]        # default 1000
"""

import sys
import time

from twisted.internet import defer

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])
from bench.common import ServerProcess, connect, report, rss_kib, run  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
CONCURRENCY = 50


async def main():
    users = [f"user{i}" for i in range(N)]
    server = ServerProcess(users=users)
    try:
        before = rss_kib(server.popen.pid)
        clients = []
        started = time.perf_counter()
        semaphore = defer.DeferredSemaphore(CONCURRENCY)

        async def login(user):
            client = await connect(server.port, user, "bench", tls=True, scram=True)
            client.send("<presence/>")
            clients.append(client)

        await defer.gatherResults([semaphore.run(lambda u=u: defer.ensureDeferred(login(u))) for u in users])
        elapsed = time.perf_counter() - started
        # One round trip on the last client, so every presence has been processed.
        done = defer.Deferred()
        clients[-1].on_stanza = lambda e: e.getAttribute("id") == "last" and not done.called and done.callback(e)
        clients[-1].send("<iq type='get' id='last'><ping xmlns='urn:xmpp:ping'/></iq>")
        await done
        after = rss_kib(server.popen.pid)
        report(f"logins: {N} clients, STARTTLS + SCRAM-SHA-256 + bind + presence, {CONCURRENCY} at a time",
               logins_per_second=N / elapsed, seconds=elapsed,
               server_rss_before_mib=before / 1024, server_rss_after_mib=after / 1024,
               rss_per_session_kib=(after - before) / N)
        for client in clients:
            client.transport.loseConnection()
    finally:
        server.stop()


run(main)
