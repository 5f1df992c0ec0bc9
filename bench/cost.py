"""Server CPU per message, and Python calls per message, on a fixed amount of work.

    python bench/cost.py [--storage memory,sqlite] [--workload chat|groupchat|presence|pubsub|login]
                         [--messages 5000] [--profile] [--top 25]

``presence``: one account's status changes to 100 subscribed contacts;
``pubsub``: items published to a node of the pubsub service with 100
subscribers (a "message" is one status change or publish, a "delivery" one
copy received); ``login``: SCRAM-SHA-1 + bind, 50 at a time (a "message" is
one login).

On a shared machine throughput is noise; the CPU the server process (all its
threads) spent on a known number of messages, and the Python function calls it
made for them, are not. The server is xep207 exactly as bench/compare.py runs
it. With ``--profile`` a second, identical batch runs under cProfile (switched
on and off by signals, so start-up and logins are not counted) and the
functions are listed by own time and by calls per message.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])
from twisted.internet import defer, reactor, task  # noqa: E402

from bench import servers, workloads  # noqa: E402
from bench.common import cpu_seconds, run  # noqa: E402

# The server's entry point, with cProfile switched on by SIGUSR1 and dumped by SIGUSR2.
PROFILED = """
import cProfile, os, signal
profile = cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
def dump(*_):
    profile.disable()
    profile.dump_stats(os.environ['XEP207_COST_STATS'] + '.tmp')
    os.rename(os.environ['XEP207_COST_STATS'] + '.tmp', os.environ['XEP207_COST_STATS'])
