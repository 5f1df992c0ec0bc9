"""Issue 5: a room with K occupants; S of them send M groupchat messages each as
fast as the server accepts; report delivered stanzas/s and p50/p99 latency.

    python bench/groupchat.py [K] [S] [M]      # default 100 occupants, 10 senders, 20 messages

Plain TCP; the load generator shares the 2 cores with the server.
"""

import sys
import time

from twisted.internet import defer

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])
from bench.common import Latencies, ServerProcess, connect, run  # noqa: E402

K = int(sys.argv[1]) if len(sys.argv) > 1 else 100
S = int(sys.argv[2]) if len(sys.argv) > 2 else 10
M = int(sys.argv[3]) if len(sys.argv) > 3 else 20
ROOM = "bench@chat.localhost"


async def main():
    users = [f"o{i}" for i in range(K)]
    server = ServerProcess("--no-tls", "--allow-plaintext-auth", users=users)
    try:
        latencies = Latencies(rb"<body>t=([0-9.]+)</body>", K * S * M)

        clients = []
        for user in users:  # joins one after another: the occupant list grows as in real life
            client = await connect(server.port, user, "r")
            joined = defer.Deferred()
            client.on_data = lambda data, d=joined: (b"<subject" in data and not d.called and d.callback(None))
            client.send(f"<presence to='{ROOM}/{user}'><x xmlns='http://jabber.org/protocol/muc'>"
                        "<history maxstanzas='0'/></x></presence>")
            await joined
            if not clients:  # the maker accepts an instant room (XEP-0045 §10.1.2): it is locked till then
                configured = defer.Deferred()
                client.on_data = lambda data, d=configured: (b"id='instant'" in data and not d.called
                                                             and d.callback(None))
                client.send(f"<iq type='set' id='instant' to='{ROOM}'><query xmlns='http://jabber.org/protocol/"
                            "muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>")
                await configured
            client.on_data = latencies.on_data
            clients.append(client)
        started = time.perf_counter()
        for _ in range(M):
            for sender in clients[:S]:
                sender.send(f"<message to='{ROOM}' type='groupchat'><body>t={time.time():.6f}</body></message>")
        await latencies.done
        latencies.report(f"groupchat: {K} occupants, {S} senders x {M} messages", time.perf_counter() - started)
    finally:
        server.stop()


run(main)
