"""Personal data with real clients: slixmpp's XEP-0048/0049/0402 plugins on
bookmarks and private storage, its XEP-0054/0084/0153 plugins on vCards and avatars."""

from tests.server_helpers import DOMAIN, PASSWORD, ServerTestCase

ALICE = f"alice@{DOMAIN}"
NODE = "urn:xmpp:bookmarks:1"
TEA, CAKE, PIE = (f"{room}@chat.{DOMAIN}" for room in ("tea", "cake", "pie"))


class BookmarksWithSlixmpp(ServerTestCase):
    users = ("alice", "eve")

    async def test_xep0048_and_xep0402_clients_share_bookmarks(self):
        await self.start_server()
        report = await self.run_client("bookmarks.py", "127.0.0.1", self.port, DOMAIN, PASSWORD)
        self.assertTrue(report["compat"])
        # The old client's XEP-0048 write: XEP-0402 items and events for the new one.
        self.assertEqual(report["phone_events"], [["publish", NODE, CAKE, "Cake"], ["publish", NODE, TEA, "Tea"]])
        self.assertEqual(report["as_0402"], [[CAKE, "Cake", False, "alice"], [TEA, "Tea", True, "al"]])
        # The new client's XEP-0402 publish and retraction: events and XEP-0048 for the old one.
        self.assertEqual(report["laptop_events"], [
            ["publish", NODE, TEA, "Tea"], ["publish", NODE, CAKE, "Cake"],
            ["publish", NODE, PIE, "Pie"], ["retract", NODE, CAKE]])
        self.assertEqual(report["as_0048"], [[PIE, "Pie", True, "ali"], [TEA, "Tea", True, "al"]])
        self.assertEqual(report["urls"], ["https://example.org/"])
        self.assertEqual(report["notes"], "bob is tall")
        self.assertEqual(report["eve_private"], "forbidden")
        self.assertEqual(report["eve_0402"], "item-not-found")
        self.assertEqual(report["eve_own"], [])


class VCardAvatarsWithSlixmpp(ServerTestCase):
    users = ("alice", "bob", "eve")

    async def test_vcard_and_pep_avatars_convert_both_ways(self):
        from tests.test_omemo_pep import befriend

        await self.start_server()
        await befriend(self.server.engine, ALICE, f"bob@{DOMAIN}")
        report = await self.run_client("vcard_avatar.py", "127.0.0.1", self.port, DOMAIN, PASSWORD)
        self.assertTrue(report["conversion_feature"])
        self.assertEqual(report["bob_none"], "ok")  # one's own missing vCard: an empty one
        self.assertTrue(report["bob_avatar_data"])
        self.assertEqual(report["eve_reads_data"], "ok")  # as public as the vCard it came from
        self.assertEqual(report["vcard_photo"], ["image/jpeg", True])
        self.assertEqual(report["eve_sets_alices"], "forbidden")
        self.assertEqual(report["wrong_hash"], "bad-request")
        self.assertEqual(report["bad_base64"], "bad-request")
        self.assertTrue(report["unchanged"])
