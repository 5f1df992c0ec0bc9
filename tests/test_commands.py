"""The commands users type: twistd xep207 (options, config file, plugin) and xep207ctl."""

import os
import subprocess
import sys
import sysconfig

from twisted.trial import unittest

from tests.peers import source_env, temp_dir

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
CTL = [sys.executable, "-m", "xep207.admin"]


def run(command, directory, stdin=None, env=None):
    return subprocess.run(command, capture_output=True, text=True, input=stdin, cwd=directory,
                          env=env or source_env(), timeout=60)


class Twistd(unittest.TestCase):
    def setUp(self):
        self.dir = temp_dir(self)

    def test_help_documents_every_option(self):
        out = run([*TWISTD, "xep207", "--help"], self.dir)
        self.assertEqual(out.returncode, 0, out.stderr)
        for option in ("--domain", "--storage", "--c2s-port", "--tls-cert", "--allow-plaintext-auth",
                       "--no-compression", "--registration", "--max-stanza-size", "--config", "--component"):
            self.assertIn(option, out.stdout)
        component = run([*TWISTD, "xep207", "component", "--help"], self.dir)
        self.assertIn("--secret-file", component.stdout)

    def test_bad_options_fail_clearly(self):
        cases = [(["--bogus"], "bogus"), (["--c2s-port", "x"], "c2s-port"),
                 (["--storage", "nosuch://x"], "nosuch"), (["--domain", "a@b"], "domain"),
                 (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "no such file"),
                 (["component"], "--jid is required"),
                 (["component", "--jid", "pubsub.example.org"], "secret")]
        for args, expected in cases:
            out = run([*TWISTD, "-n", "xep207", *args], self.dir)
            self.assertNotEqual(out.returncode, 0, args)
            self.assertIn(expected, out.stdout + out.stderr, args)

    def test_config_file_and_command_line_precedence(self):
        from xep207.tap import Options

        path = os.path.join(self.dir, "xep207.toml")
        with open(path, "w") as f:
            f.write('domain = "example.org"\nc2s-port = 5333\nregistration = true\n'
                    '[components]\n"gateway.example.org" = "s3cret"\n')
        options = Options()
        options.parseOptions(["--config", path, "--c2s-port", "5444", "--data-dir", self.dir])
        self.assertEqual((options["domain"], options["c2s-port"], options["registration"]),
                         ("example.org", 5444, True))
        self.assertEqual(options["components"], {"gateway.example.org": "s3cret"})
        self.assertEqual(options["pubsub-domain"], "pubsub.example.org")
        with open(path, "w") as f:
            f.write("colour = 'blue'\n")
        out = run([*TWISTD, "-n", "xep207", "--config", path], self.dir)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("unknown setting 'colour'", out.stdout + out.stderr)

    def installed_env(self):
        installed = os.path.join(sysconfig.get_paths()["purelib"], "twisted", "plugins", "xep207_plugin.py")
        if not os.path.exists(installed):
            if os.environ.get("CI") == "true":
                self.fail("the wheel did not install twisted/plugins/xep207_plugin.py")
            raise unittest.SkipTest("xep207 is not pip-installed in this interpreter")
        return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def test_plugin_is_listed_after_pip_install(self):
        out = run([*TWISTD, "--help"], self.dir, env=self.installed_env())
        self.assertIn("xep207", out.stdout)

    def test_installed_server_starts(self):
        """What `pip install . && twistd -n xep207` gives: every module shipped."""
        from tests.peers import Process, free_port

        port = free_port()
        server = Process([*TWISTD, "-n", "--pidfile=", "--logfile=-", "xep207", "--c2s-port", str(port),
                          "--c2s-interfaces", "127.0.0.1", "--c2s-direct-tls-port", "0"], env=self.installed_env(), cwd=self.dir)
        self.addCleanup(server.stop)
        server.wait_for(f"starting on {port}")
        self.assertTrue(os.path.exists(os.path.join(self.dir, "xep207-data", "tls", "localhost.crt")))


