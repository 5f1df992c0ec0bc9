"""The database goes away under a running server (a lock another process holds,
PostgreSQL stopped): clients get clear errors, never silence, and the server
works again once the database is back."""

import os
import sqlite3
import unittest

from tests.server_helpers import DOMAIN, ServerTestCase, plain_auth

ROSTER_GET = "<iq type='get' id='{id}'><query xmlns='jabber:iq:roster'/></iq>"


def is_iq(iq_id):
    return lambda e: e.name == "iq" and e.getAttribute("id") == iq_id


def is_message(message_id):
    return lambda e: e.name == "message" and e.getAttribute("id") == message_id


def error_of(stanza):
    return next(c for c in stanza.elements() if c.name == "error")


def condition(stanza) -> str:
    return next(c.name for c in error_of(stanza).elements() if c.name != "text")


class OutageScenario:
    """A logged-in session and new logins, while ``hold()`` keeps the database
    unusable and after ``release()``."""

    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def test_clear_errors_while_unavailable_then_recovers(self):
        await self.start_server()
        alice = await self.connect()
        await alice.login("alice")
        bob = await self.connect()
        await bob.login("bob")
        bob.send("<presence/>")
        await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == bob.jid)

        await self.hold()
        try:
            alice.send(ROSTER_GET.format(id="r1"))
            answer = await alice.wait_for(is_iq("r1"), timeout=20)
            self.assertEqual(answer["type"], "error")
            self.assertEqual(condition(answer), "internal-server-error")
            self.assertEqual(error_of(answer)["type"], "wait")

            alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='m1'><body>lost?</body></message>")
            bounced = await alice.wait_for(is_message("m1"), timeout=20)
            self.assertEqual((bounced["type"], condition(bounced)), ("error", "internal-server-error"))

            newcomer = await self.connect()
            newcomer.header()
            await newcomer.expect("</stream:features>")
            newcomer.send(plain_auth("bob"))
            failure = await newcomer.expect("</failure>", timeout=20)
            self.assertIn(b"<temporary-auth-failure", failure[failure.rfind(b"<failure"):])
        finally:
            await self.release()

        # Back to normal: a login, a roster get, a message.
        again = await self.connect()
        await again.login("bob", resource="again")
        again.send(ROSTER_GET.format(id="r2"))
        self.assertEqual((await again.wait_for(is_iq("r2"), timeout=20))["type"], "result")
        alice.send(f"<message to='bob@{DOMAIN}/raw' type='chat' id='m2'><body>back</body></message>")
        delivered = await bob.wait_for(is_message("m2"), timeout=20)
        self.assertEqual(str(next(c for c in delivered.elements() if c.name == "body")), "back")


class SQLiteLockedByAnotherProcess(OutageScenario, ServerTestCase):
    """``sqlite3 xep207.sqlite VACUUM`` (or any writer) holding the lock for
    longer than the busy timeout once killed the writer thread for good."""

    storage = "sqlite"

    def storage_url(self):
        self.path = os.path.join(self.data_dir, "xep207.sqlite")
        return f"sqlite:///{self.path}?busy_timeout=300"

    async def hold(self):
        self.locker = sqlite3.connect(self.path, isolation_level=None)
        self.locker.execute("BEGIN EXCLUSIVE")

    async def release(self):
        self.locker.execute("ROLLBACK")
        self.locker.close()


class PostgreSQLDown(OutageScenario, ServerTestCase):
    """PostgreSQL stopped under the server, then started again."""

    storage = "postgresql"

    def storage_url(self):
        from tests.pg import shared_cluster

        # This worker's own cluster: tests in one process run one at a time, and
        # release() starts it again whatever happens.
        self.cluster = shared_cluster()
        return self.cluster.new_database() + "?pool_timeout=1"

    async def hold(self):
        from twisted.internet import threads

        await threads.deferToThread(self.cluster.stop)

    async def release(self):
        from twisted.internet import threads

        await threads.deferToThread(self.cluster.start)



class SQLiteDiskFull(ServerTestCase):
    """The file system under the database fills up: a message that cannot be stored
    is answered ``internal-server-error``, the log names the problem without the
    body, and once space is back messages flow again."""

    storage = "sqlite"
    server_args = ("--no-tls", "--allow-plaintext-auth")
    BODY = "secret-words-" * 3000

    def storage_url(self):
        import subprocess

        self.mount = os.path.join(self.data_dir, "small")
        os.makedirs(self.mount)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", self.mount],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            raise unittest.SkipTest(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
        self.addCleanup(subprocess.run, ["umount", "-l", self.mount], capture_output=True)
        return "sqlite:///" + os.path.join(self.mount, "xep207.sqlite")

    def fill_disk(self):
        """Fill the file system to the last block; ``free_disk`` undoes it."""
        self.fillers = []
        self.addCleanup(self.free_disk)  # before the server stops: it writes on the way out
        for block in (65536, 512):
            path = os.path.join(self.mount, f"filler-{block}")
            try:
                with open(path, "wb") as f:
                    self.fillers.append(path)
                    while True:
                        f.write(b"\0" * block)
                        f.flush()
            except OSError:
                pass

    def free_disk(self):
        while self.fillers:
            os.remove(self.fillers.pop())

    async def test_disk_full_is_an_error_not_a_hang_and_no_body_is_logged(self):
        from twisted.logger import formatEvent, globalLogPublisher

        await self.start_server()
        alice = await self.connect()
        await alice.login("alice")
        bob = await self.connect()
        await bob.login("bob")
        bob.send("<presence/>")
        await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == bob.jid)
        logged = []

        def observe(event):
            logged.append(formatEvent(event) + str(event.get("log_failure", "")))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

        self.fill_disk()
        alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='full'><body>{self.BODY}</body></message>")
        bounced = await alice.wait_for(is_message("full"), timeout=20)
        self.assertEqual((bounced["type"], condition(bounced)), ("error", "internal-server-error"))
        self.assertTrue(any("database or disk is full" in line for line in logged), logged)
        self.assertFalse(any("secret-words" in line for line in logged), logged)

        self.free_disk()
        alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='again'><body>{self.BODY}</body></message>")
        delivered = await bob.wait_for(is_message("again"), timeout=20)
        self.assertIn("secret-words", str(next(c for c in delivered.elements() if c.name == "body")))
