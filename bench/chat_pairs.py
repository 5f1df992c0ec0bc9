"""Issue 6: P pairs exchange one-to-one messages, each sender keeping at most W
messages in flight (sent, not yet received); report delivered messages/s and
p50/p99 latency.

    python bench/chat_pairs.py [P] [W] [M]     # default 100 pairs, window 10, 50 messages a pair

Plain TCP; SQLite storage (every message is a stored item).
"""

import sys
import time

from twisted.internet import defer

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])
from bench.common import Latencies, ServerProcess, connect, run  # noqa: E402

P = int(sys.argv[1]) if len(sys.argv) > 1 else 100
W = int(sys.argv[2]) if len(sys.argv) > 2 else 10
M = int(sys.argv[3]) if len(sys.argv) > 3 else 50


async def main():
    users = [f"a{i}" for i in range(P)] + [f"b{i}" for i in range(P)]
    server = ServerProcess("--no-tls", "--allow-plaintext-auth", users=users)
    try:
        latencies = Latencies(rb"<body>t=([0-9.]+)</body>", P * M)
        all_done = []
        senders = []
        for i in range(P):
            sender = await connect(server.port, f"a{i}", "r")
            receiver = await connect(server.port, f"b{i}", "r")
            for client in (sender, receiver):
                client.send("<presence/>")
            state = {"sent": 0, "received": 0, "done": defer.Deferred()}

            def send_one(sender=sender, state=state, i=i):
                state["sent"] += 1
                sender.send(f"<message to='b{i}@localhost' type='chat'><body>t={time.time():.6f}</body></message>")

            def on_data(data, state=state, send_one=send_one):
                for _ in range(latencies.on_data(data)):
                    state["received"] += 1
                    if state["sent"] < M:
                        send_one()
                if state["received"] >= M and not state["done"].called:
                    state["done"].callback(None)

            receiver.on_data = on_data
            senders.append((send_one, state))
            all_done.append(state["done"])
        started = time.perf_counter()
        for send_one, state in senders:
            for _ in range(min(W, M)):
                send_one()
        await defer.gatherResults(all_done)
        latencies.report(f"one-to-one: {P} pairs, window {W}, {M} messages a pair (stored in pair nodes)",
                         time.perf_counter() - started)
    finally:
        server.stop()


run(main)
