"""Soak: mixed traffic against a twistd server that is ``kill -9``ed and restarted.

Clients (one process, Twisted) send one-to-one messages, groupchat messages and
presence changes, and now and then lose their connection (an abort); each uses XEP-0198 (resume where possible) and, when a
resumption fails (after a crash the server remembers no session), does what
real clients do: binds afresh, sends its unacknowledged stanzas again and
catches up with XEP-0313 from shortly before it lost the connection.

Reported: one-to-one messages accepted (acknowledged by the server),
delivered (once per key, by stream or by MAM catch-up), duplicated (a key
received again on the stream), bounced (an error came back: the sender knows),
lost (accepted, never delivered and never bounced: must be 0);
groupchat and presence counts; the server's RSS over time.

    python bench/soak.py [--minutes 10] [--users 8] [--kill-every 60]
                         [--drop-every 5]

A benchmark, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque

from twisted.internet import defer, protocol, reactor, task
from twisted.words.xish import domish

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import DOMAIN, LIMITS_OFF, PASSWORD, ROOT, create_accounts, free_port, rss_kib  # noqa: E402

NS_SM = "urn:xmpp:sm:3"
NS_MAM = "urn:xmpp:mam:2"
ROOM = f"soak@chat.{DOMAIN}"
KEY = re.compile(r"soak (\S+)")


class Server:
    """twistd on fixed ports and storage, so that a restart is the same server."""

    def __init__(self, users):
        self.directory = tempfile.mkdtemp(prefix="xep207-soak-")
        self.storage = "sqlite:///" + os.path.join(self.directory, "xep207.sqlite")
        self.port = free_port()
        create_accounts(self.storage, users, subscribe_to=users[0])
        self.popen = None
        self.kills = 0

    def start(self):
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                   "--logfile", os.path.join(self.directory, "twistd.log"), "--pidfile", "", "xep207",
                   "--domain", DOMAIN, "--data-dir", self.directory, "--storage", self.storage,
                   "--c2s-port", str(self.port), "--c2s-interfaces", "127.0.0.1", "--c2s-direct-tls-port", "0",
                   "--no-tls", "--allow-plaintext-auth", *LIMITS_OFF]
        self.popen = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=ROOT), cwd=self.directory)

    def up(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    def kill(self):
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        self.kills += 1

    def stop(self):
        self.popen.terminate()
        self.popen.wait(60)


class Stats:
    def __init__(self):
        self.accepted: set[str] = set()
        self.sent = 0
        self.received: Counter = Counter()  # key -> receptions on the stream
        self.recovered: set[str] = set()  # keys seen only through MAM catch-up
        self.bounced: Counter = Counter()  # key -> error answers (the server refused it)
        self.conditions: Counter = Counter()
        self.groupchat_sent = self.groupchat_received = 0
        self.presence_sent = self.presence_received = 0
        self.resumed = self.resume_failed = self.reconnects = 0
        self.overrun = 0  # acks for more than our window held (bookkeeping error: must be 0)
        self.uncounted = 0  # stanzas received after a bind, before <enabled/> (not in h)


class SoakClient(protocol.Protocol):
    """One account's connection(s): PLAIN, XEP-0198 both ways, resumption, MAM catch-up."""

    def __init__(self, user: str, peers: list[str], stats: Stats, server: Server):
        self.user, self.peers, self.stats, self.server = user, peers, stats, server
        self.jid = f"{user}@{DOMAIN}/soak"
        self.sm_id = None
        self.handled = 0  # stanzas from the server since <enabled/> or <resumed/> (our h)
        self.counting = False  # XEP-0198: h counts from <enabled/>, not from the bind
        self.acked = 0  # the server's last h for us
        self.unacked: deque = deque()  # (xml, key or None)
        self.sequence = 0
        self.connected = False
        self.ready = False  # bound or resumed: new stanzas may go (XEP-0198: none before <resumed/>)
        self.lost_at = None
        self.running = True

    # Connection -------------------------------------------------------------------

    def dial(self):
        protocol.ClientCreator(reactor, lambda: self).connectTCP("127.0.0.1", self.server.port).addErrback(
            lambda _: reactor.callLater(0.3, self.dial) if self.running else None)

    def connectionMade(self):
        self.state = "features"
        self.buffer = b""
        self.parser = None
        self.header()

    def header(self):
        self.transport.write(f"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/"
                             f"streams' to='{DOMAIN}' version='1.0'>".encode())

    def write(self, text: str):
        if self.connected:
            self.transport.write(text.encode())

    def connectionLost(self, reason):
        self.connected = self.ready = False
        self.lost_at = self.lost_at or time.time()
        if self.running:
            self.stats.reconnects += 1
            reactor.callLater(0.3, self.dial)

    def dataReceived(self, data):
        if self.parser is not None:
            self.parser.parse(data)
            return
        self.buffer += data
        if self.state == "features" and b"</stream:features>" in self.buffer:
            self.buffer = b""
            token = base64.b64encode(f"\0{self.user}\0{PASSWORD}".encode()).decode()
            self.state = "success"
            self.transport.write(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}"
                                 "</auth>".encode())
        elif self.state == "success" and b"<success" in self.buffer:
            self.buffer = b""
            self.state = "restarted"
            self.header()
        elif self.state == "restarted" and b"</stream:features>" in self.buffer:
            rest = self.buffer.split(b"</stream:features>", 1)[1]
            self.parser = domish.elementStream()
            self.parser.DocumentStartEvent = lambda root: None
            self.parser.ElementEvent = self.on_element
            self.parser.DocumentEndEvent = lambda: None
            self.parser.parse(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/"
                              b"streams'>" + rest)
            self.connected = True
            if self.sm_id:
                self.write(f"<resume xmlns='{NS_SM}' previd='{self.sm_id}' h='{self.handled}'/>")
            else:
                self.bind()

    def bind(self):
        self.write("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                   "<resource>soak</resource></bind></iq>")

    def after_bind(self):
        self.ready = True
        self.write(f"<enable xmlns='{NS_SM}' resume='true'/>")
        self.handled, self.counting = 0, False
        pending, self.unacked, self.acked = list(self.unacked), deque(), 0
        self.presence()
        # Every stanza after <enable/> is in the server's h, so in our window too: written
        # past it, the join made each <a h/> cover one more of our messages than it did.
        self.send_stanza(f"<presence to='{ROOM}/{self.user}'><x xmlns='http://jabber.org/protocol/muc'>"
                         "<history maxstanzas='0'/></x></presence>", None)
        self.track(None)
        for xml, key in pending:  # what the server never acknowledged: again (at least once)
            self.send_stanza(xml, key)
        if self.lost_at is not None:
            self.catch_up(self.lost_at - 60)
        self.lost_at = None

    def catch_up(self, since: float, after: str | None = None):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
        rsm = f"<set xmlns='http://jabber.org/protocol/rsm'><max>200</max>{f'<after>{after}</after>' if after else ''}</set>"
        self.send_stanza(f"<iq type='set' id='mam {since}'><query xmlns='{NS_MAM}'><x xmlns='jabber:x:data' "
                         f"type='submit'><field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>"
                         f"<field var='start'><value>{stamp}</value></field></x>{rsm}</query></iq>", None)

    # Stanzas -----------------------------------------------------------------------

    def on_element(self, element):
        if element.uri == NS_SM:
            return self.on_sm(element)
        if element.name == "iq" and element.getAttribute("id") == "bind":
            return self.after_bind()  # (before <enable/>: not counted)
        if element.name not in ("message", "presence", "iq"):
            return
        if self.counting:
            self.handled = (self.handled + 1) % 2 ** 32
        else:
            self.stats.uncounted += 1
        if element.name == "iq" and (element.getAttribute("id") or "").startswith("mam ") \
                and element.getAttribute("type") == "result":
            fin = next((c for c in element.elements() if c.name == "fin"), None)
            if fin is not None and fin.getAttribute("complete") != "true":
                last = next((str(c) for s in fin.elements() for c in s.elements() if c.name == "last"), None)
                if last:
                    self.catch_up(float(element["id"].split()[1]), after=last)
        elif element.name == "message":
            text = element.toXml()
            if "urn:xmpp:mam:2" in text:
                for key in KEY.findall(text):
                    if key not in self.stats.received:
                        self.stats.recovered.add(key)
            elif element.getAttribute("type") == "error":
                key = element.getAttribute("id") or ""
                condition = next((c.name for e in element.elements() if e.name == "error"
                                  for c in e.elements() if c.name != "text"), "?")
                if KEY.match(f"soak {key}"):
                    self.stats.bounced[key] += 1
                    self.stats.conditions[condition] += 1
            elif element.getAttribute("type") == "groupchat":
                self.stats.groupchat_received += 1
            else:
                for body in (c for c in element.elements() if c.name == "body"):
                    match = KEY.match(str(body))
                    if match:
                        self.stats.received[match.group(1)] += 1
        elif element.name == "presence":
            self.stats.presence_received += 1

    def on_sm(self, element):
        if element.name == "r":
            self.write(f"<a xmlns='{NS_SM}' h='{self.handled}'/>")
        elif element.name == "a":
            self.acknowledged(int(element["h"]))
        elif element.name == "enabled":
            # A stanza the server wrote between the bind and <enabled/> is not in its count:
            # counting it made our h one too high, and a resumption then skipped a message.
            self.sm_id = element.getAttribute("id")
            self.handled, self.counting = 0, True
        elif element.name == "resumed":
            self.stats.resumed += 1
            self.ready = True
            self.acknowledged(int(element["h"]))
            for xml, _ in list(self.unacked):
                self.write(xml)
            self.track(None)
            self.lost_at = None
        elif element.name == "failed" and self.sm_id:
            self.stats.resume_failed += 1
            self.sm_id = None
            self.bind()

    def acknowledged(self, h: int):
        if (h - self.acked) % 2 ** 32 > len(self.unacked):
            self.stats.overrun += 1  # the server handled more than we sent: our window is off
        for _ in range((h - self.acked) % 2 ** 32):
            if not self.unacked:
                break
            _, key = self.unacked.popleft()
            if key is not None:
                self.stats.accepted.add(key)
        self.acked = h

    def send_stanza(self, xml: str, key: str | None):
        self.unacked.append((xml, key))
        self.write(xml)
        if len(self.unacked) % 5 == 0:
            self.write(f"<r xmlns='{NS_SM}'/>")

    def track(self, _):
        self.write(f"<r xmlns='{NS_SM}'/>")

    # Traffic -----------------------------------------------------------------------

    def chat(self):
        if not self.ready or self.sm_id is None:
            return
        self.sequence += 1
        key = f"{self.user}:{self.sequence}"
        to = random.choice(self.peers)
        self.stats.sent += 1
        self.send_stanza(f"<message to='{to}@{DOMAIN}' type='chat' id='{key}'><body>soak {key}</body></message>",
                         key)

    def groupchat(self):
        if self.ready and self.sm_id is not None:
            self.stats.groupchat_sent += 1
            self.send_stanza(f"<message to='{ROOM}' type='groupchat'><body>room {self.user}</body></message>", None)

    def presence(self):
        if self.ready:
            self.stats.presence_sent += 1
            self.send_stanza(f"<presence><status>{random.random()}</status></presence>", None)


async def main(args):
    users = [f"soak{n}" for n in range(args.users)]
    server = Server(users)
    server.start()
    stats = Stats()
    while not server.up():
        await task.deferLater(reactor, 0.1, lambda: None)
    clients = [SoakClient(u, [p for p in users if p != u], stats, server) for u in users]
    for client in clients:
        client.dial()
    rss = []
    started = time.time()
    end = started + args.minutes * 60
    next_kill = started + args.kill_every
    tick = 0
    while time.time() < end:
        await task.deferLater(reactor, 0.1, lambda: None)
        tick += 1
        for client in clients:
            if random.random() < args.rate / 10:
                client.chat()
            if tick % 20 == 0 and random.random() < 0.5:
                client.groupchat()
            if tick % 50 == 0 and random.random() < 0.3:
                client.presence()
        if tick % 100 == 0 and server.popen.poll() is None:
            rss.append((round(time.time() - started), rss_kib(server.popen.pid)))
        if tick % int(args.drop_every * 10) == 0:  # a phone losing its network: resumption
            victim = random.choice(clients)
            if victim.connected:
                victim.transport.abortConnection()
        if time.time() >= next_kill:
            server.kill()
            server.start()
            next_kill = time.time() + args.kill_every
    # Drain: no more traffic; everyone asks for acks and waits.
    for _ in range(args.drain * 10):
        for client in clients:
            client.track(None)
        await task.deferLater(reactor, 0.1, lambda: None)
    for client in clients:
        client.running = False
        if client.connected:
            client.transport.loseConnection()
    server.stop()

    delivered = set(stats.received) | stats.recovered
    bounced = set(stats.bounced) - delivered
    lost = stats.accepted - delivered - bounced
    print(f"soak: {args.minutes} min, {args.users} users, kill -9 every {args.kill_every}s "
          f"({server.kills} kills)")
    print(f"  one-to-one sent              {stats.sent}")
    print(f"  accepted (acked by server)   {len(stats.accepted)}")
    print(f"  delivered (unique)           {len(delivered & stats.accepted)}")
    print(f"    on the stream              {len(set(stats.received) & stats.accepted)}")
    print(f"    only by MAM catch-up       {len(stats.recovered & stats.accepted)}")
    print(f"  duplicated (on the stream)   {sum(n - 1 for n in stats.received.values() if n > 1)}")
    print(f"  bounced (error answer)       {len(bounced)} {dict(stats.conditions)}")
    print(f"  lost                         {len(lost)}{' ' + str(sorted(lost)[:10]) if lost else ''}")
    print(f"  groupchat sent/received      {stats.groupchat_sent}/{stats.groupchat_received}")
    print(f"  presence sent/received       {stats.presence_sent}/{stats.presence_received}")
    print(f"  resumed / resume failed / reconnects  {stats.resumed}/{stats.resume_failed}/{stats.reconnects}")
    print(f"  acks beyond our window       {stats.overrun} (must be 0)")
    print(f"  stanzas before <enabled/>    {stats.uncounted} (not counted in h)")
    print("  server RSS (s, KiB)          " + " ".join(f"{t}:{kib}" for t, kib in rss))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--kill-every", type=float, default=60, help="seconds between kill -9s")
    parser.add_argument("--drop-every", type=float, default=5, help="seconds between dropped client connections")
    parser.add_argument("--rate", type=float, default=2, help="one-to-one messages per user per second")
    parser.add_argument("--drain", type=int, default=15, help="seconds of quiet at the end")
    options = parser.parse_args()
    task.react(lambda r: defer.ensureDeferred(main(options)))
