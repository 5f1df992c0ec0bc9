"""Shared pieces of the benchmarks: a server in its own process, accounts, and a
lean XMPP client (Twisted) that can drive many connections from one process.

Benchmarks print numbers; they are not tests and assert nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from twisted.internet import defer, protocol, reactor, ssl
from twisted.words.xish import domish

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DOMAIN = "localhost"
PASSWORD = "bench-password"


# The abuse limits a public server needs (issue 12) are off for benchmarks, as
# the peers' shapers and limits are: one load generator on one address plays
# thousands of clients.
LIMITS_OFF = ["--max-auth-failures", "1000000", "--max-account-auth-failures", "1000000",
              "--max-unauthenticated", "1000000", "--c2s-rate", "0", "--max-registrations", "1000000",
              # no direct TLS: its fixed port 5223 made a second server on the box fail to start
              "--c2s-direct-tls-port", "0"]


def limits_off(root: str) -> list[str]:
    """``LIMITS_OFF``, minus what an older checkout (``--baseline``) does not know."""
    import subprocess

    help_text = subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                                "xep207", "--help"], capture_output=True, text=True,
                               env=dict(os.environ, PYTHONPATH=root)).stdout
    args = []
    for option, value in zip(LIMITS_OFF[::2], LIMITS_OFF[1::2]):
        if option in help_text:
            args += [option, value]
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (all its threads) has used so far: on a
    shared, noisy machine, server CPU per delivery varies far less than throughput."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values, fraction):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(title: str, **numbers) -> None:
    print(title)
    for key, value in numbers.items():
        print(f"  {key:<28} {value:.3f}" if isinstance(value, float) else f"  {key:<28} {value}")
    sys.stdout.flush()


class ServerProcess:
    """``twistd -n xep207`` from this checkout, on free ports, in a temp dir."""

    def __init__(self, *args, storage="sqlite", users=(), pg_url=None, subscribe_to=None):
        self.directory = tempfile.mkdtemp(prefix="xep207-bench-")
        self.port = free_port()
        if storage == "sqlite":
            self.storage = "sqlite:///" + os.path.join(self.directory, "xep207.sqlite")
        elif storage == "postgresql":
            self.storage = pg_url
        else:
            self.storage = "memory:"
        if users and storage != "memory":
            create_accounts(self.storage, users, subscribe_to)
        profile = os.environ.get("XEP207_BENCH_PROFILE")  # a file: the server runs under cProfile
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                   *([f"--profile={profile}", "--profiler=cprofile", "--savestats"] if profile else []),
                   "--logfile", os.path.join(self.directory, "twistd.log"),
                   "--pidfile", os.path.join(self.directory, "twistd.pid"), "xep207",
                   "--domain", DOMAIN, "--data-dir", self.directory, "--storage", self.storage,
                   "--c2s-port", str(self.port), "--c2s-interfaces", "127.0.0.1", "--c2s-direct-tls-port", "0",
                   *LIMITS_OFF, *args]
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.popen = subprocess.Popen(command, env=env, cwd=self.directory)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)  # waiting for a separate process to listen, outside any test
        raise RuntimeError("server did not start")

    def stop(self):
        self.popen.terminate()
        self.popen.wait(30)
        shutil.rmtree(self.directory, ignore_errors=True)


def create_accounts(storage_url: str, users, subscribe_to: str | None = None) -> None:
    """Accounts straight into storage (SCRAM keys, 4096 iterations), before the
    server starts; in a child process, since this one runs its own reactor later.
    ``subscribe_to``: every other user gets an approved subscription to that
    user's presence node."""
    code = subprocess.run([sys.executable, "-c", (
        "import sys; sys.path.insert(0, %r); from bench.common import _create_main; _create_main(%r, %r, %r)"
        % (ROOT, storage_url, list(users), subscribe_to))], env=dict(os.environ, PYTHONPATH=ROOT)).returncode
    if code:
        raise RuntimeError("could not create accounts")


def _create_main(storage_url, users, subscribe_to=None):
    from twisted.internet import task

    from xep207.pubsub.engine import PubSubEngine
    from xep207.server import accounts
    from xep207.storage import open_storage

    async def create(_):
        storage = open_storage(storage_url)
        await defer.maybeDeferred(storage.start)
        engine = PubSubEngine(storage, pep_domains=[DOMAIN])
        for user in users:
            await accounts.create_account(engine, f"{user}@{DOMAIN}", PASSWORD)
        if subscribe_to:
            from xep207.storage.records import Subscription

            for user in users:
                if user != subscribe_to:
                    await storage.set_subscription(Subscription(
                        f"{subscribe_to}@{DOMAIN}", "presence", f"{user}@{DOMAIN}", via="legacy"))
        await defer.maybeDeferred(storage.stop)

    task.react(lambda r: defer.ensureDeferred(create(r)))


class _Insecure(ssl.ClientContextFactory):
    """The benchmark server's certificate is self-signed."""


_SALTED: dict = {}  # (hash, password, salt, iterations) -> SaltedPassword, as real clients cache it


