"""Generated malformed and adversarial streams against a running ``twistd xep207``.

Hypothesis draws the input (mutations of valid stanzas, deep and wide trees,
bad UTF-8, bad JIDs, bad base64, zlib bombs); every example is a fresh
connection that sends it followed by a byte that is never valid XML (0xFF), so
that each one ends in a definite answer: the server must close the stream with
an RFC 6120 stream error and ``</stream:stream>``. A control session that logged
in first must answer a ping after every example; the server must log no
traceback; its RSS must stay under a bound at the end. Bounded
(``max_examples``, derandomized, no example database) so that it runs in a few
seconds in CI and does not flake.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import threading
import unittest
import zlib
from xml.sax.saxutils import quoteattr

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.peers import free_port, source_env, temp_dir, twistd

DOMAIN = "localhost"
PASSWORD = "fuzz-password"
HEADER = (f"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
          f"to='{DOMAIN}' version='1.0'>").encode()
SENTINEL = b"\xff"  # never valid in UTF-8: whatever came before, the parser must stop here
RFC6120_CONDITIONS = {
    "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone", "host-unknown",
    "improper-addressing", "internal-server-error", "invalid-from", "invalid-namespace", "invalid-xml",
    "not-authorized", "not-well-formed", "policy-violation", "remote-connection-failed", "reset",
    "resource-constraint", "restricted-xml", "see-other-host", "system-shutdown", "undefined-condition",
    "unsupported-encoding", "unsupported-feature", "unsupported-stanza-type", "unsupported-version",
}
RSS_GROWTH_BOUND_MB = 80

PRE_AUTH = [
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AG1hbGxvcnkAd3Jvbmc=</auth>",
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>"
    "biwsbj1tYWxsb3J5LHI9YWJjZGVmZ2g=</auth>",
    "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>=</response>",
    "<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    "<iq type='get' id='reg'><query xmlns='jabber:iq:register'/></iq>",
    "<iq type='set' id='reg2'><query xmlns='jabber:iq:register'><username>x</username>"
    "<password>y</password></query></iq>",
]
SESSION = [
    "<message to='control@localhost' type='chat' id='m1'><body>hi</body></message>",
    "<message to='control@localhost/ctl' id='m2'><body>direct</body><thread>t</thread></message>",
    "<presence><show>away</show><status>busy</status><priority>5</priority></presence>",
    "<presence to='control@localhost' type='subscribe'/>",
    "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
    "<iq type='set' id='r2'><query xmlns='jabber:iq:roster'><item jid='control@localhost' name='c'>"
    "<group>g</group></item></query></iq>",
    "<iq type='set' id='p1' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
    "<publish node='fuzz'><item id='i1'><entry xmlns='urn:example'>t</entry></item></publish></pubsub></iq>",
    "<iq type='get' id='p2' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
    "<items node='fuzz'/></pubsub></iq>",
    "<presence to='room@chat.localhost/nick'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
    "<message to='room@chat.localhost' type='groupchat'><body>x</body></message>",
    "<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
    "<iq type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
    "<iq type='get' id='a1'><query xmlns='urn:xmpp:mam:2'/></iq>",
]
INTERESTING = [b"<", b">", b"/>", b"</", b"'", b'"', b"&", b"&amp;", b"&#0;", b"<a>", b"xmlns='x'",
               b"xmlns:p='urn:p'", b"<p:a>", b"<![CDATA[", b"]]>", b"\xc0\x80", b"\xed\xa0\x80",
               b"\xf4\x90\x80\x80", b"\x00", b"\x01", b"</stream:stream>", b"<stream:stream>", b"=",
               b"@", b"/"]


@st.composite
def mutated(draw, corpus: list[str]) -> bytes:
    """A valid stanza with a few random edits (flips, insertions, deletions, copies, a cut)."""
    data = bytearray(draw(st.sampled_from(corpus)).encode())
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate"]))
        position = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            data[min(position, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[position:position] = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[position:position + draw(st.integers(1, 8))]
        elif kind == "duplicate":
            data[position:position] = data[position:position + draw(st.integers(1, 64))]
        else:
            del data[position:]
    return bytes(data)


@st.composite
def trees(draw) -> bytes:
    """Deep or wide element trees, closed or not, inside a stanza."""
    count = draw(st.integers(1, 30000))
    shape = draw(st.sampled_from(["deep", "wide", "deep-open", "wide-open"]))
    stanza = draw(st.sampled_from(["message", "iq", "presence"]))
    if shape.startswith("deep"):
        inner = "<a>" * count + ("" if shape.endswith("open") else "</a>" * count)
    else:
        inner = "<a x='1'/>" * count
    close = "" if shape.endswith("open") else f"</{stanza}>"
    return f"<{stanza} type='get' id='t'>{inner}{close}".encode()


def jids() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=40),
        st.text(alphabet="@/.a\u00e9\u0130\ufb01 \u200b", max_size=30),
        st.builds(lambda a, b, c: f"{a}@{b}/{c}", st.text(max_size=1100), st.text(max_size=20),
                  st.text(max_size=20)),
    )


@st.composite
def bad_jids(draw) -> bytes:
    jid = quoteattr(draw(jids()))
    template = draw(st.sampled_from([
        "<message to={jid}><body>x</body></message>",
        "<presence to={jid}/>",
        "<presence to={jid} type='subscribe'/>",
        "<iq type='get' id='j' to={jid}><ping xmlns='urn:xmpp:ping'/></iq>",
        "<iq type='set' id='j'><query xmlns='jabber:iq:roster'><item jid={jid}/></query></iq>",
        "<message from={jid} to='control@localhost'><body>x</body></message>",
    ]))
    return template.format(jid=jid).encode("utf-8", "surrogatepass")


@st.composite
def bad_base64(draw) -> bytes:
    text = draw(st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=!-_ \n\t.\u00e9", max_size=80))
    element = draw(st.sampled_from(["auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'",
                                    "auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'",
                                    "response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'"]))
    name = element.split(" ", 1)[0]
    return f"<{element}>{quoteattr(text)[1:-1]}</{name}>".encode()


@st.composite
def bad_utf8(draw) -> bytes:
    garbage = draw(st.binary(min_size=1, max_size=16).filter(lambda b: not _utf8(b)))
    where = draw(st.sampled_from(["text", "attribute", "name"]))
    if where == "text":
        return b"<message to='control@localhost'><body>" + garbage + b"</body></message>"
    if where == "attribute":
        return b"<message id='" + garbage + b"'/>"
    return b"<mess" + garbage + b"age/>"


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@st.composite
def zlib_payloads(draw) -> tuple[str, int, bytes]:
    """What a compressed stream carries: bombs (megabytes that deflate to
    kilobytes) described by kind and size, or junk sent as it is."""
    kind = draw(st.sampled_from(["spaces", "elements", "one-stanza", "junk"]))
    junk = draw(st.binary(min_size=1, max_size=256)) if kind == "junk" else b""
    return kind, draw(st.integers(1000, 20_000_000)), junk


def inflated(kind: str, size: int) -> bytes:
    if kind == "spaces":
        return b" " * size
    if kind == "elements":
        return b"<message>" + b"<a/>" * (size // 4)
    return b"<message><body>" + b"x" * size + b"</body></message>"


# The server and the control session --------------------------------------------------


class Control:
    """A logged-in session that must keep being served while the fuzz runs."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""
        self.count = 0
        login(self.sock, "control", resource="ctl")

    def ping(self) -> None:
        self.count += 1
        marker = f"id='ctl-{self.count}'".encode()
        self.sock.sendall(f"<iq type='get' id='ctl-{self.count}'><ping xmlns='urn:xmpp:ping'/></iq>".encode())
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "the control session was closed"
            self.buffer = self.buffer[-4096:] + chunk


