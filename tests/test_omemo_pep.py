"""OMEMO-ready PEP (XEP-0163, XEP-0060 §7.1.5 publish-options, XEP-0223 practice):
the device lists and bundles of both OMEMO generations, published and read by real
slixmpp clients (raw OMEMO stanzas on slixmpp's XEP-0060 plugin)."""

from tests.doors_helpers import DoorsTestCase
from tests.server_helpers import DOMAIN, PASSWORD, ServerTestCase
from xep207.pubsub.kinds import Trusted
from xep207.storage.records import VIA_LEGACY

ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
OLD = "eu.siacs.conversations.axolotl"
NEW = "urn:xmpp:omemo:2"


async def befriend(engine, one: str, other: str) -> None:
    """A mutual presence subscription, as two approved legacy requests leave it."""
    for owner, contact in ((one, other), (other, one)):
        await engine.subscribe(Trusted(owner), owner, "presence", contact, approved=True, via=VIA_LEGACY)


class OmemoThroughPep(ServerTestCase):
    users = ("alice", "bob", "carol")

    async def test_device_lists_and_bundles_of_both_generations(self):
        await self.start_server()
        await befriend(self.server.engine, ALICE, BOB)
        report = await self.run_client("omemo_pep.py", "127.0.0.1", self.port, DOMAIN, PASSWORD)
        old_list = f"<list xmlns=\"{OLD}\"><device id=\"1001\" /></list>"
        self.assertEqual(report["bob_old_event"]["from"], ALICE)
        self.assertEqual(report["bob_old_event"]["payload"], old_list)
        self.assertEqual(report["alice_old_event"]["payload"], old_list)
        self.assertIn("device id=\"1001\"", report["bob_new_event"]["payload"])
        for reader in ("bob", "carol"):  # a contact and a stranger: open access
            self.assertEqual(report[f"{reader}_old_list"], [old_list])
            self.assertIn("signedPreKeyPublic", report[f"{reader}_old_bundle"])
            self.assertIn(f"<devices xmlns=\"{NEW}\">", report[f"{reader}_new_list"][0])
            self.assertIn("<spk id=\"1\">c3Br1001</spk>", report[f"{reader}_new_bundle"])
        self.assertEqual(report["carol_subscription"], "subscribed")
        self.assertIn("device id=\"1001\"", report["carol_last_item"]["payload"])
        for reader in ("bob", "carol"):
            self.assertIn("device id=\"1002\"", report[f"{reader}_second_event"]["payload"])
        self.assertEqual(report["bundle_ids"], ["1001", "1002"])  # max_items=max keeps both
        self.assertEqual(report["mismatch"], ["conflict", "precondition-not-met"])
        self.assertEqual(report["after_mismatch"], [old_list])  # nothing stored
        self.assertEqual(report["stranger_presence_bundle"], ["not-authorized", "presence-subscription-required"])
        self.assertEqual(report["reconfigure_needed"], ["conflict", "precondition-not-met"])
        self.assertIn("BQ1002=", report["stranger_reads_reconfigured"])
        self.assertEqual(report["new_bundles_config"], {
            "access_model": "open", "max_items": str(self.server.engine.max_items_limit),
            "persist_items": "True"})
        self.assertEqual(len(report["laptop_gets"]), 2)
        self.assertIn(old_list, report["laptop_gets"])
        self.assertEqual(report["laptop_seen"], [f"{OLD}.devicelist", f"{NEW}:devices"])  # not the 'never' node
        self.assertEqual(report["carol_quiet"], 0)


class RealOmemo(ServerTestCase):
    """slixmpp-omemo (PyPI) end to end: keys published on our PEP, fetched, a message decrypted."""

    users = ("alice", "bob")

    async def test_an_encrypted_message_between_two_omemo_clients(self):
        await self.start_server()
        await befriend(self.server.engine, ALICE, BOB)
        report = await self.run_client("omemo_real.py", "127.0.0.1", self.port, DOMAIN, PASSWORD, timeout=150)
        self.assertEqual(report["encrypt_errors"], [])
        self.assertEqual((report["alice_devices"], report["bob_devices"]), (1, 1))
        self.assertIn(f"{NEW}:devices", report["bob_nodes"])
        self.assertIn(f"{OLD}.devicelist", report["bob_nodes"])
        # Alice learnt Bob's device in both generations (device lists and bundles from his PEP) …
        self.assertEqual(report["bob_seen_by_alice"], [[OLD, NEW]])
        # … and the plugin encrypts with the old one (it has no XEP-0420 SCE for omemo:2 yet).
        self.assertEqual(report["namespaces"], [OLD])
        self.assertTrue(report["ciphertext_only"])
        self.assertEqual(report["decrypted"], ["the eagle has landed", ALICE])


class PublishOptionsEdges(DoorsTestCase):
    """XEP-0060 §7.1.5 on PEP, the cases clients get wrong."""

    async def test_bad_and_unknown_options(self):
        alice = await self.online("alice")
        node = f"{NEW}:devices"
        payload = f"<devices xmlns='{NEW}'><device id='1'/></devices>"
        # A node created with a bad option is not created at all.
        self.assert_error(await self.publish(alice, ALICE, node, payload, "current",
                                             {"pubsub#access_model": "everyone"}), "not-acceptable")
        self.assert_error(await self.items(alice, ALICE, node), "item-not-found")
        self.assert_ok(await self.publish(alice, ALICE, node, payload, "current",
                                          {"pubsub#access_model": "open", "pubsub#max_items": "max"}))
        # On the existing node: "max" and the number it stands for both match; others do not.
        limit = str(self.server.engine.max_items_limit)
        for matching in ("max", limit):
            self.assert_ok(await self.publish(alice, ALICE, node, payload, "current",
                                              {"pubsub#max_items": matching}))
        for mismatch in ({"pubsub#max_items": "1"}, {"pubsub#unknown_option": "1"},
                         {"pubsub#persist_items": "false"}, {"pubsub#access_model": "everyone"}):
            self.assert_error(await self.publish(alice, ALICE, node, payload, "current", mismatch),
                              "conflict", "precondition-not-met")
        # A create with a configuration form takes "max" too.
        self.assert_ok(await self.create(alice, ALICE, f"{NEW}:other", {"max_items": "max", "access_model": "open"}))
        config = self.assert_ok(await self.pubsub(alice, "get", ALICE, f"<configure node='{NEW}:other'/>",
                                                  owner=True))
        self.assertIn(f"<value>{limit}</value>", config.toXml())

    async def test_xep0223_private_pep_data(self):
        """XEP-0223: persist_items + whitelist make a PEP node the account's private storage."""
        await befriend(self.server.engine, ALICE, BOB)
        alice, bob, eve = await self.online("alice"), await self.online("bob"), await self.online("eve")
        options = {"pubsub#persist_items": "true", "pubsub#access_model": "whitelist"}
        payload = "<storage xmlns='storage:bookmarks'><conference jid='tea@chat.localhost' autojoin='true'/></storage>"
        self.assert_ok(await self.publish(alice, ALICE, "storage:bookmarks", payload, "current", options))
        self.assertEqual(self.item_ids(self.assert_ok(await self.items(alice, ALICE, "storage:bookmarks"))),
                         ["current"])
        for other in (bob, eve):  # a contact and a stranger alike
            self.assert_error(await self.items(other, ALICE, "storage:bookmarks"), "not-allowed", "closed-node")
        self.assert_error(await self.publish(alice, ALICE, "storage:bookmarks", payload, "current",
                                             {"pubsub#access_model": "presence"}), "conflict", "precondition-not-met")