signal.signal(signal.SIGUSR2, dump)
from twisted.scripts.twistd import run; run()
"""


class Profiled(servers.Xep207):
    def start(self, users, admins=()) -> None:
        self.stats = os.path.join(tempfile.mkdtemp(prefix="xep207-cost-"), "server.pstats")
        os.environ["XEP207_COST_STATS"] = self.stats
        original = servers.subprocess.Popen

        def popen(command, **kwargs):
            command = list(command)
            if "twistd" in command[2]:
                command[2] = PROFILED
            return original(command, **kwargs)

        servers.subprocess.Popen = popen
        try:
            super().start(users, admins)
        finally:
            servers.subprocess.Popen = original


def _counting(messages: int, copies: int):
    state = {"seen": 0, "done": defer.Deferred()}

    def on_data(data: bytes) -> None:
        state["seen"] += data.count(b"<body>")
        if state["seen"] >= messages * copies and not state["done"].called:
            state["done"].callback(None)

    return state, on_data


async def _batch_chat(clients, messages: int, window: int = 10) -> None:
    """Each sender keeps ``window`` messages in flight to its receiver."""
    senders, receivers = clients[0::2], clients[1::2]
    per_pair = messages // len(senders)
    done = []
    for sender, receiver in zip(senders, receivers):
        state = {"sent": 0, "got": 0, "done": defer.Deferred()}
        text = f"<message to='{receiver.jid}' type='chat'><body>hello there, a message of a usual size</body></message>"

        def on_data(data, state=state, sender=sender, text=text):
            n = data.count(b"<body>")
            state["got"] += n
            for _ in range(n):
                if state["sent"] < per_pair:
                    state["sent"] += 1
                    sender.send(text)
            if state["got"] >= per_pair and not state["done"].called:
                state["done"].callback(None)

        receiver.on_data = on_data
        for _ in range(min(window, per_pair)):
            state["sent"] += 1
            sender.send(text)
        done.append(state["done"])
    await defer.gatherResults(done)


async def _batch_groupchat(ctx, messages: int, window: int = 10) -> None:
    clients, room = ctx
    senders = clients[:5]
    per_sender = messages // len(senders)
    state, on_data = _counting(messages, len(clients))
    counts = {"sent": [0] * len(senders), "got": 0}
    text = f"<message to='{room}' type='groupchat'><body>hello there, a message of a usual size</body></message>"

    for client in clients:
        client.on_data = on_data
    # each sender sends when it sees its own echo
    for i, sender in enumerate(senders):
        def echo(data, i=i, sender=sender):
            on_data(data)
            for _ in range(data.count(b"<body>")):
                if counts["sent"][i] < per_sender:
                    counts["sent"][i] += 1
                    sender.send(text)

        sender.on_data = echo
        for _ in range(min(window, per_sender)):
            counts["sent"][i] += 1
            sender.send(text)
    await state["done"]


def _fanout(senders, receivers, messages: int, copies: int, marker: bytes, send, window: int = 20):
    """Keep ``window`` fan-out messages incomplete: message n is complete once
    ``copies`` markers for it arrived, in total (order is all that matters here)."""
    state = {"sent": 0, "got": 0, "done": defer.Deferred()}

    def top_up():
        complete = state["got"] // copies
        while state["sent"] < messages and state["sent"] - complete < window:
            send(state["sent"])
            state["sent"] += 1

    def on_data(data: bytes) -> None:
        state["got"] += data.count(marker)
        if state["got"] >= messages * copies:
            if not state["done"].called:
                state["done"].callback(None)
            return
        top_up()

    for receiver in receivers:
        receiver.on_data = on_data
    for sender in senders:
        sender.on_data = workloads._ignore
    top_up()
    return state["done"]


async def _batch_presence(ctx, messages: int) -> None:
    star, contacts = ctx[0], ctx[1:]
    await _fanout([star], contacts, messages, len(contacts), b"<status>", lambda n: star.send(
        f"<presence><status>status number {n} of a usual length</status></presence>"))


async def _batch_pubsub(ctx, messages: int) -> None:
    publisher, subscribers, node, service = ctx
    ns = "http://jabber.org/protocol/pubsub"
    await _fanout([publisher], subscribers, messages, len(subscribers), b"</entry>", lambda n: publisher.send(
        f"<iq type='set' id='p{n}' to='{service}'><pubsub xmlns='{ns}'><publish node='{node}'><item>"
        f"<entry xmlns='urn:bench'>item number {n} of a usual length</entry></item></publish></pubsub></iq>"))


async def _batch_login(ctx, messages: int, concurrency: int = 50) -> None:
    server, users = ctx
    left = [messages]

    async def worker(i):
        n = i
        while left[0] > 0:
            left[0] -= 1
            client = await workloads.connect(server.port, users[n % len(users)], f"l{n}", scram="SCRAM-SHA-1")
            client.transport.loseConnection()
            n += concurrency

    await defer.gatherResults([defer.ensureDeferred(worker(i)) for i in range(concurrency)])


async def _setup_presence(server, users):
    star = await workloads.connect(server.port, users[0], "r", scram="SCRAM-SHA-1")
    contacts = await workloads.connect_all(server, users[1:101])
    star_bare = star.jid.split("/")[0]

    def approve(element):
        if element.name == "presence" and element.getAttribute("type") == "subscribe":
            star.send(f"<presence type='subscribed' to='{element['from'].split('/')[0]}'/>")

    star.on_stanza = approve
    star.send("<presence/>")
    await workloads.sync([star])
    subscribed = workloads.re.compile(rb"<presence[^>]*from=['\"]" + workloads.re.escape(star.jid.encode()) + rb"['\"]")
    done = []
    for client in contacts:
        client.on_data = workloads._ignore
        done.append(workloads.wait_for(client, subscribed))
        client.send("<presence/>")
        client.send(f"<presence type='subscribe' to='{star_bare}'/>")
    await defer.gatherResults(done)
    await workloads.sync([star, *contacts])
    star.on_data = workloads._ignore
    return [star, *contacts]


async def _setup_pubsub(server, users):
    ns = "http://jabber.org/protocol/pubsub"
    node = "cost"
    publisher = await workloads.connect(server.port, users[0], "r", scram="SCRAM-SHA-1")
    subscribers = await workloads.connect_all(server, users[1:101])
    for client in [publisher, *subscribers]:
        client.on_data = workloads._ignore
        client.send("<presence/>")
    created = await workloads.iq(publisher, f"<pubsub xmlns='{ns}'><create node='{node}'/></pubsub>",
                                 to=server.pubsub_service)
    if b"error" in created:
        raise RuntimeError(f"creating node: {created[-300:]!r}")
    for client in subscribers:
        answer = await workloads.iq(client, f"<pubsub xmlns='{ns}'><subscribe node='{node}' jid='{client.jid}'/>"
                                            "</pubsub>", to=server.pubsub_service)
        if b"type='error'" in answer or b'type="error"' in answer:
            raise RuntimeError(f"subscribing: {answer[-300:]!r}")
    await workloads.sync([publisher, *subscribers])
    return publisher, subscribers, node, server.pubsub_service


async def _setup(server, workload: str, users):
    if workload == "chat":
        return await workloads.online(server, users[:100])
    if workload == "presence":
        return await _setup_presence(server, users)
    if workload == "pubsub":
        return await _setup_pubsub(server, users)
    if workload == "login":
        return server, users[:100]
    clients = await workloads.connect_all(server, users[:50])
    room = f"cost@{server.room_service}"
    for client in clients:
        client.on_data = workloads._ignore
    joined = workloads.wait_for(clients[0], workloads.re.compile(rb"<subject"))
    clients[0].send(f"<presence to='{room}/{clients[0].user}'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    await joined
    await workloads.iq(clients[0], "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                                   "<x xmlns='jabber:x:data' type='submit'/></query>", to=room)
    for client in clients[1:]:
        joined = workloads.wait_for(client, workloads.re.compile(rb"<subject"))
        client.send(f"<presence to='{room}/{client.user}'><x xmlns='http://jabber.org/protocol/muc'>"
                    "<history maxstanzas='0'/></x></presence>")
        await joined
    await workloads.sync(clients)
    return clients, room


async def measure(storage: str, workload: str, messages: int, profile: bool, top: int, repeat: int = 3,
                  root: str = servers.ROOT, save_profile: str | None = None) -> dict:
    server = (Profiled if profile else servers.Xep207)(storage, root=root)
    users = [f"u{i}" for i in range(101)]
    server.start(users, admins=users[:1])
    try:
        ctx = await _setup(server, workload, users)
        batch = BATCHES[workload]
        clients = {"chat": lambda: ctx, "presence": lambda: ctx, "pubsub": lambda: [ctx[0], *ctx[1]],
                   "login": lambda: []}.get(workload, lambda: ctx[0])()
        await batch(ctx, min(messages, 1000))  # warm up: caches, pair nodes
        await workloads.sync(clients)
        # The least of a few identical batches: other processes on a shared
        # machine only ever add to a process's CPU time (caches, frequency).
        samples = []
        for _ in range(repeat):
            await workloads.sync(clients)
            before, began, split = cpu_seconds(server.pid), time.time(), _user_system(server.pid)
            threads = _threads(server.pid)
            mine = _own_cpu()
            await batch(ctx, messages)
            cpu, wall = cpu_seconds(server.pid) - before, time.time() - began
            user, system = (a - b for a, b in zip(_user_system(server.pid), split))
            after = _threads(server.pid)
            by_thread = {name: round((after[name] - threads.get(name, 0)) / messages * 1e6)
                         for name in after if after[name] - threads.get(name, 0) > 0}
            samples.append((cpu, wall, user, system, by_thread, _own_cpu() - mine))
        cpu, wall, user, system, by_thread, client = min(samples, key=lambda s: s[0])
        deliveries = messages * (1 if workload in ("chat", "login") else
                                 len(clients) - 1 if workload in ("presence", "pubsub") else len(clients))
        result = {"storage": storage, "messages": messages, "deliveries": deliveries, "cpu_s": cpu,
                  "wall_s": wall, "user_us": user / messages * 1e6,
                  "system_us": system / messages * 1e6, "us_per_message": cpu / messages * 1e6,
                  "us_per_delivery": cpu / deliveries * 1e6, "client_us": client / messages * 1e6,
                  "spread": [round(s[0] / messages * 1e6) for s in samples], "threads": by_thread}
        if profile:
            await workloads.sync(clients)
            os.kill(server.pid, signal.SIGUSR1)
            await workloads.sync(clients)
            await batch(ctx, messages)
            await workloads.sync(clients)
            os.kill(server.pid, signal.SIGUSR2)
            for _ in range(600):  # the server writes its stats on the signal
                if os.path.exists(server.stats):
                    break
                await task.deferLater(reactor, 0.05, lambda: None)
        workloads.close_all(clients)
        return result
    finally:
        server.stop()
        if profile and os.path.exists(server.stats):
            _print_profile(server.stats, messages, top, storage)
            if save_profile:
                shutil.copyfile(server.stats, save_profile.replace("{storage}", storage))


BATCHES = {"chat": _batch_chat, "groupchat": _batch_groupchat, "presence": _batch_presence,
           "pubsub": _batch_pubsub, "login": _batch_login}


def _own_cpu() -> float:
    """The load generator's own CPU (is it the bottleneck?)."""
    times = os.times()
    return times.user + times.system


