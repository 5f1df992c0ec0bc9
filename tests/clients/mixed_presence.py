"""A legacy client (alice: roster and presence stanzas) and a pubsub-native one
(bob: XEP-0060 on presence nodes) subscribe to each other and exchange presence.

    python mixed_presence.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import json
import sys
import xml.etree.ElementTree as ET

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
NS_DATA = "jabber:x:data"
AUTH = "http://jabber.org/protocol/pubsub#subscribe_authorization"


async def main():
    alice = Client(f"{ALICE}/legacy", PASSWORD)
    alice.auto_authorize = True  # approve requests …
    alice.auto_subscribe = True  # … and ask back, as many clients do
    bob = Client(f"{BOB}/native", PASSWORD, plugins=("xep_0030", "xep_0060", "xep_0004"))
    await alice.online(HOST, PORT)
    await bob.online(HOST, PORT, presence=False)  # bob speaks pubsub only
    report = {}

    forms = asyncio.Queue()
    events = asyncio.Queue()
    legacy_presence = asyncio.Queue()

    def on_message(msg):
        form = msg.xml.find(f"{{{NS_DATA}}}x")
        if form is not None:
            forms.put_nowait(msg)

    bob.add_event_handler("message", on_message)
    bob.add_event_handler("message_xform", on_message)  # body-less form messages come this way
    bob.add_event_handler("pubsub_publish", lambda m: events.put_nowait(("item", m)))
    bob.add_event_handler("pubsub_subscription", lambda m: events.put_nowait(("subscription", m)))
    alice.add_event_handler("presence_available",
                            lambda p: p["from"].bare == BOB and legacy_presence.put_nowait(p))

    # Bob becomes available the XEP-0207 way: by publishing to his presence node.
    presence = ET.fromstring("<presence xmlns='jabber:client'><status>Here</status></presence>")
    await bob.plugin["xep_0060"].publish(BOB, "presence", payload=presence)

    # Bob subscribes the XEP-0060 way; alice's client approves and asks back.
    reply = await bob.plugin["xep_0060"].subscribe(ALICE, "presence", subscribee=BOB)
    report["bob_subscription"] = reply["pubsub"]["subscription"]["subscription"]
    kind, msg = await asyncio.wait_for(events.get(), 10)
    report["bob_approved"] = [kind, msg["pubsub_event"]["subscription"]["subscription"]]

    # Alice's request reaches bob as the XEP-0207 authorization form.
    request = await asyncio.wait_for(forms.get(), 10)
    fields = {f.get("var"): (f.findtext(f"{{{NS_DATA}}}value") or "")
              for f in request.xml.iter(f"{{{NS_DATA}}}field")}
    report["form"] = [fields.get("FORM_TYPE"), fields.get("pubsub#node"), fields.get("pubsub#subscriber_jid")]
    answer = bob.make_message(mto=DOMAIN)
    answer["id"] = request["id"]
    answer.append(ET.fromstring(
        f"<x xmlns='{NS_DATA}' type='submit'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{AUTH}</value></field>"
        "<field var='pubsub#node'><value>presence</value></field>"
        f"<field var='pubsub#subscriber_jid'><value>{ALICE}</value></field>"
        "<field var='pubsub#allow'><value>true</value></field></x>"))
    answer.send()

    # Both directions: alice's legacy status reaches bob as a pubsub event …
    while True:
        kind, msg = await asyncio.wait_for(events.get(), 10)
        if kind == "item":
            break
    alice.send_presence(pstatus="Moping")
    while True:
        kind, msg = await asyncio.wait_for(events.get(), 10)
        payload = msg["pubsub_event"]["items"]["item"]["payload"]
        if kind == "item" and payload is not None and "Moping" in ET.tostring(payload).decode():
            break
    report["bob_sees"] = [msg["from"].full, msg["pubsub_event"]["items"]["node"],
                          payload.get("from"), payload.findtext("{jabber:client}status")]

    # … and bob's pubsub-published presence reaches alice as a presence stanza.
    presence = ET.fromstring("<presence xmlns='jabber:client'><status>Publishing</status></presence>")
    await bob.plugin["xep_0060"].publish(BOB, "presence", payload=presence)
    while True:
        seen = await asyncio.wait_for(legacy_presence.get(), 10)
        if seen["status"] == "Publishing":
            break
    report["alice_sees"] = [seen["from"].full, seen["status"]]
    roster = await alice.get_roster()
    report["alice_roster"] = {str(jid): item["subscription"] for jid, item in roster["roster"]["items"].items()}

    for client in (alice, bob):
        client.disconnect()
    print(json.dumps(report), flush=True)


asyncio.run(asyncio.wait_for(main(), 90))
