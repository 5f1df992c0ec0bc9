"""vCards and avatars with slixmpp's own plugins: XEP-0054 (vcard-temp), XEP-0153
(vCard avatars, presence hashes) and XEP-0084 (PEP avatars), and the server's
XEP-0398 conversion between them.

    python vcard_avatar.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import hashlib
import json
import sys
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
METADATA = "urn:xmpp:avatar:metadata"
PLUGINS = ("xep_0030", "xep_0004", "xep_0054", "xep_0060", "xep_0084", "xep_0115", "xep_0153",
           "xep_0163", "xep_0199")
FIRST = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
SECOND = b"\xff\xd8\xff\xe0" + bytes(reversed(range(256))) * 8


def sha1(data):
    return hashlib.sha1(data).hexdigest()


async def connect(user, resource):
    client = Client(f"{user}@{DOMAIN}/{resource}", PASSWORD, plugins=PLUGINS)
    client.hashes = asyncio.Queue()  # XEP-0153 hashes in alice's presence
    client.metadata = asyncio.Queue()
    client.add_event_handler("presence_available", lambda p: p["from"].bare == ALICE and client.hashes.put_nowait(
        p["vcard_temp_update"]["photo"] if p.xml.find("{vcard-temp:x:update}x") is not None else "(none)"))
    client.add_event_handler("pubsub_publish", lambda m: m["pubsub_event"]["items"]["node"] == METADATA
                             and client.metadata.put_nowait(m["pubsub_event"]["items"]["item"]["id"]))
    await client.online(HOST, PORT, presence=False)
    client.plugin["xep_0030"].add_feature(f"{METADATA}+notify")
    await client.plugin["xep_0115"].update_caps(broadcast=False)
    client.send_presence()
    return client


async def until(queue, value, timeout=10):
    """Wait for ``value`` on ``queue``; returns what came before it."""
    before = []
    while True:
        got = await asyncio.wait_for(queue.get(), timeout)
        if got == value:
            return before
        before.append(got)


async def condition(call):
    try:
        await call
        return "ok"
    except IqError as exc:
        return exc.condition


async def main():
    report = {}
    alice = await connect("alice", "phone")
    bob = await connect("bob", "desk")
    eve = await connect("eve", "x")

    info = await bob.plugin["xep_0030"].get_info(jid=ALICE)
    report["conversion_feature"] = "urn:xmpp:pep-vcard-conversion:0" in info["disco_info"]["features"]
    report["bob_none"] = await condition(bob.plugin["xep_0054"].get_vcard(BOB))

    # XEP-0153 the slixmpp way: read the vCard, set its PHOTO, publish it.
    await alice.plugin["xep_0153"].set_avatar(avatar=FIRST, mtype="image/png")
    await until(bob.metadata, sha1(FIRST))  # XEP-0398: the server published XEP-0084
    data = await bob.plugin["xep_0084"].retrieve_avatar(ALICE, sha1(FIRST))
    report["bob_avatar_data"] = data["pubsub"]["items"]["item"]["avatar_data"]["value"] == FIRST
    await until(bob.hashes, sha1(FIRST))  # XEP-0153 in alice's presence
    report["eve_reads_data"] = await condition(eve.plugin["xep_0084"].retrieve_avatar(ALICE, sha1(FIRST)))

    # XEP-0084 the slixmpp way: data, then metadata; the server updates the vCard.
    await alice.plugin["xep_0084"].publish_avatar(SECOND)
    await alice.plugin["xep_0084"].publish_avatar_metadata(
        {"id": sha1(SECOND), "type": "image/jpeg", "bytes": len(SECOND)})
    await until(bob.hashes, sha1(SECOND))  # the server re-sent alice's presence
    vcard = await eve.plugin["xep_0054"].get_vcard(ALICE)
    report["vcard_photo"] = [vcard["vcard_temp"]["PHOTO"]["TYPE"],
                             vcard["vcard_temp"]["PHOTO"]["BINVAL"] == SECOND]

    # Bad input: another account's vCard, a wrong hash, bad base64.
    forged = eve.plugin["xep_0054"].make_vcard()
    forged["FN"] = "Forged"
    report["eve_sets_alices"] = await condition(eve.plugin["xep_0054"].publish_vcard(forged, jid=ALICE))
    data = alice.plugin["xep_0084"].stanza.Data()
    data["value"] = FIRST
    report["wrong_hash"] = await condition(alice.plugin["xep_0060"].publish(
        ALICE, "urn:xmpp:avatar:data", id=sha1(b"something else"), payload=data))
    bad = alice.make_iq_set()
    bad.append(alice.plugin["xep_0054"].make_vcard())
    bad["vcard_temp"]["FN"] = "Alice"
    bad.xml.find("{vcard-temp}vCard").append(
        ET.fromstring(
            "<PHOTO xmlns='vcard-temp'><TYPE>image/png</TYPE><BINVAL>@@@ not base64</BINVAL></PHOTO>"))
    report["bad_base64"] = await condition(bad.send())
    vcard = await bob.plugin["xep_0054"].get_vcard(ALICE)
    report["unchanged"] = vcard["vcard_temp"]["PHOTO"]["BINVAL"] == SECOND and not vcard["vcard_temp"]["FN"]

    for client in (alice, bob, eve):
        client.disconnect()
    print(json.dumps(report), flush=True)


asyncio.run(asyncio.wait_for(main(), 90))
