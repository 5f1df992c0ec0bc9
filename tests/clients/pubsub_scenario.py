"""A real slixmpp client run: two accounts use a pubsub service through their server.

Run as a script (its own asyncio loop, away from the test's Twisted reactor);
prints one JSON object with what it observed, or exits non-zero.

    python pubsub_scenario.py HOST PORT DOMAIN SERVICE PASSWORD
"""

import asyncio
import json
import sys
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError

HOST, PORT, DOMAIN, SERVICE, PASSWORD = sys.argv[1:6]
NODE = "princely_musings"


def client(user):
    xmpp = slixmpp.ClientXMPP(f"{user}@{DOMAIN}/test", PASSWORD)
    for plugin in ("xep_0030", "xep_0004", "xep_0060", "xep_0199"):
        xmpp.register_plugin(plugin)
    xmpp.plugin["feature_mechanisms"].unencrypted_plain = True
    # The Prosody under test has no certificate: plain TCP on loopback.
    xmpp.enable_starttls = False
    xmpp.enable_direct_tls = False
    xmpp.enable_plaintext = True
    return xmpp


async def online(xmpp):
    started = asyncio.get_running_loop().create_future()
    xmpp.add_event_handler("session_start", lambda _: started.done() or started.set_result(True))
    xmpp.add_event_handler("failed_auth", lambda _: started.done() or started.set_exception(
        RuntimeError("auth failed")))
    xmpp.connect(HOST, int(PORT))
    await asyncio.wait_for(started, 20)
    xmpp.send_presence()


async def main():
    alice, bob = client("alice"), client("bob")
    await online(alice)
    await online(bob)
    result = {}
    pubsub = alice.plugin["xep_0060"]

    info = await alice.plugin["xep_0030"].get_info(jid=SERVICE)
    result["identities"] = sorted(f"{c}/{t}" for c, t, _, _ in info["disco_info"]["identities"])
    result["publish_feature"] = "http://jabber.org/protocol/pubsub#publish" in info["disco_info"]["features"]

    form = alice.plugin["xep_0004"].make_form("submit")
    form.add_field("FORM_TYPE", value="http://jabber.org/protocol/pubsub#node_config", ftype="hidden")
    form.add_field("pubsub#title", value="Princely Musings")
    form.add_field("pubsub#max_items", value="5")
    await pubsub.create_node(SERVICE, NODE, config=form)
    config = await pubsub.get_node_config(SERVICE, NODE)
    values = config["pubsub_owner"]["configure"]["form"].get_values()
    result["title"] = values.get("pubsub#title")

    received = asyncio.get_running_loop().create_future()

    def on_publish(msg):
        item = msg["pubsub_event"]["items"]["item"]
        if not received.done():
            received.set_result((msg["from"].full, item["id"], ET.tostring(item["payload"]).decode()))

    bob.add_event_handler("pubsub_publish", on_publish)
    subscription = await bob.plugin["xep_0060"].subscribe(SERVICE, NODE)
    result["subscription"] = subscription["pubsub"]["subscription"]["subscription"]

    payload = ET.fromstring("<entry xmlns='http://www.w3.org/2005/Atom'><title>Soliloquy</title></entry>")
    reply = await pubsub.publish(SERVICE, NODE, id="first", payload=payload)
    result["published_id"] = reply["pubsub"]["publish"]["item"]["id"]
    result["notification"] = list(await asyncio.wait_for(received, 20))

    items = await bob.plugin["xep_0060"].get_items(SERVICE, NODE)
    result["items"] = [i["id"] for i in items["pubsub"]["items"]]

    try:
        await bob.plugin["xep_0060"].delete_node(SERVICE, NODE)
        result["bob_delete"] = "allowed"
    except IqError as exc:
        result["bob_delete"] = exc.condition

    for xmpp in (alice, bob):
        xmpp.disconnect()
    print(json.dumps(result), flush=True)


asyncio.run(asyncio.wait_for(main(), 90))
