"""The full server end to end with a real client (slixmpp in a child process)."""

from tests.server_helpers import DOMAIN, PASSWORD, ServerTestCase


class SlixmppAgainstServer(ServerTestCase):
    async def test_login_ping_disco_and_routing(self):
        await self.start_server()
        report = await self.run_client("server_scenario.py", "127.0.0.1", self.port, DOMAIN, PASSWORD)
        self.assertEqual(report["compressed"], [True, True, True])
        self.assertEqual(report["mechanism"], "SCRAM-SHA-256")
        self.assertEqual(report["bound"], f"alice@{DOMAIN}/phone")
        self.assertTrue(report["ping"])
        self.assertEqual(report["identities"], ["server/im"])
        self.assertIn("urn:xmpp:ping", report["features"])
        self.assertIn("jabber:iq:roster", report["features"])
        self.assertEqual(report["items"], [f"chat.{DOMAIN}", f"pubsub.{DOMAIN}"])
        self.assertEqual(report["version"], "xep207")
        self.assertEqual(report["bare_delivery"], [[f"bob@{DOMAIN}/desk", "to bare"]] * 2)
        self.assertEqual(report["full_delivery"], "to laptop")
        self.assertEqual(report["reply"], "hi bob")
        self.assertEqual(report["unknown_user"], ["error", "service-unavailable"])
        self.assertEqual(report["iq_unknown_resource"], "service-unavailable")
        self.assertEqual(report["remote"], "remote-server-not-found")
        self.assertTrue(report["quiet"])


class MixedPresence(ServerTestCase):
    async def test_legacy_and_native_clients_subscribe_to_each_other(self):
        await self.start_server()
        report = await self.run_client("mixed_presence.py", "127.0.0.1", self.port, DOMAIN, PASSWORD)
        self.assertEqual(report["bob_subscription"], "pending")
        self.assertEqual(report["bob_approved"], ["subscription", "subscribed"])
        self.assertEqual(report["form"], ["http://jabber.org/protocol/pubsub#subscribe_authorization",
                                          "presence", f"alice@{DOMAIN}"])
        self.assertEqual(report["bob_sees"], [f"alice@{DOMAIN}", "presence", f"alice@{DOMAIN}/legacy", "Moping"])
        self.assertEqual(report["alice_sees"], [f"bob@{DOMAIN}/native", "Publishing"])
        self.assertEqual(report["alice_roster"], {f"bob@{DOMAIN}": "both"})


class SlixmppAgainstServerOnPostgreSQL(SlixmppAgainstServer):
    storage = "postgresql"


class MixedPresenceOnPostgreSQL(MixedPresence):
    storage = "postgresql"


class SlixmppAgainstServerOnSQLite(SlixmppAgainstServer):
    storage = "sqlite"


class GoSendxmppLogsIn(ServerTestCase):
    """A second real client, from Debian's packages: go-sendxmpp (STARTTLS, SASL)."""

    server_args = ("--tls-optional", "--allow-plaintext-auth")

    async def test_message_from_go_sendxmpp(self):
        import os

        from twisted.internet import utils

        from tests.peers import require
        from tests.test_presence_roster import is_result

        binary = require("go-sendxmpp")
        await self.start_server()
        bob = await self.connect()
        await bob.login("bob", resource="desk")
        bob.send("<presence/>")
        await bob.wait_for(lambda e: e.name == "presence")
        message_file = os.path.join(self.data_dir, "message.txt")
        with open(message_file, "w") as f:
            f.write("hello from go-sendxmpp")
        out, err, code = await utils.getProcessOutputAndValue(
            binary, ["-u", f"alice@{DOMAIN}", "-p", PASSWORD, "-j", f"127.0.0.1:{self.port}", "-n",
                     "-m", message_file, f"bob@{DOMAIN}"],
            env={"HOME": self.data_dir, "PATH": os.environ.get("PATH", "")})
        self.assertEqual(code, 0, (out, err))
        message = await bob.wait_for(lambda e: e.name == "message" and e.body is not None)
        self.assertEqual(str(message.body).strip(), "hello from go-sendxmpp")
        self.assertTrue(message["from"].startswith(f"alice@{DOMAIN}/"))
        bob.send("<iq type='set' id='mam'><query xmlns='urn:xmpp:mam:2'/></iq>")
        await bob.wait_for(is_result("mam"))
        self.assertTrue(any("hello from go-sendxmpp" in e.toXml() for e in bob.stanzas if e.name == "message"
                            and e.result is not None))


class MixedRoom(ServerTestCase):
    users = ("alice", "bob", "carol")

    async def test_slixmpp_xep0045_occupants_and_a_native_occupant(self):
        await self.start_server()
        report = await self.run_client("mixed_room.py", "127.0.0.1", self.port, DOMAIN, PASSWORD)
        room = f"globe@chat.{DOMAIN}"
        self.assertEqual(report["alice_codes"], [110, 201])  # semi-anonymous: no 100
        self.assertEqual(report["roster_after_bob"], ["Alice", "Bob"])
        self.assertEqual(report["bob_saw_occupants"], ["Alice", "Bob"])  # the others, then itself
        self.assertEqual(report["carol_subscription"], "subscribed")
        self.assertEqual(report["roster_after_carol"], ["Alice", "Bob", "Carol"])
        self.assertEqual(report["alice_hears"], [f"{room}/Alice", "hello from legacy"])
        self.assertEqual(report["bob_hears"], [f"{room}/Alice", "hello from legacy"])
        self.assertEqual(report["carol_hears"], [f"chat.{DOMAIN}", "hello from legacy"])
        self.assertEqual(report["carol_replyto"], f"{room}/Alice")  # not the real JID
        self.assertEqual(report["alice_hears_carol"], [f"{room}/Carol", "hello from pubsub"])
        self.assertEqual(report["bob_hears_carol"], [f"{room}/Carol", "hello from pubsub"])
