"""xep207 against Prosody and ejabberd, same workloads, one interleaved run.

    python bench/compare.py [--rounds 2] [--seconds 3] [--rate 5000] [--sessions 1000]
                            [--servers prosody,ejabberd,...] [--workloads chat,groupchat,...]

Installs nothing: a peer whose Debian package is missing is left out. Each
round starts every server afresh (its own temp dir, free loopback ports,
accounts made with its own tools), runs every workload against it, and stops
it; the order of servers rotates from round to round. Prints each server's
figure (range over rounds) and xep207's ratio to the best peer, per workload,
and the configuration differences. A benchmark, not a test: the machine is
shared and noisy, so compare within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])
from twisted.internet import defer, reactor  # noqa: E402

from bench import servers as servers_module  # noqa: E402
from bench import workloads  # noqa: E402
from bench.common import run  # noqa: E402

# name, title, function, higher is better
WORKLOADS = [
    ("memory", "idle memory per session, {sessions} sessions (KiB)", "idle_memory", False),
    ("memory_tls", "idle memory per TLS session, {sessions} more sessions (KiB)", None, False),
    ("chat", "1:1 chat, 50 pairs, 10 in flight each (msgs/s)", "chat", True),
    ("groupchat", "groupchat, 50 occupants, 5 senders (deliveries/s)", "groupchat", True),
    ("presence", "presence, 100 contacts (deliveries/s)", "presence", True),
    ("pubsub", "pubsub node, 100 subscribers (deliveries/s)", "pubsub", True),
    ("latency", "1:1 p99 latency at {rate:,.0f} msgs/s (ms)", "latency", False),
    ("login", "login, SCRAM-SHA-1 + bind, 50 at a time (logins/s)", "logins", True),
]
SERVERS = {"prosody": lambda: servers_module.Prosody(), "prosody+mam": lambda: servers_module.Prosody(mam=True),
           "ejabberd": lambda: servers_module.Ejabberd(), "ejabberd+mam": lambda: servers_module.Ejabberd(mam=True),
           "sqlite": lambda: servers_module.Xep207("sqlite"), "memory": lambda: servers_module.Xep207("memory")}


def user_ranges(sessions: int) -> dict[str, list[str]]:
    """Disjoint accounts per workload, so a session still closing from one
    workload never receives another's traffic."""
    names, start = {}, 0
    for name, size in [("memory", 2 * sessions + 10), ("chat", 100), ("groupchat", 50), ("presence", 101),
                       ("pubsub", 101), ("latency", 100)]:
        names[name] = [f"u{i}" for i in range(start, start + size)]
        start += size
    names["login"] = names["memory"]  # closed (and settled) long before logins run
    return names


async def settle(server, user: str, timeout: float = 120) -> None:
    """Wait until the server answers a fresh client: the backlog an overloaded
    workload left behind must not be charged to the next one."""
    try:
        client = await defer.ensureDeferred(workloads.connect(server.port, user, "settle", scram="SCRAM-SHA-1")
                                            ).addTimeout(timeout, reactor)
        await defer.ensureDeferred(workloads.iq(client, "<ping xmlns='urn:xmpp:ping'/>")).addTimeout(timeout, reactor)
        client.transport.loseConnection()
    except Exception as exc:
        print(f"    (server still busy after {timeout}s: {exc!r})", flush=True)


async def run_server(server, args, results) -> None:
    users = user_ranges(args.sessions)
    everyone = sorted({u for group in users.values() for u in group}, key=lambda u: int(u[1:]))
    began = time.time()
    server.start(everyone, admins=users["pubsub"][:1])
    print(f"  {server.name}: started with {len(everyone)} accounts in {time.time() - began:.1f}s", flush=True)
    try:
        for name, _title, function, _higher in WORKLOADS:
            if name not in args.workloads or function is None:
                continue
            kwargs = {"seconds": args.seconds} if not name.startswith("memory") else {"sessions": args.sessions}
            if name == "latency":
                kwargs["rate"] = args.rate
            try:
                outcome = await getattr(workloads, function)(server, users[name], **kwargs)
            except Exception as exc:  # one failing workload must not lose the others' numbers
                print(f"    {name}: FAILED {exc!r}", flush=True)
                if args.verbose:
                    traceback.print_exc()
                continue
            finally:
                await settle(server, users["login"][-1])
            results.setdefault((server.name, name), []).append(outcome["value"])
            for other, value in outcome.get("also", {}).items():  # figures measured together
                results.setdefault((server.name, other), []).append(value)
            extra = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in outcome.items() if k not in ("value", "unit", "also"))
            print(f"    {name}: {outcome['value']:,.1f} {outcome['unit']} ({extra})", flush=True)
    finally:
        server.stop()