def _user_system(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")


def _threads(pid: int) -> dict[str, float]:
    """CPU seconds of the reactor's thread and of the others (SQLite's writer, ...)."""
    found: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
        except OSError:
            continue
        name = "reactor" if int(tid) == pid else "others"
        fields = rest.split()
        found[name] = found.get(name, 0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def _print_profile(path: str, messages: int, top: int, storage: str) -> None:
    stats = pstats.Stats(path)
    total_calls = sum(v[1] for v in stats.stats.values())  # primitive + recursive
    print(f"\n  cProfile, {storage}: {total_calls / messages:.1f} Python calls per message "
          f"(main thread), {stats.total_tt / messages * 1e6:.0f} µs/message under the profiler")
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    print(f"  {'own µs/msg':>10} {'cum µs/msg':>10} {'calls/msg':>9}  function")
    for (file, line, name), (cc, nc, tt, ct, _) in rows:
        short = file.replace(os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + "/", "")
        short = short.split("site-packages/")[-1]
        print(f"  {tt / messages * 1e6:10.2f} {ct / messages * 1e6:10.2f} {nc / messages:9.2f}  {short}:{line} {name}")
    by_calls = sorted(stats.stats.items(), key=lambda kv: kv[1][1], reverse=True)[:top]
    print("\n  by calls per message:")
    for (file, line, name), (cc, nc, tt, ct, _) in by_calls:
        short = file.split("site-packages/")[-1].replace(os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + "/", "")
        print(f"  {nc / messages:9.2f}  {short}:{line} {name}")


async def main(args) -> None:
    for storage in args.storage.split(","):
        result = await measure(storage, args.workload, args.messages, args.profile, args.top, args.repeat, args.root,
                               args.save_profile)
        print(f"{args.workload} on {storage}: {result['us_per_message']:.0f} µs of server CPU per message"
              f" (user {result['user_us']:.0f}, system {result['system_us']:.0f};"
              f" {result['us_per_delivery']:.1f} per delivery), {result['messages']} messages,"
              f" {result['messages'] / result['wall_s']:,.0f} msgs/s wall; batches {result['spread']};"
              f" µs/message by thread {result['threads']}; load generator {result['client_us']:.0f} µs per message",
              flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", default="memory,sqlite")
    parser.add_argument("--workload", default="chat", choices=["chat", "groupchat", "presence", "pubsub", "login"])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--root", default=servers.ROOT, help="another checkout's xep207 (before/after)")
    parser.add_argument("--repeat", type=int, default=3, help="batches measured; the least CPU counts")
    parser.add_argument("--save-profile", metavar="PATH",
                        help="keep the pstats file ({storage} in PATH: the storage's name) for pstats/snakeviz")
    args = parser.parse_args()
    run(lambda: main(args))
