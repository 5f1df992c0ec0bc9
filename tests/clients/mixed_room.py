"""A mixed room: two legacy occupants through slixmpp's XEP-0045 plugin and one
pubsub-native occupant (XEP-0207 §5: subscribe with a roomnick, publish, events).

    python mixed_room.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import json
import sys
import xml.etree.ElementTree as ET

from slixmpp import JID
from slixmpp.plugins.xep_0004 import Form

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]
ROOM = JID(f"globe@chat.{DOMAIN}")


async def main():
    alice = await Client(f"alice@{DOMAIN}/legacy", PASSWORD, plugins=("xep_0030", "xep_0045")).online(HOST, PORT)
    bob = await Client(f"bob@{DOMAIN}/legacy", PASSWORD, plugins=("xep_0030", "xep_0045")).online(HOST, PORT)
    carol = await Client(f"carol@{DOMAIN}/native", PASSWORD,
                         plugins=("xep_0030", "xep_0004", "xep_0060")).online(HOST, PORT)
    report = {}
    muc_a, muc_b = alice.plugin["xep_0045"], bob.plugin["xep_0045"]

    # join_muc_wait checks XEP-0045's order: occupants, own presence, history, subject.
    presence, subject, occupants, history = await muc_a.join_muc_wait(ROOM, "Alice", maxstanzas=0)
    report["alice_codes"] = sorted(int(c) for c in presence["muc"]["status_codes"])
    if 201 in report["alice_codes"]:  # XEP-0045 §10.1.2: she accepts an instant room
        await muc_a.set_room_config(ROOM, Form())
    bob_arrives = asyncio.get_running_loop().create_future()
    alice.add_event_handler(f"muc::{ROOM}::got_online",
                            lambda p: p["muc"]["nick"] == "Bob" and not bob_arrives.done() and bob_arrives.set_result(p))
    presence, subject, occupants, history = await muc_b.join_muc_wait(ROOM, "Bob", maxstanzas=0)
    report["bob_saw_occupants"] = [p["muc"]["nick"] for p in occupants]
    await asyncio.wait_for(bob_arrives, 10)
    report["roster_after_bob"] = sorted(muc_a.get_roster(ROOM))

    arrived = asyncio.get_running_loop().create_future()
    alice.add_event_handler(f"muc::{ROOM}::got_online",
                            lambda p: p["muc"]["nick"] == "Carol" and not arrived.done() and arrived.set_result(p))
    options = Form()
    options["type"] = "submit"
    options.add_field("FORM_TYPE", value="http://jabber.org/protocol/pubsub#subscribe_options", ftype="hidden")
    options.add_field("roomnick", value="Carol")
    reply = await carol.plugin["xep_0060"].subscribe(ROOM.domain, ROOM.user, options=options)
    report["carol_subscription"] = reply["pubsub"]["subscription"]["subscription"]
    await asyncio.wait_for(arrived, 10)
    report["roster_after_carol"] = sorted(muc_a.get_roster(ROOM))

    events = asyncio.Queue()
    carol.add_event_handler("pubsub_publish", lambda m: events.put_nowait(m))
    heard = {name: asyncio.Queue() for name in ("alice", "bob")}
    alice.add_event_handler("groupchat_message", lambda m: heard["alice"].put_nowait(m))
    bob.add_event_handler("groupchat_message", lambda m: heard["bob"].put_nowait(m))

    alice.send_message(mto=ROOM, mbody="hello from legacy", mtype="groupchat")
    for name in ("alice", "bob"):  # the sender gets its reflection
        message = await asyncio.wait_for(heard[name].get(), 10)
        report[f"{name}_hears"] = [message["from"].full, message["body"]]
    event = await asyncio.wait_for(events.get(), 10)
    payload = event["pubsub_event"]["items"]["item"]["payload"]
    report["carol_hears"] = [event["from"].full, payload.findtext("{jabber:client}body")]
    report["carol_replyto"] = event.xml.find("{http://jabber.org/protocol/address}addresses")[0].get("jid")

    message = ET.fromstring("<message xmlns='jabber:client'><body>hello from pubsub</body></message>")
    await carol.plugin["xep_0060"].publish(ROOM.domain, ROOM.user, payload=message)
    for name in ("alice", "bob"):
        heard_message = await asyncio.wait_for(heard[name].get(), 10)
        report[f"{name}_hears_carol"] = [heard_message["from"].full, heard_message["body"]]

    for client in (alice, bob, carol):
        client.disconnect()
    print(json.dumps(report), flush=True)


asyncio.run(asyncio.wait_for(main(), 90))