class AdminCommand(unittest.TestCase):
    def setUp(self):
        self.dir = temp_dir(self)
        self.storage = "sqlite:///" + os.path.join(self.dir, "db.sqlite")

    def ctl(self, *args, stdin=None):
        return run([*CTL, "--storage", self.storage, "--domain", "example.org", *args], self.dir, stdin)

    def test_accounts_lifecycle(self):
        self.assertEqual(self.ctl("adduser", "juliet", stdin="first-password\n").returncode, 0)
        self.assertEqual(self.ctl("adduser", "romeo@example.org", stdin="second-password\n").returncode, 0)
        duplicate = self.ctl("adduser", "juliet", stdin="another-password\n")
        self.assertEqual(duplicate.returncode, 1)
        self.assertIn("exists", duplicate.stderr)
        self.assertEqual(self.ctl("list").stdout.split(), ["juliet@example.org", "romeo@example.org"])
        self.assertEqual(self.ctl("passwd", "juliet", stdin="changed-password\n").returncode, 0)
        self.assertEqual(self.ctl("deluser", "romeo").returncode, 0)
        self.assertEqual(self.ctl("list").stdout.split(), ["juliet@example.org"])
        self.assertEqual(self.ctl("deluser", "ghost").returncode, 1)
        self.assertEqual(self.ctl("adduser", "x", stdin="short\n").returncode, 1)
        self.assertNotEqual(self.ctl("frobnicate").returncode, 0)
        # No plaintext password in storage.
        with open(os.path.join(self.dir, "db.sqlite"), "rb") as f:
            data = f.read()
        self.assertNotIn(b"changed-password", data)
        self.assertNotIn(b"first-password", data)

    def test_from_the_wrong_directory_creates_nothing(self):
        out = run([*CTL, "--domain", "example.org", "adduser", "juliet"], self.dir, "juliet-password\n")
        self.assertEqual(out.returncode, 1, out.stdout)
        self.assertIn("created nothing", out.stderr)
        self.assertIn(os.path.join(self.dir, "xep207-data", "xep207.sqlite"), out.stderr)
        self.assertEqual(os.listdir(self.dir), [])

    def test_finds_the_servers_data_through_its_config_file(self):
        server_dir = os.path.join(self.dir, "etc")
        os.makedirs(server_dir)
        config = os.path.join(server_dir, "xep207.toml")
        with open(config, "w") as f:
            f.write('domain = "example.org"\ndata-dir = "data"\n')
        elsewhere = temp_dir(self)
        added = run([*CTL, "--config", config, "adduser", "juliet"], elsewhere, "juliet-password\n")
        self.assertEqual(added.returncode, 0, added.stderr)
        self.assertIn("created a new database", added.stderr)
        database = os.path.join(server_dir, "data", "xep207.sqlite")
        self.assertEqual(os.stat(database).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.dirname(database)).st_mode & 0o777, 0o700)
        listed = run([*CTL, "--config", config, "list"], temp_dir(self))
        self.assertEqual(listed.stdout.split(), ["juliet@example.org"])
        self.assertEqual(os.listdir(elsewhere), [])

    def test_password_never_on_the_command_line(self):
        out = self.ctl("adduser", "juliet", "--password", "x")
        self.assertNotEqual(out.returncode, 0)




class ServerModeUnderTwistd(unittest.TestCase):
    """The real `twistd -n xep207`: a client connecting the moment the port is
    open finds a complete server (routes, storage) — it once did not."""

    def test_first_connection_is_fully_served(self):
        import base64
        import socket

        from tests.peers import free_port, twistd

        directory = temp_dir(self)
        storage = "sqlite:///" + os.path.join(directory, "xep207.sqlite")
        self.assertEqual(run([*CTL, "--storage", storage, "--domain", "localhost", "adduser", "juliet"],
                             directory, "juliet-password\n").returncode, 0)
        port = free_port()
        server = twistd(["--storage", storage, "--data-dir", directory, "--c2s-port", str(port),
                         "--c2s-interfaces", "127.0.0.1", "--no-tls", "--allow-plaintext-auth"], directory)
        self.addCleanup(server.stop)
        server.wait_for(f"starting on {port}")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            def converse(data: str, until: bytes) -> bytes:
                sock.sendall(data.encode())
                received = b""
                while until not in received:
                    chunk = sock.recv(65536)
                    self.assertTrue(chunk, received)
                    received += chunk
                return received

            header = ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                      "to='localhost' version='1.0'>")
            converse(header, b"</stream:features>")
            token = base64.b64encode(b"\0juliet\0juliet-password").decode()
            converse(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>", b"<success")
            converse(header, b"</stream:features>")
            converse("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>", b"</iq>")
            joined = converse("<presence to='room@chat.localhost/J'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
                              b"</subject>")
        self.assertIn(b"code='110'", joined)
        self.assertNotIn(b"remote-server-not-found", joined)
