"""XEP-0012 last activity (the server's uptime; a contact's, through both doors)
and XEP-0157 contact addresses in the server's disco#info."""

import os
import tempfile

from twisted.trial import unittest
from twisted.python import usage

from tests.doors_helpers import ALICE, BOB, EVE, DoorsTestCase
from tests.server_helpers import DOMAIN

NS_LAST = "jabber:iq:last"
NS_DISCO = "http://jabber.org/protocol/disco#info"
NODE = "last-activity"


class LastActivity(DoorsTestCase):
    async def last(self, client, to):
        return await self.iq(client, "get", to, f"<query xmlns='{NS_LAST}'/>")

    async def test_server_uptime(self):
        alice = await self.online("alice")
        reply = self.assert_ok(await self.last(alice, DOMAIN))
        self.assertGreaterEqual(int(reply.query["seconds"]), 0)
        self.assertLess(int(reply.query["seconds"]), 600)
        info = await self.iq(alice, "get", DOMAIN, f"<query xmlns='{NS_DISCO}'/>")
        self.assertIn(NS_LAST, [f["var"] for f in info.query.elements() if f.name == "feature"])

    async def test_a_contacts_last_activity_for_subscribers_only(self):
        await self.server.engine.subscribe(ALICE, BOB, "presence", ALICE, approved=True, via="legacy")
        alice = await self.online("alice")
        eve = await self.online("eve")
        bob = await self.online("bob")
        self.assertEqual(self.assert_ok(await self.last(alice, BOB)).query["seconds"], "0")  # online
        self.assert_error(await self.last(eve, BOB), "forbidden")
        await self.logout(bob)
        await alice.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == bob.jid
                             and e.getAttribute("type") == "unavailable")
        await self.server.quiesce()
        item = (await self.server.storage.page_items(BOB, NODE)).items
        self.assertEqual(len(item), 1)
        seconds = int(self.assert_ok(await self.last(alice, BOB)).query["seconds"])
        self.assertTrue(0 <= seconds < 600, seconds)
        self.assert_error(await self.last(eve, BOB), "forbidden")
        self.assert_error(await self.last(eve, f"nobody@{DOMAIN}"), "service-unavailable")
        # The other door: the same node, the same rule.
        self.assert_ok(await self.items(alice, BOB, NODE))
        self.assert_error(await self.items(eve, BOB, NODE), "not-authorized")
        # Nobody but the service writes it, not even the account.
        bob = await self.online("bob")
        self.assert_error(await self.publish(bob, BOB, NODE, f"<query xmlns='{NS_LAST}'/>"), "forbidden")
        self.assert_error(await self.create(eve, EVE, NODE), "forbidden")
        # The account asks about itself: online, 0.
        self.assertEqual(self.assert_ok(await self.last(bob, BOB)).query["seconds"], "0")

    async def test_a_contact_who_blocked_the_requester(self):
        await self.server.engine.subscribe(ALICE, BOB, "presence", ALICE, approved=True, via="legacy")
        alice = await self.online("alice")
        bob = await self.online("bob")
        self.assert_ok(await self.iq(bob, "set", None, f"<block xmlns='urn:xmpp:blocking'><item jid='{ALICE}'/></block>"))
        self.assert_error(await self.last(alice, BOB), "service-unavailable")


class ContactAddresses(DoorsTestCase):
    server_args = DoorsTestCase.server_args + (
        "--contact", "abuse=mailto:abuse@example.org", "--contact", "abuse=xmpp:abuse@example.org",
        "--contact", "support-addresses=https://example.org/help")

    async def test_in_the_servers_disco_info(self):
        alice = await self.online("alice")
        info = await self.iq(alice, "get", DOMAIN, f"<query xmlns='{NS_DISCO}'/>")
        forms = [x for x in info.query.elements() if x.name == "x" and x.uri == "jabber:x:data"]
        self.assertEqual(len(forms), 1, info.toXml())
        fields = {f["var"]: [str(v) for v in f.elements() if v.name == "value"] for f in forms[0].elements()
                  if f.name == "field"}
        self.assertEqual(fields, {
            "FORM_TYPE": ["http://jabber.org/network/serverinfo"],
            "abuse-addresses": ["mailto:abuse@example.org", "xmpp:abuse@example.org"],
            "support-addresses": ["https://example.org/help"],
        })
        # Not on an account, nor on the other services.
        info = await self.iq(alice, "get", ALICE, f"<query xmlns='{NS_DISCO}'/>")
        self.assertNotIn("serverinfo", info.toXml())


class ContactOptions(unittest.TestCase):
    def parse(self, *args, config=None):
        from xep207.tap import Options

        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(directory))
        extra = []
        if config is not None:
            path = os.path.join(directory, "xep207.toml")
            with open(path, "w") as f:
                f.write(config)
            extra = ["--config", path]
        options = Options()
        options.parseOptions([*extra, "--data-dir", directory, *args])
        return options["contact"]

    def test_config_table_and_command_line(self):
        found = self.parse("--contact", "admin=xmpp:root@example.org",
                           config='[contact]\nabuse = ["mailto:a@example.org", "xmpp:a@example.org"]\n'
                                  'admin = "mailto:admin@example.org"\n')
        self.assertEqual(found, {"abuse-addresses": ["mailto:a@example.org", "xmpp:a@example.org"],
                                 "admin-addresses": ["mailto:admin@example.org", "xmpp:root@example.org"]})
        self.assertEqual(self.parse(), {})

    def test_bad_addresses_are_refused(self):
        for bad in ("complaints=mailto:x@example.org", "abuse=not a uri", "abuse=", "abuse"):
            with self.assertRaises(usage.UsageError, msg=bad):
                self.parse("--contact", bad)
