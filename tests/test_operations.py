"""What operators see: the log of a real twistd (JSON, accounts and addresses named,
no message bodies, no per-connection noise) and the Prometheus endpoint."""

import base64
import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys

import urllib.request

from twisted.internet import threads
from twisted.trial import unittest

from tests.peers import free_port, source_env, temp_dir, twistd
from tests.server_helpers import DOMAIN, ServerTestCase, plain_auth

HEADER = ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
          "to='localhost' version='1.0'>")
SECRET_BODY = "the-body-nobody-may-log"


class Conversation:
    """A blocking raw client for a server in another process."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)

    def say(self, data: str, until: bytes) -> bytes:
        self.sock.sendall(data.encode())
        received = b""
        while until not in received:
            chunk = self.sock.recv(65536)
            assert chunk, received
            received += chunk
        return received

    def login(self, user, password):
        self.say(HEADER, b"</stream:features>")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        answer = self.say(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>",
                          b"/>")
        return answer

    def bind(self):
        self.say(HEADER, b"</stream:features>")
        self.say("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>", b"</iq>")

    def close(self):
        self.sock.close()


class TwistdLog(unittest.TestCase):
    def test_json_log_names_accounts_and_addresses_never_bodies(self):
        directory = temp_dir(self)
        database = os.path.join(directory, "xep207.sqlite")
        ctl = subprocess.run([sys.executable, "-m", "xep207.admin", "--storage", f"sqlite:///{database}",
                              "--domain", DOMAIN, "adduser", "juliet"], input="juliet-password\n",
                             capture_output=True, text=True, cwd=directory, env=source_env(), timeout=60)
        self.assertEqual(ctl.returncode, 0, ctl.stderr)
        port = free_port()
        server = twistd(["--storage", f"sqlite:///{database}?busy_timeout=100", "--data-dir", directory,
                         "--c2s-port", str(port), "--c2s-interfaces", "127.0.0.1", "--tls-optional",
                         "--allow-plaintext-auth", "--registration", "--log-format", "json"], directory)
        self.addCleanup(server.stop)
        server.wait_for(f"starting on {port}")

        wrong = Conversation(port)
        self.assertIn(b"not-authorized", wrong.login("juliet", "not-her-password"))
        wrong.close()

        juliet = Conversation(port)
        self.assertIn(b"<success", juliet.login("juliet", "juliet-password"))
        juliet.bind()
        # A routing failure (the database locked by another process) with a body.
        locker = sqlite3.connect(database, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            bounced = juliet.say(f"<message to='romeo@{DOMAIN}' id='m1' type='chat'><body>{SECRET_BODY}"
                                 "</body></message>", b"</message>")
            self.assertIn(b"internal-server-error", bounced)
        finally:
            locker.execute("ROLLBACK")
            locker.close()

        newcomer = Conversation(port)
        newcomer.say(HEADER, b"</stream:features>")
        registered = newcomer.say("<iq type='set' id='r'><query xmlns='jabber:iq:register'><username>newbie"
                                  "</username><password>newbie-password</password></query></iq>", b"'r'")
        self.assertIn(b"type='result'", registered)
        newcomer.close()
        leaving = Conversation(port)
        self.assertIn(b"<success", leaving.login("newbie", "newbie-password"))
        leaving.bind()
        gone = leaving.say("<iq type='set' id='bye'><query xmlns='jabber:iq:register'><remove/></query></iq>",
                           b"account removed")
        self.assertIn(b"<stream:error>", gone)
        leaving.close()

        # STARTTLS with Twisted's legacy-context warning once printed per connection.
        secure = Conversation(port)
        secure.say(HEADER, b"</stream:features>")
        secure.say("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", b"<proceed")
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        secure.sock = context.wrap_socket(secure.sock, server_hostname="localhost")
        secure.say(HEADER, b"</stream:features>")
        secure.close()
        juliet.close()

        server.wait_for("deleted account newbie@localhost")
        os.killpg(server.popen.pid, signal.SIGTERM)
        server.wait_exit()
        events = [json.loads(line) for line in server.lines if line.strip()]  # every line is JSON
        texts = [e.get("log_text") or e.get("log_format", "") for e in events]
        everything = "\n".join(server.lines)

        def logged(*parts):
            return any(all(p in text for p in parts) for text in texts)

        self.assertTrue(logged("login juliet@localhost from 127.0.0.1"), texts)
        self.assertTrue(logged("failed login", "'juliet'", "127.0.0.1", "not-authorized"), texts)
        self.assertTrue(logged("registered account newbie@localhost", "127.0.0.1"), texts)
        self.assertTrue(logged("deleted account newbie@localhost", "127.0.0.1"), texts)
        self.assertTrue(logged("routing failed for message", "id=m1", "database is locked"), texts)
        for secret in (SECRET_BODY, "juliet-password", "not-her-password", "newbie-password"):
            self.assertNotIn(secret, everything)
        self.assertNotIn("Starting factory", everything)
        self.assertNotIn("LegacyContextFactoryWarning", everything)
        self.assertNotIn("Site starting", everything)  # no metrics endpoint unless asked for


class PrometheusEndpoint(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth", "--metrics-port", "0")

    async def scrape(self) -> dict:
        from prometheus_client.parser import text_string_to_metric_families

        def get():
            with urllib.request.urlopen(f"http://127.0.0.1:{self.server.metrics.port}/metrics",
                                        timeout=20) as response:
                return response.status, response.read().decode()

        status, text = await threads.deferToThread(get)
        self.assertEqual(status, 200)
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    async def test_counters_move_with_real_traffic(self):
        await self.start_server()
        self.assertEqual(self.server.metrics.listener._port.getHost().host, "127.0.0.1")
        before = await self.scrape()

        def delta(after, name, **labels):
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0) - before.get(key, 0)

        alice = await self.connect()
        await alice.login("alice")
        bob = await self.connect()
        await bob.login("bob")
        bob.send("<presence/>")
        await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == bob.jid)
        alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='m'><body>hi</body></message>")
        await bob.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "m")
        intruder = await self.connect()
        intruder.header()
        await intruder.expect("</stream:features>")
        intruder.send(plain_auth("alice", "wrong-password"))
        await intruder.expect("</failure>")

        after = await self.scrape()
        self.assertEqual(after[("xep207_sessions", ())], before[("xep207_sessions", ())] + 2)
        self.assertEqual(delta(after, "xep207_logins_total"), 2)
        self.assertEqual(delta(after, "xep207_auth_failures_total", condition="not-authorized"), 1)
        self.assertEqual(delta(after, "xep207_stanzas_received_total", kind="message"), 1)
        self.assertGreaterEqual(delta(after, "xep207_stanzas_sent_total", kind="message"), 1)
        self.assertGreaterEqual(delta(after, "xep207_stanzas_received_total", kind="presence"), 1)
        self.assertGreaterEqual(delta(after, "xep207_storage_operation_seconds_count", operation="get_account"),
                                3)
        self.assertIn(("xep207_queue_depth", (("queue", "routing"),)), after)

    async def test_off_by_default(self):
        self.server_args = ("--no-tls",)
        await self.start_server()
        self.assertIsNone(self.server.metrics)


class PrometheusOnSQLite(ServerTestCase):
    storage = "sqlite"
    server_args = ("--no-tls", "--allow-plaintext-auth", "--metrics-port", "0")
    scrape = PrometheusEndpoint.scrape

    async def test_offline_queue_gauges(self):
        await self.start_server()
        await self.server.metrics.collector.refresh_offline()
        before = await self.scrape()
        self.assertEqual(before[("xep207_offline_accounts", ())], 0)
        alice = await self.connect()
        await alice.login("alice")
        alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='m'><body>while you were out</body></message>")
        alice.send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
        await alice.wait_for(lambda e: e.getAttribute("id") == "ping")
        await self.server.quiesce()
        await self.server.metrics.collector.refresh_offline()
        after = await self.scrape()
        self.assertEqual(after[("xep207_offline_accounts", ())], 1)
        self.assertEqual(after[("xep207_offline_conversations", ())], 1)
        self.assertGreaterEqual(after[("xep207_queue_depth", (("queue", "storage"),))], 0)
