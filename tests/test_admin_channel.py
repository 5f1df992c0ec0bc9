"""xep207ctl against a running ``twistd xep207``: through the admin socket,
changes take effect at once (sessions end, contacts are told)."""

import os
import socket
import stat
import subprocess
import sys

from twisted.trial import unittest

from tests.peers import free_port, source_env, temp_dir, twistd
from tests.test_operations import Conversation

CTL = [sys.executable, "-m", "xep207.admin"]


class RunningServer(unittest.TestCase):
    def setUp(self):
        self.dir = temp_dir(self)
        self.config = os.path.join(self.dir, "xep207.toml")
        self.port = free_port()
        with open(self.config, "w") as f:
            f.write(f'domain = "localhost"\ndata-dir = "data"\nc2s-port = {self.port}\n'
                    'c2s-interfaces = "127.0.0.1"\nno-tls = true\nallow-plaintext-auth = true\n')

    def ctl(self, *args, stdin=None):
        return subprocess.run([*CTL, "--config", self.config, *args], capture_output=True, text=True,
                              input=stdin, cwd=temp_dir(self), env=source_env(), timeout=60)

    def start(self):
        server = twistd(["--config", self.config], self.dir)
        self.addCleanup(server.stop)
        # Started after the client port (services start in order): both are up.
        server.wait_for("admin socket for xep207ctl at")
        return server

    def online(self, user, password, resource):
        client = Conversation(self.port)
        self.assertIn(b"<success", client.login(user, password))
        client.say(HEADER, b"</stream:features>")
        client.say(f"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}"
                   "</resource></bind></iq>", b"</iq>")
        self.addCleanup(client.close)
        return client

    def test_deluser_passwd_kick_take_effect_at_once(self):
        self.assertEqual(self.ctl("adduser", "juliet", stdin="juliet-password\n").returncode, 0)  # direct
        self.start()
        sock = os.path.join(self.dir, "data", "admin.sock")
        self.assertTrue(stat.S_ISSOCK(os.stat(sock).st_mode))
        self.assertEqual(os.stat(sock).st_mode & 0o777, 0o600)
        added = self.ctl("adduser", "romeo", stdin="romeo-password\n")  # through the server
        self.assertEqual(added.returncode, 0, added.stderr)

        juliet = self.online("juliet", "juliet-password", "balcony")
        romeo = self.online("romeo", "romeo-password", "garden")
        # Romeo is available first, and juliet answers his request once it has
        # reached her (not a pre-approval racing it): her presence reaches him then.
        romeo.say("<presence/>", b"romeo@localhost/garden")
        romeo.say("<presence to='juliet@localhost' type='subscribe'/>", b"")
        juliet.say("<presence/>", b"subscribe")
        juliet.say("<presence to='romeo@localhost' type='subscribed'/>", b"")
        romeo.say("", b"juliet@localhost/balcony")  # he sees her

        listed = self.ctl("sessions")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertEqual([line.split("\t")[0] for line in listed.stdout.splitlines()],
                         ["juliet@localhost/balcony", "romeo@localhost/garden"])
        self.assertIn("available", listed.stdout)

        deleted = self.ctl("deluser", "juliet")
        self.assertEqual(deleted.returncode, 0, deleted.stderr)
        gone = juliet.say("", b"</stream:stream>")
        self.assertIn(b"<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", gone)
        told = romeo.say("", b"unsubscribed")
        self.assertRegex(told, rb"<presence to=.romeo@localhost/garden. from=.juliet@localhost/balcony. "
                               rb"type=.unavailable./>")
        self.assertEqual(self.ctl("list").stdout.split(), ["romeo@localhost"])

        changed = self.ctl("passwd", "romeo", stdin="romeo-new-password\n")
        self.assertEqual(changed.returncode, 0, changed.stderr)
        self.assertIn(b"<reset xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", romeo.say("", b"</stream:stream>"))
        self.assertIn(b"not-authorized", Conversation(self.port).login("romeo", "romeo-password"))
        again = self.online("romeo", "romeo-new-password", "again")
        kicked = self.ctl("kick", "romeo@localhost/again")
        self.assertEqual((kicked.returncode, kicked.stdout.strip()), (0, "ended 1 sessions of romeo@localhost/again"))
        self.assertIn(b"<policy-violation", again.say("", b"</stream:stream>"))
        self.assertEqual(self.ctl("sessions").stdout, "")

    async def test_refusals_over_the_socket(self):
        """The AMP commands' errors, as xep207ctl gets them (no process per call)."""
        from twisted.internet import endpoints, reactor
        from twisted.protocols import amp

        from xep207.server import admin_channel as ac
        from xep207.server.accounts import AccountError

        self.start()
        endpoint = endpoints.UNIXClientEndpoint(reactor, os.path.join(self.dir, "data", "admin.sock"))
        channel = await endpoints.connectProtocol(endpoint, amp.AMP())
        self.addCleanup(channel.transport.loseConnection)
        self.assertEqual(await channel.callRemote(ac.AddUser, jid="romeo", password="romeo-password"),
                         {"jid": "romeo@localhost"})
        refused = [(ac.AddUser, dict(jid="romeo", password="other-password"), "exists"),
                   (ac.AddUser, dict(jid="tybalt", password="short"), "at least"),
                   (ac.AddUser, dict(jid="tybalt@elsewhere.example", password="tybalt-password"), "not an account"),
                   (ac.AddUser, dict(jid="a@b@c", password="tybalt-password"), "invalid"),
                   (ac.Passwd, dict(jid="ghost", password="ghost-password"), "no account"),
                   (ac.DelUser, dict(jid="ghost"), "no account"),
                   (ac.Kick, dict(jid="a@b@c"), "invalid")]
        for command, arguments, text in refused:
            with self.assertRaises(AccountError) as caught:
                await channel.callRemote(command, **arguments)
            self.assertIn(text, str(caught.exception), (command, arguments))
        self.assertEqual(await channel.callRemote(ac.ListUsers), {"jids": ["romeo@localhost"]})
        self.assertEqual(await channel.callRemote(ac.ListUsers, after="romeo@localhost"), {"jids": []})
        self.assertEqual(await channel.callRemote(ac.Sessions), {"sessions": []})
        self.assertEqual(await channel.callRemote(ac.Kick, jid="romeo"), {"ended": 0})

    def test_without_the_server_storage_is_changed_directly(self):
        self.assertEqual(self.ctl("adduser", "juliet", stdin="juliet-password\n").returncode, 0)
        path = os.path.join(self.dir, "data", "admin.sock")
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)  # what a killed server leaves: bound, nobody listening (connections refused)
        stale.close()
        self.assertEqual(self.ctl("list").stdout.split(), ["juliet@localhost"])  # a stale socket is ignored
        for command in ("sessions", "kick juliet"):
            out = self.ctl(*command.split())
            self.assertEqual(out.returncode, 1)
            self.assertIn("no server is running", out.stderr)

    def test_a_running_server_without_its_socket_is_not_bypassed(self):
        from xep207.startup import ExclusiveLock

        data = os.path.join(self.dir, "data")
        os.makedirs(data)
        lock = ExclusiveLock(os.path.join(data, "xep207.lock"), "test")  # as a running server holds it
        self.addCleanup(lock.release)
        out = self.ctl("adduser", "juliet", stdin="juliet-password\n")
        self.assertEqual(out.returncode, 1)
        self.assertIn("admin socket does not answer", out.stderr)
        self.assertFalse(os.path.exists(os.path.join(data, "xep207.sqlite")))


HEADER = ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
          "to='localhost' version='1.0'>")
