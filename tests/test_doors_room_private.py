"""Private group chats that OMEMO clients accept (issue 14).

Conversations calls a room a private group when it is members-only and
non-anonymous (disco#info ``muc_membersonly`` + ``muc_nonanonymous``), and
then encrypts to every member: it must read the member list (XEP-0045 §9.5;
Prosody lets members of such a room read it) and learn of membership changes
of people who are not in the room (§9.3–9.4: Prosody tells the occupants with
a message from the room). The list rule is the room kind's, so the XEP-0060
affiliations get obeys it too.
"""

from tests.doors_helpers import (
    ALICE,
    BOB,
    CAROL,
    CHAT,
    NS_ADMIN,
    NS_USER,
    ROOM,
    ROOM_JID,
    RoomDoorsTestCase,
)
from tests.server_helpers import DOMAIN, PASSWORD, ServerTestCase

NS_INFO = "http://jabber.org/protocol/disco#info"


def listed(reply) -> dict:
    return {i["jid"]: i["affiliation"] for i in reply.query.elements() if i.name == "item"}


class PrivateRoom(RoomDoorsTestCase):
    async def private_room(self, **config):
        settings = {"membersonly": "1", "whois": "anyone", "persistentroom": "1", **config}
        alice = await self.room_with_alice(**settings)
        for member in (BOB, CAROL):  # neither is online
            self.assert_ok(await self.admin(alice, f"<item jid='{member}' affiliation='member'/>"))
        return alice

    async def affiliation_list(self, client, affiliation):
        return await self.iq(client, "get", ROOM_JID,
                             f"<query xmlns='{NS_ADMIN}'><item affiliation='{affiliation}'/></query>")

    async def test_members_read_the_lists_through_both_doors(self):
        await self.private_room()
        bob = await self.online("bob", "laptop")
        members = self.assert_ok(await self.affiliation_list(bob, "member"))
        self.assertEqual(listed(members), {BOB: "member", CAROL: "member"})
        self.assertEqual(listed(self.assert_ok(await self.affiliation_list(bob, "owner"))), {ALICE: "owner"})
        native = self.assert_ok(await self.pubsub(bob, "get", CHAT, f"<affiliations node='{ROOM}'/>", owner=True))
        jids = {a["jid"] for a in native.pubsub.affiliations.elements() if a.name == "affiliation"}
        self.assertTrue({ALICE, BOB, CAROL} <= jids, jids)
        # Reading is all: a member changes nothing, through either door.
        self.assert_error(await self.admin(bob, f"<item jid='{CAROL}' affiliation='none'/>"), "forbidden")
        self.assert_error(await self.pubsub(bob, "set", CHAT, f"<affiliations node='{ROOM}'><affiliation "
                                                              f"jid='{CAROL}' affiliation='none'/></affiliations>",
                                            owner=True), "forbidden")
        self.assertEqual(listed(self.assert_ok(await self.affiliation_list(bob, "member"))),
                         {BOB: "member", CAROL: "member"})

    async def test_strangers_and_members_of_other_rooms_do_not(self):
        await self.private_room()
        eve = await self.online("eve", "lair")
        self.assert_error(await self.affiliation_list(eve, "member"), "forbidden")
        self.assert_error(await self.pubsub(eve, "get", CHAT, f"<affiliations node='{ROOM}'/>", owner=True),
                          "forbidden")

    async def assert_members_may_not_read(self, **config):
        await self.private_room(**config)
        bob = await self.online("bob", "laptop")
        self.assert_error(await self.affiliation_list(bob, "member"), "forbidden")
        self.assert_error(await self.pubsub(bob, "get", CHAT, f"<affiliations node='{ROOM}'/>", owner=True),
                          "forbidden")

    async def test_not_in_a_semi_anonymous_room(self):
        await self.assert_members_may_not_read(whois="moderators")

    async def test_not_in_an_open_room(self):
        await self.assert_members_may_not_read(membersonly="0")

    async def test_membership_changes_of_absent_users_are_told(self):
        alice = await self.room_with_alice(membersonly="1", whois="anyone")
        bob = await self.online("bob", "laptop")  # online, not in the room
        self.assert_ok(await self.admin(alice, f"<item jid='{BOB}' affiliation='member'/>"))

        def about_bob(affiliation):
            return lambda e: (e.name == "message" and e.getAttribute("from") == ROOM_JID
                              and any(i.getAttribute("jid") == BOB and i.getAttribute("affiliation") == affiliation
                                      for x in e.elements() if x.name == "x" and x.uri == NS_USER
                                      for i in x.elements() if i.name == "item"))
        await alice.wait_for(about_bob("member"))  # the occupants keep the member list
        told = await bob.wait_for(about_bob("member"))  # bob, out of band
        self.assertIn("code='101'", told.toXml())
        self.assert_ok(await self.admin(alice, f"<item jid='{BOB}' affiliation='none'/>"))
        await alice.wait_for(about_bob("none"))
        await bob.wait_for(about_bob("none"))

    async def test_a_semi_anonymous_room_tells_only_moderators(self):
        alice = await self.room_with_alice(membersonly="1")
        self.assert_ok(await self.admin(alice, f"<item jid='{CAROL}' affiliation='member'/>"))
        carol = await self.online("carol", "home")
        await self.join(carol, "Carol")
        self.assert_ok(await self.admin(alice, f"<item jid='{BOB}' affiliation='member'/>"))
        await alice.wait_for(lambda e: e.name == "message" and f"jid='{BOB}'" in e.toXml())
        await self.settle(alice, carol)
        self.nothing(carol, lambda e: e.name == "message" and BOB in e.toXml())

    async def test_disco_says_private_and_carries_room_info(self):
        alice = await self.private_room(roomdesc="plots")
        info = self.assert_ok(await self.iq(alice, "get", ROOM_JID, f"<query xmlns='{NS_INFO}'/>"))
        features = {f["var"] for f in info.query.elements() if f.name == "feature"}
        self.assertTrue({"muc_membersonly", "muc_nonanonymous", "muc_persistent"} <= features, features)
        self.assertNotIn("muc_semianonymous", features)
        forms = [x for x in info.query.elements() if x.name == "x" and x.uri == "jabber:x:data"]
        values = {f["var"]: str(f.value) for x in forms for f in x.elements() if f.name == "field"}
        self.assertEqual(values.get("FORM_TYPE"), "http://jabber.org/protocol/muc#roominfo")
        self.assertEqual(values.get("muc#roominfo_description"), "plots")
        self.assertEqual(values.get("muc#roominfo_occupants"), "1")
        self.assertNotIn("muc#roominfo_subject", values)  # a private room's subject is the members'


class ConversationsFlow(ServerTestCase):
    """The whole flow with slixmpp's XEP-0045 plugin (tests/clients/private_room.py)."""

    users = ("alice", "bob", "carol")

    async def test_private_group_with_members_added_offline(self):
        await self.start_server()
        report = await self.run_client("private_room.py", "127.0.0.1", self.port, DOMAIN, PASSWORD)
        self.assertTrue(report["created"])
        self.assertEqual(report["offered"], [True, True, True, True])
        self.assertEqual(report["config_codes"], [104, 172])
        self.assertEqual(report["alice_told"], [[f"bob@{DOMAIN}", "member"], [f"carol@{DOMAIN}", "member"]])
        self.assertTrue({"muc_membersonly", "muc_nonanonymous", "muc_persistent"} <= set(report["features"]))
        self.assertEqual(report["roominfo"], ["http://jabber.org/protocol/muc#roominfo"])
        self.assertEqual(report["members_seen_by_bob"], [f"bob@{DOMAIN}", f"carol@{DOMAIN}"])
        self.assertEqual(report["owners_seen_by_bob"], [f"alice@{DOMAIN}"])
        self.assertEqual(report["bob_sees"]["Alice"], f"alice@{DOMAIN}/phone")