def _scram_client(user: str, password: str, algorithm: str = "sha256"):
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={user},r={nonce}"
    state = {}

    def first():
        return ("n,," + first_bare).encode()

    def final(challenge: bytes):
        attrs = dict(p.split("=", 1) for p in challenge.decode().split(","))
        salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
        key = (algorithm, password, salt, iterations)
        salted = _SALTED.get(key)
        if salted is None:
            salted = _SALTED[key] = hashlib.pbkdf2_hmac(algorithm, password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", algorithm).digest()
        stored = hashlib.new(algorithm, client_key).digest()
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
        message = f"{first_bare},{challenge.decode()},{without_proof}".encode()
        signature = hmac.new(stored, message, algorithm).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        state["done"] = True
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    return first, final


class Client(protocol.Protocol):
    """Connect, (STARTTLS), SASL (PLAIN, or SCRAM: ``scram=True`` is SCRAM-SHA-256, or name the
    mechanism, e.g. ``scram="SCRAM-SHA-1"``), bind; then stanzas go to ``on_stanza``
    (or raw bytes to ``on_data``). Any RFC 6120 server will do, not only xep207."""

    def __init__(self, user, resource, tls=False, scram=False, on_stanza=None, on_data=None):
        self.user, self.resource, self.tls, self.scram = user, resource, tls, scram
        self.on_stanza = on_stanza or (lambda element: None)
        self.on_data = on_data  # raw bytes after binding, for receivers that only count
        self.ready = defer.Deferred()
        self.jid = f"{user}@{DOMAIN}/{resource}"
        self._buffer = b""
        self._state = "features"
        self._parser = None

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)  # measure the server's latency, not the client's Nagle
        self._header()

    def _header(self):
        self.transport.write(f"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                             f"to='{DOMAIN}' version='1.0'>".encode())

    def send(self, text: str):
        self.transport.write(text.encode())

    def dataReceived(self, data):
        if self._parser is not None:
            if self.on_data is not None:
                self.on_data(data)
            else:
                self._parser.parse(data)
            return
        self._buffer += data
        while True:
            if self._state == "features" and b"</stream:features>" in self._buffer:
                features = self._buffer
                self._buffer = b""
                if self.tls and not getattr(self, "_tls_on", False):
                    if b"starttls" not in features:
                        self.ready.errback(RuntimeError("TLS asked for, but the server offers no STARTTLS"))
                        self.transport.loseConnection()
                        return
                    self._state = "proceed"
                    self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                elif b"<bind" in features:
                    self._state = "bound"
                    self.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                              f"<resource>{self.resource}</resource></bind></iq>")
                elif self.scram:
                    mechanism = self.scram if isinstance(self.scram, str) else "SCRAM-SHA-256"
                    algorithm = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}[mechanism]
                    self._first, self._final = _scram_client(self.user, PASSWORD, algorithm)
                    self._state = "challenge"
                    self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>"
                              f"{base64.b64encode(self._first()).decode()}</auth>")
                else:
                    self._state = "success"
                    token = base64.b64encode(f"\0{self.user}\0{PASSWORD}".encode()).decode()
                    self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
            elif self._state == "proceed" and b"<proceed" in self._buffer:
                self._buffer = b""
                self._tls_on = True
                self.transport.startTLS(_Insecure())
                self._state = "features"
                self._header()
            elif self._state == "challenge" and b"</challenge>" in self._buffer:
                text = self._buffer.split(b">", 1)[1].split(b"</challenge>")[0]
                self._buffer = b""
                self._state = "success"
                response = self._final(base64.b64decode(text))
                self.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                          f"{base64.b64encode(response).decode()}</response>")
            elif self._state == "success" and b"<success" in self._buffer:
                self._buffer = b""
                self._state = "features"
                self._header()
            elif self._state == "bound" and b"</iq>" in self._buffer:
                rest = self._buffer.split(b"</iq>", 1)[1]
                self._buffer = b""
                self._parser = domish.elementStream()
                self._parser.DocumentStartEvent = lambda root: None
                self._parser.ElementEvent = lambda element: self.on_stanza(element)
                self._parser.DocumentEndEvent = lambda: None
                self._parser.parse(b"<stream:stream xmlns='jabber:client' "
                                   b"xmlns:stream='http://etherx.jabber.org/streams'>" + rest)
                self.ready.callback(self)
                return
            elif b"<failure" in self._buffer or b"<stream:error" in self._buffer:
                if not self.ready.called:
                    self.ready.errback(RuntimeError(self._buffer[:300]))
                return
            else:
                return


async def connect(port, user, resource=None, **kwargs) -> Client:
    client = Client(user, resource or uuid.uuid4().hex[:8], **kwargs)
    await protocol.ClientCreator(reactor, lambda: client).connectTCP("127.0.0.1", port)
    return await client.ready


class Latencies:
    """Counts timestamped deliveries (``t=<unix time>`` in the stanza, the pattern's
    first group) as they arrive; ``done`` fires once ``expected`` have.

    With a second group in the pattern (a message's sequence number) and
    ``on_key``, each delivery also reports which message it belonged to, so a
    sender can count a fan-out message as complete once all copies arrived.
    """

    def __init__(self, pattern: bytes, expected: int, on_key=None):
        import re

        self.stamp = re.compile(pattern)
        self.expected = expected
        self.on_key = on_key
        self.values: list[float] = []
        self.last = 0.0
        self.done = defer.Deferred()

    def on_data(self, data: bytes) -> int:
        now = time.time()
        found = 0
        for match in self.stamp.finditer(data):
            self.values.append(now - float(match.group(1)))
            found += 1
            if self.on_key is not None:
                self.on_key(match.group(2))
        if found:
            self.last = now
        if len(self.values) >= self.expected and not self.done.called:
            self.done.callback(None)
        return found

    def report(self, title: str, elapsed: float) -> None:
        report(title, delivered=len(self.values), delivered_per_second=len(self.values) / elapsed,
               seconds=elapsed, latency_p50_ms=percentile(self.values, 0.50) * 1000,
               latency_p99_ms=percentile(self.values, 0.99) * 1000)


def run(main):
    """Run an async benchmark under the reactor."""
    from twisted.internet import task

    task.react(lambda r: defer.ensureDeferred(main()))


__all__ = ["ServerProcess", "Latencies", "connect", "report", "percentile", "rss_kib", "run", "statistics"]
