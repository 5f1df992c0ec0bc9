"""The full server end to end with a real client (slixmpp in a child process)."""

from server_helpers import DOMAIN, PASSWORD, ServerTestCase


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