def _figure(values) -> str:
    if not values:
        return "—"
    low, high = min(values), max(values)
    fmt = (lambda v: f"{v:,.0f}") if high >= 100 else (lambda v: f"{v:,.1f}")
    return fmt(low) if len(values) == 1 or fmt(low) == fmt(high) else f"{fmt(low)}–{fmt(high)}"


def _ratio(ours, peers, higher: bool) -> str:
    peers = [statistics.median(p) for p in peers if p]
    if not ours or not peers:
        return "—"
    mine = statistics.median(ours)
    best = max(peers) if higher else min(peers)
    if higher:
        return f"{mine / best:.2f}×" if best else "—"
    # lower is better: show how many times the best peer's figure ours is
    return f"{mine / best:.2f}× (lower is better)" if best not in (0, float("inf")) else "—"


def print_table(names, results, args) -> None:
    header = ["workload", *names]
    ours = [n for n in names if n.startswith("xep207")]
    plain = [n for n in names if n in ("Prosody", "ejabberd")]
    archiving = [n for n in names if n.endswith("+MAM")]
    for mine in ours:
        if plain:
            header.append(f"{mine[7:]} / best peer")
        if archiving:
            header.append(f"{mine[7:]} / best +MAM peer")
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, title, _function, higher in WORKLOADS:
        if name not in args.workloads:
            continue
        row = [title.format(rate=args.rate, sessions=args.sessions)]
        row += [_figure(results.get((server, name), [])) for server in names]
        for mine in ours:
            if plain:
                row.append(_ratio(results.get((mine, name)), [results.get((p, name)) for p in plain], higher))
            if archiving:
                row.append(_ratio(results.get((mine, name)), [results.get((p, name)) for p in archiving], higher))
        print("| " + " | ".join(row) + " |")
    print("\nRanges are min–max over rounds; ratios compare medians. Configuration:")
    for note in servers_module.CONFIG_NOTES:
        print(f"- {note}")
    print("- Load generator: one Python/Twisted process (bench/common.py) on the same cores; "
          "its own speed caps the fastest servers' figures.")


async def main(args) -> None:
    chosen = [SERVERS[name] for name in args.servers]
    if args.baseline:  # the same xep207 from another checkout, as one more server in the rotation
        chosen.append(lambda: servers_module.Xep207("sqlite", root=args.baseline, label=" (baseline)"))
    probe = [factory() for factory in chosen]
    available, names = [], []
    for factory, server in zip(chosen, probe):
        if server.available():
            available.append(factory)
            names.append(server.name)
        else:
            print(f"{server.name}: not installed, left out")
        server.stop()  # only removes its empty temp dir
    results: dict = {}
    for round_number in range(args.rounds):
        shift = round_number % len(available)
        order = available[shift:] + available[:shift]
        print(f"round {round_number + 1}/{args.rounds}", flush=True)
        for factory in order:
            server = factory()
            try:
                await run_server(server, args, results)
            except Exception as exc:
                print(f"  {server.name}: FAILED {exc!r}", flush=True)
                if args.verbose:
                    traceback.print_exc()
    print_table(names, results, args)
    await defer.succeed(None)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each throughput/latency window")
    parser.add_argument("--rate", type=float, default=5000, help="one-to-one msgs/s for the latency workload")
    parser.add_argument("--sessions", type=int, default=1000, help="idle sessions for the memory workload")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated: " + ",".join(SERVERS))
    parser.add_argument("--workloads", default=",".join(w[0] for w in WORKLOADS if w[2]),
                        help="comma-separated: " + ",".join(w[0] for w in WORKLOADS if w[2]))
    parser.add_argument("--baseline", metavar="DIR",
                        help="also run xep207 (SQLite) from this checkout, e.g. before a change")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    args.workloads = [w for w in args.workloads.split(",") if w]
    unknown = [s for s in args.servers if s not in SERVERS] + [w for w in args.workloads
                                                               if w not in {x[0] for x in WORKLOADS if x[2]}]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    if "memory" in args.workloads:
        args.workloads.append("memory_tls")  # measured by the same workload
    return args


if __name__ == "__main__":
    arguments = parse()
    run(lambda: main(arguments))
