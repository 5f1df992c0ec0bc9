"""OMEMO's PEP traffic, as OMEMO clients send it, through real slixmpp clients.

Alice publishes the device lists and bundles of both OMEMO generations
(``eu.siacs.conversations.axolotl`` and ``urn:xmpp:omemo:2``) with XEP-0060
§7.1.5 publish-options; Bob (a contact, ``+notify`` in his caps) and Carol (a
stranger) read them. The stanzas are built by hand on slixmpp's XEP-0060
plugin (no OMEMO crypto is needed to exercise the server's side).

    python omemo_pep.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import json
import sys
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError
from slixmpp.xmlstream import tostring

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]
ALICE = f"alice@{DOMAIN}"
OLD = "eu.siacs.conversations.axolotl"
OLD_DEVICES = f"{OLD}.devicelist"
NEW = "urn:xmpp:omemo:2"
NEW_DEVICES = f"{NEW}:devices"
NEW_BUNDLES = f"{NEW}:bundles"
QUIET = "urn:example:quiet"
NS_ERRORS = "http://jabber.org/protocol/pubsub#errors"
PLUGINS = ("xep_0030", "xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0199")


def options(client, **values):
    """A publish-options (or node configuration) form."""
    kind = values.pop("form_type", "publish-options")
    form = client.plugin["xep_0004"].make_form("submit")
    form.add_field("FORM_TYPE", value=f"http://jabber.org/protocol/pubsub#{kind}", ftype="hidden")
    for var, value in values.items():
        form.add_field(f"pubsub#{var}", value=value)
    return form


def old_devices(*ids):
    return ET.fromstring(f"<list xmlns='{OLD}'>" + "".join(f"<device id='{i}'/>" for i in ids) + "</list>")


def new_devices(*ids):
    return ET.fromstring(f"<devices xmlns='{NEW}'>" + "".join(f"<device id='{i}' label='d{i}'/>" for i in ids)
                         + "</devices>")


def old_bundle(device):
    return ET.fromstring(
        f"<bundle xmlns='{OLD}'><signedPreKeyPublic signedPreKeyId='1'>BQ{device}=</signedPreKeyPublic>"
        "<signedPreKeySignature>c2ln</signedPreKeySignature><identityKey>BWlr</identityKey>"
        "<prekeys><preKeyPublic preKeyId='1'>BXBr</preKeyPublic><preKeyPublic preKeyId='2'>BXBs</preKeyPublic>"
        "</prekeys></bundle>")


def new_bundle(device):
    return ET.fromstring(
        f"<bundle xmlns='{NEW}'><spk id='1'>c3Br{device}</spk><spks>c3Brcw==</spks><ik>aWs=</ik>"
        "<prekeys><pk id='1'>cGsx</pk><pk id='2'>cGsy</pk></prekeys></bundle>")


def text(element):
    return tostring(element) if element is not None else None


class Inbox:
    """PEP events one client receives, by node."""

    def __init__(self, client):
        self.queue = asyncio.Queue()
        self.seen = []  # every node an event came from, in order
        client.add_event_handler("pubsub_publish", self.queue.put_nowait)

    async def next(self, node, timeout=10):
        while True:
            message = await asyncio.wait_for(self.queue.get(), timeout)
            self.seen.append(message["pubsub_event"]["items"]["node"])
            if message["pubsub_event"]["items"]["node"] == node:
                item = message["pubsub_event"]["items"]["item"]
                return {"from": message["from"].full, "id": item["id"], "payload": text(item["payload"])}

    def pending(self):
        return self.queue.qsize()


async def connect(user, resource, interests=()):
    client = Client(f"{user}@{DOMAIN}/{resource}", PASSWORD, plugins=PLUGINS)
    inbox = Inbox(client)
    await client.online(HOST, PORT, presence=False)
    for node in interests:
        client.plugin["xep_0030"].add_feature(f"{node}+notify")
    await client.plugin["xep_0115"].update_caps(broadcast=False)
    client.send_presence()
    return client, inbox


def condition(exc):
    """(stanza condition, pubsub condition) of an IqError."""
    error = exc.iq.xml.find("{jabber:client}error")
    pubsub = [child.tag.split("}")[1] for child in error if child.tag.startswith("{" + NS_ERRORS)]
    return [exc.condition, pubsub[0] if pubsub else None]


async def main():
    report = {}
    alice, alice_inbox = await connect("alice", "phone", (OLD_DEVICES, NEW_DEVICES))
    bob, bob_inbox = await connect("bob", "desk", (OLD_DEVICES, NEW_DEVICES, QUIET))
    carol, carol_inbox = await connect("carol", "street", (OLD_DEVICES, NEW_DEVICES))
    pubsub = alice.plugin["xep_0060"]

    # The sequence an OMEMO client publishes on first start: bundle first, then the list.
    await pubsub.publish(ALICE, f"{OLD}.bundles:1001", id="current", payload=old_bundle(1001),
                         options=options(alice, access_model="open"))
    await pubsub.publish(ALICE, OLD_DEVICES, id="current", payload=old_devices(1001),
                         options=options(alice, access_model="open"))
    report["bob_old_event"] = await bob_inbox.next(OLD_DEVICES)
    report["alice_old_event"] = await alice_inbox.next(OLD_DEVICES)  # her own +notify resource
    await pubsub.publish(ALICE, NEW_BUNDLES, id="1001", payload=new_bundle(1001),
                         options=options(alice, access_model="open", max_items="max", persist_items="true"))
    await pubsub.publish(ALICE, NEW_DEVICES, id="current", payload=new_devices(1001),
                         options=options(alice, access_model="open", persist_items="true",
                                         send_last_published_item="on_sub_and_presence"))
    report["bob_new_event"] = await bob_inbox.next(NEW_DEVICES)

    # Reads: the contact and the stranger alike (open access).
    for name, client in (("bob", bob), ("carol", carol)):
        reader = client.plugin["xep_0060"]
        items = await reader.get_items(ALICE, OLD_DEVICES)
        report[f"{name}_old_list"] = [text(i["payload"]) for i in items["pubsub"]["items"]]
        bundle = await reader.get_item(ALICE, f"{OLD}.bundles:1001", "current")
        report[f"{name}_old_bundle"] = text(bundle["pubsub"]["items"]["item"]["payload"])
        items = await reader.get_items(ALICE, NEW_DEVICES)
        report[f"{name}_new_list"] = [text(i["payload"]) for i in items["pubsub"]["items"]]
        bundle = await reader.get_item(ALICE, NEW_BUNDLES, "1001")
        report[f"{name}_new_bundle"] = text(bundle["pubsub"]["items"]["item"]["payload"])

    # The stranger subscribes explicitly (she has no presence subscription).
    subscription = await carol.plugin["xep_0060"].subscribe(ALICE, NEW_DEVICES)
    report["carol_subscription"] = subscription["pubsub"]["subscription"]["subscription"]
    report["carol_last_item"] = await carol_inbox.next(NEW_DEVICES)  # send_last_published_item

    # A second device: one bundle item more (max_items=max), a longer list for everyone.
    await pubsub.publish(ALICE, NEW_BUNDLES, id="1002", payload=new_bundle(1002),
                         options=options(alice, access_model="open", max_items="max", persist_items="true"))
    await pubsub.publish(ALICE, NEW_DEVICES, id="current", payload=new_devices(1001, 1002),
                         options=options(alice, access_model="open", persist_items="true"))
    report["bob_second_event"] = await bob_inbox.next(NEW_DEVICES)
    report["carol_second_event"] = await carol_inbox.next(NEW_DEVICES)
    items = await carol.plugin["xep_0060"].get_items(ALICE, NEW_BUNDLES)
    report["bundle_ids"] = sorted(i["id"] for i in items["pubsub"]["items"])

    # The node exists with another configuration: precondition-not-met, nothing stored.
    try:
        await pubsub.publish(ALICE, OLD_DEVICES, id="current", payload=old_devices(1001, 666),
                             options=options(alice, access_model="presence"))
        report["mismatch"] = "published"
    except IqError as exc:
        report["mismatch"] = condition(exc)
    items = await bob.plugin["xep_0060"].get_items(ALICE, OLD_DEVICES)
    report["after_mismatch"] = [text(i["payload"]) for i in items["pubsub"]["items"]]

    # What clients do then: configure the node to match, publish again.
    await pubsub.publish(ALICE, f"{OLD}.bundles:1002", id="current", payload=old_bundle(1002))
    try:
        await carol.plugin["xep_0060"].get_item(ALICE, f"{OLD}.bundles:1002", "current")
        report["stranger_presence_bundle"] = "read"
    except IqError as exc:
        report["stranger_presence_bundle"] = condition(exc)
    try:
        await pubsub.publish(ALICE, f"{OLD}.bundles:1002", id="current", payload=old_bundle(1002),
                             options=options(alice, access_model="open"))
        report["reconfigure_needed"] = "published"
    except IqError as exc:
        report["reconfigure_needed"] = condition(exc)
    await pubsub.set_node_config(ALICE, f"{OLD}.bundles:1002",
                                 options(alice, form_type="node_config", access_model="open", max_items="max"))
    await pubsub.publish(ALICE, f"{OLD}.bundles:1002", id="current", payload=old_bundle(1002),
                         options=options(alice, access_model="open", max_items="max"))
    bundle = await carol.plugin["xep_0060"].get_item(ALICE, f"{OLD}.bundles:1002", "current")
    report["stranger_reads_reconfigured"] = text(bundle["pubsub"]["items"]["item"]["payload"])
    config = await pubsub.get_node_config(ALICE, NEW_BUNDLES)
    values = config["pubsub_owner"]["configure"]["form"].get_values()
    report["new_bundles_config"] = {k: str(values.get(f"pubsub#{k}")) for k in
                                    ("access_model", "max_items", "persist_items")}

    # A node whose last item is not for those coming online (sorted between the two lists).
    await pubsub.publish(ALICE, QUIET, payload=ET.fromstring("<quiet xmlns='urn:example'/>"),
                         options=options(alice, send_last_published_item="never"))
    await bob_inbox.next(QUIET)  # a live publish still notifies

    # Bob's second device logs in: the last items of the nodes he is interested in.
    laptop, laptop_inbox = await connect("bob", "laptop", (OLD_DEVICES, QUIET, NEW_DEVICES))
    report["laptop_gets"] = sorted([(await laptop_inbox.next(OLD_DEVICES))["payload"],
                                    (await laptop_inbox.next(NEW_DEVICES))["payload"]])
    report["laptop_seen"] = laptop_inbox.seen
    # A stranger's +notify gets her nothing she did not subscribe to.
    await carol.plugin["xep_0199"].ping(DOMAIN)
    report["carol_quiet"] = carol_inbox.pending()

    for client in (alice, bob, carol, laptop):
        client.disconnect()
    print(json.dumps(report), flush=True)


asyncio.run(asyncio.wait_for(main(), 90))