def read_until(sock, marker: bytes, data: bytes = b"") -> bytes:
    while marker not in data:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"no {marker!r} in time: {data[-500:]!r}")
        if not chunk:
            raise AssertionError(f"closed before {marker!r}: {data[-500:]!r}")
        data += chunk
    return data


def login(sock, user: str, resource: str | None = "fuzz") -> None:
    """PLAIN, then bind ``resource`` (no resource: stop before binding)."""
    sock.sendall(HEADER)
    read_until(sock, b"</stream:features>")
    token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
    sock.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>".encode())
    read_until(sock, b"<success")
    sock.sendall(HEADER)
    read_until(sock, b"</stream:features>")
    if resource is None:
        return
    sock.sendall(f"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                 f"<resource>{resource}</resource></bind></iq>".encode())
    read_until(sock, b"</iq>")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class FuzzServer:
    def __init__(self, directory: str):
        storage = "sqlite:///" + os.path.join(directory, "xep207.sqlite")
        for user in ("control", "mallory"):
            subprocess.run([sys.executable, "-m", "xep207.admin", "--storage", storage, "--domain", DOMAIN,
                            "adduser", user], input=PASSWORD + "\n", text=True, capture_output=True,
                           check=True, env=source_env(), cwd=directory, timeout=60)
        self.port = free_port()
        self.process = twistd(["--storage", storage, "--data-dir", directory, "--c2s-port", str(self.port),
                               "--c2s-interfaces", "127.0.0.1", "--no-tls", "--allow-plaintext-auth",
                               "--auth-timeout", "10", "--max-auth-failures", "1000000",
                               "--max-account-auth-failures", "1000000", "--max-unauthenticated", "100"],
                              directory)
        self.process.wait_for(f"starting on {self.port}")
        self.log = LogReader(self.process)
        self.log.start()
        self.control = Control(self.port)
        self.control.ping()
        self.rss_before = rss_mb(self.process.popen.pid)
        self.examples = 0

    def run(self, payload: bytes, stage: str) -> None:
        """One example: a fresh connection in ``stage`` sends ``payload`` then the sentinel."""
        self.examples += 1
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            inflater = None
            received = b""
            if stage == "pre-auth":
                sock.sendall(HEADER)
                read_until(sock, b"</stream:features>")
            else:
                login(sock, "mallory", resource=None if stage == "compressed" else "fuzz")
            if stage == "compressed":  # XEP-0138: after authentication, before binding
                sock.sendall(b"<compress xmlns='http://jabber.org/protocol/compress'>"
                             b"<method>zlib</method></compress>")
                answer = read_until(sock, b"<compressed")
                answer = read_until(sock, b"/>", answer[answer.index(b"<compressed"):])
                received = answer[answer.index(b"/>") + 2:]  # compressed from here on
                deflater, inflater = zlib.compressobj(), zlib.decompressobj()
                sock.sendall(deflater.compress(HEADER) + deflater.flush(zlib.Z_SYNC_FLUSH))
                kind, size, junk = payload
                if kind == "junk":  # inside the zlib stream: bad-format, or whatever it inflates to
                    wire = junk + deflater.compress(SENTINEL) + deflater.flush(zlib.Z_SYNC_FLUSH)
                else:
                    wire = deflater.compress(inflated(kind, size) + SENTINEL)
                    wire += deflater.flush(zlib.Z_SYNC_FLUSH)
            else:
                wire = payload + SENTINEL
            try:
                sock.sendall(wire)
            except (BrokenPipeError, ConnectionResetError):
                pass  # it already answered and left: what it said is what we check
            while True:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                except socket.timeout:
                    raise AssertionError(f"no answer within 30 s to {payload[:300]!r}: {received[-500:]!r}")
                if not chunk:
                    break
                received += chunk
        text = received.decode("utf-8", "replace")
        if inflater is not None:
            try:
                text = inflater.decompress(received).decode("utf-8", "replace")
            except zlib.error as exc:
                raise AssertionError(f"undecodable compressed answer: {exc}")
        conditions = set(re.findall(r"<([a-z-]+) xmlns='urn:ietf:params:xml:ns:xmpp-streams'", text))
        conditions -= {"text"}
        assert conditions <= RFC6120_CONDITIONS, (conditions, payload[:300])
        assert conditions, f"closed without a stream error: {text[-400:]!r} after {payload[:300]!r}"
        assert text.rstrip().endswith("</stream:stream>"), (text[-400:], payload[:300])
        self.control.ping()


class LogReader(threading.Thread):
    """Reads the server's log as it comes: a full pipe would stall the server."""

    def __init__(self, process):
        super().__init__(daemon=True)
        self.process = process
        self.lines: list[str] = []

    def run(self):
        # The pipe is binary (tests/peers.py reads it unbuffered): decode per line.
        for line in self.process.popen.stdout:
            self.lines.append(line.decode("utf-8", "replace") if isinstance(line, bytes) else line)

    def tracebacks(self) -> list[str]:
        starts = [i for i, line in enumerate(self.lines) if "Traceback (most recent call last)" in line]
        return ["".join(self.lines[max(0, i - 1):i + 40]) for i in starts]


CAMPAIGNS = [  # (name, strategy, stage, examples)
    ("mutated negotiation", mutated(PRE_AUTH), "pre-auth", 50),
    ("mutated stanzas", mutated(SESSION), "session", 50),
    ("deep and wide trees before auth", trees(), "pre-auth", 15),
    ("deep and wide trees", trees(), "session", 15),
    ("bad JIDs", bad_jids(), "session", 40),
    ("bad UTF-8 before auth", bad_utf8(), "pre-auth", 15),
    ("bad UTF-8", bad_utf8(), "session", 15),
    ("bad base64", bad_base64(), "pre-auth", 30),
    ("zlib bombs and junk", zlib_payloads(), "compressed", 20),
]


class GeneratedStreams(unittest.TestCase):
    def test_generated_adversarial_streams(self):
        server = FuzzServer(temp_dir(self))
        self.addCleanup(server.process.stop)
        self.addCleanup(server.control.sock.close)
        for name, strategy, stage, examples in CAMPAIGNS:
            # No shrinking: a failure is reported as drawn, and CI stays bounded.
            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(payload=strategy)
            def campaign(payload):
                server.run(payload, stage)

            campaign()
        server.control.ping()
        grown = rss_mb(server.process.popen.pid) - server.rss_before
        self.assertLess(grown, RSS_GROWTH_BOUND_MB,
                        f"RSS grew by {grown:.0f} MB over {server.examples} examples")
        with open(os.environ.get("FUZZ_SERVER_LOG", os.devnull), "w") as f:
            f.writelines(server.log.lines)
        tracebacks = server.log.tracebacks()
        self.assertFalse(tracebacks, f"{len(tracebacks)} tracebacks logged; the first:\n{tracebacks[0]}"
                         if tracebacks else "")
