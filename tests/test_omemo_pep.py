"""OMEMO-ready PEP (XEP-0163, XEP-0060 §7.1.5 publish-options, XEP-0223 practice):
the device lists and bundles of both OMEMO generations, published and read by real
slixmpp clients (raw OMEMO stanzas on slixmpp's XEP-0060 plugin)."""

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
