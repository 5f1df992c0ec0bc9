"""What a generated item id tells (records.new_item_id): a chat message's id
(pair and room nodes) starts with the millisecond it was stored, which its
readers are told anyway (XEP-0313's and XEP-0203's delay stamps); an item of
any other node names no time, since XEP-0060 tells its readers none (XEP-0359:
an id must tell nothing it need not). Both seen through the doors, as a
stranger and as a party."""

import time

from tests.doors_helpers import (ALICE, BOB, CHAT, PUBSUB, ROOM, DoorsTestCase, RoomDoorsTestCase, chat_body,
                                 chat_item, pair)
from tests.test_mam import MamTestCase

from xep207.pubsub import engine
from xep207.storage.records import new_item_id

NS_SID = "urn:xmpp:sid:0"


def told_time(item_id: str) -> float:
    """The time an id would tell, were its first 12 hex digits milliseconds."""
    return int(item_id[:12], 16) / 1000


class WhatIdsTell(DoorsTestCase):
    async def test_an_open_pep_nodes_ids_tell_a_stranger_no_time(self):
        alice = await self.online("alice")
        eve = await self.online("eve")
        node = "urn:example:notes"
        self.assert_ok(await self.create(alice, ALICE, node, {"access_model": "open"}))
        before = time.time()
        for n in range(5):
            self.assert_ok(await self.publish(alice, ALICE, node, f"<note xmlns='urn:example'>{n}</note>"))
        after = time.time()
        ids = self.item_ids(self.assert_ok(await self.items(eve, ALICE, node)))
        self.assertEqual(len(ids), 5)
        self.assertEqual([i for i in ids if before - 1 <= told_time(i) <= after + 1], [],
                         "a stranger reads when alice published")
        self.assertEqual(len({i[:12] for i in ids}), 5)  # (random throughout)

    async def test_a_chat_messages_id_tells_the_time_its_delay_stamp_tells(self):
        alice = await self.online("alice")
        bob = await self.online("bob")
        before = time.time()
        self.chat(alice, BOB, "hello")
        received = await bob.wait_for(chat_body("hello"))
        after = time.time()
        stanza_id = next(e for e in received.elements(NS_SID, "stanza-id"))["id"]
        self.assertTrue(before - 0.01 <= told_time(stanza_id) <= after + 0.01, stanza_id)

    async def test_a_chat_message_published_through_xep_0060_tells_the_same(self):
        """The kind decides, not the door: bob's item on the pair node, published
        as XEP-0060, gets the id a legacy message would."""
        await self.online("alice")
        bob = await self.online("bob", "native")
        before = time.time()
        reply = self.assert_ok(await self.publish(bob, PUBSUB, pair(ALICE, BOB), chat_item("native hello")))
        after = time.time()
        item_id = reply.pubsub.publish.item["id"]
        self.assertTrue(before - 0.01 <= told_time(item_id) <= after + 0.01, item_id)


class RoomIdsThroughBothDoors(RoomDoorsTestCase):
    async def test_a_room_message_tells_the_time_through_either_door(self):
        alice = await self.room_with_alice()
        before = time.time()
        self.say(alice, "legacy words")
        reply = self.assert_ok(await self.native_say(alice, "native words"))
        await self.settle(alice)
        after = time.time()
        native_id = reply.pubsub.publish.item["id"]
        ids = self.item_ids(self.assert_ok(await self.items(alice, CHAT, ROOM)))  # (the legacy one too)
        self.assertIn(native_id, ids)
        self.assertEqual(len(ids), 2, ids)
        self.assertTrue(all(before - 0.01 <= told_time(i) <= after + 0.01 for i in ids), ids)


class OrderNotById(MamTestCase):
    """Ids begin with a clock, and a clock goes back (NTP) or stands still (one
    millisecond, many messages): the archive's order is the order stored, never
    the ids' order, through XEP-0313 paging and its RSM ids."""

    async def test_mam_pages_in_the_order_stored_when_the_clock_goes_back(self):
        clock = iter([1764000000.009, 1764000000.005, 1764000000.005, 1764000000.001, 1764000000.000])
        self.patch(engine, "new_item_id", lambda: new_item_id(lambda: next(clock)))
        alice, _ = await self.conversation(5)
        reply, bodies, ids = await self.query(alice, "<max>10</max>")
        self.assertEqual(bodies, ["m0", "m1", "m2", "m3", "m4"])
        self.assertNotEqual(ids, sorted(ids))  # (the ids do not grow: the clock went back)
        _, bodies, _ = await self.query(alice, f"<max>2</max><after>{ids[1]}</after>")
        self.assertEqual(bodies, ["m2", "m3"])
        _, bodies, _ = await self.query(alice, f"<max>2</max><before>{ids[3]}</before>")
        self.assertEqual(bodies, ["m1", "m2"])
        _, bodies, _ = await self.query(alice, fields={"after-id": ids[0], "before-id": ids[4]})
        self.assertEqual(bodies, ["m1", "m2", "m3"])
