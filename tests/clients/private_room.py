"""The private group chat an OMEMO client (Conversations) makes, through
slixmpp's XEP-0045 plugin: alice creates a members-only, non-anonymous,
persistent room, adds bob and carol as members while they are offline; bob
comes online, sees from disco#info that the room is private, reads the member
list (as OMEMO needs, to encrypt to every member), and joins.

    python private_room.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import json
import sys

from slixmpp import JID
from slixmpp.plugins.xep_0004 import Form

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]
ROOM = JID(f"secret@chat.{DOMAIN}")
PLUGINS = ("xep_0004", "xep_0030", "xep_0045")


async def main():
    report = {}
    alice = await Client(f"alice@{DOMAIN}/phone", PASSWORD, plugins=PLUGINS).online(HOST, PORT)
    muc = alice.plugin["xep_0045"]
    presence, subject, occupants, history = await muc.join_muc_wait(ROOM, "Alice", maxstanzas=0)
    report["created"] = 201 in {int(c) for c in presence["muc"]["status_codes"]}

    # Conversations answers 201 with its private-group configuration.
    form = await muc.get_room_config(ROOM)
    wanted = {"muc#roomconfig_membersonly": True, "muc#roomconfig_whois": "anyone",
              "muc#roomconfig_persistentroom": True, "muc#roomconfig_publicroom": False}
    config = Form()
    config.add_field("FORM_TYPE", value="http://jabber.org/protocol/muc#roomconfig", ftype="hidden")
    for var, value in wanted.items():
        report.setdefault("offered", []).append(var in form.get_fields())
        config.add_field(var, value=value)
    status = asyncio.Queue()
    alice.add_event_handler(f"muc::{ROOM}::config_status", lambda m: status.put_nowait(m))
    await muc.set_room_config(ROOM, config)
    told = await asyncio.wait_for(status.get(), 10)
    report["config_codes"] = sorted(int(c) for c in told["muc"]["status_codes"])

    changes = asyncio.Queue()
    alice.add_event_handler(f"muc::{ROOM}::affiliation_change", lambda m: changes.put_nowait(m))
    for user in ("bob", "carol"):  # both offline
        await muc.set_affiliation(ROOM, "member", jid=JID(f"{user}@{DOMAIN}"))
        change = await asyncio.wait_for(changes.get(), 10)
        report.setdefault("alice_told", []).append(
            [change["muc"]["item"]["jid"].bare, change["muc"]["item"]["affiliation"]])

    bob = await Client(f"bob@{DOMAIN}/laptop", PASSWORD, plugins=PLUGINS).online(HOST, PORT)
    info = await bob.plugin["xep_0030"].get_info(jid=ROOM)
    features = set(info["disco_info"]["features"])
    report["features"] = sorted(f for f in features if f.startswith("muc_"))
    roominfo = [f for f in info["disco_info"].iterables if f.name == "x"]
    form_types = [f.get_values().get("FORM_TYPE") for f in roominfo]  # slixmpp reads a hidden field as a list
    report["roominfo"] = [t[0] if isinstance(t, list) else t for t in form_types]
    members = await bob.plugin["xep_0045"].get_affiliation_list(ROOM, "member")
    owners = await bob.plugin["xep_0045"].get_affiliation_list(ROOM, "owner")
    report["members_seen_by_bob"] = sorted(str(j) for j in members)
    report["owners_seen_by_bob"] = sorted(str(j) for j in owners)
    presence, subject, occupants, history = await bob.plugin["xep_0045"].join_muc_wait(ROOM, "Bob", maxstanzas=0)
    report["bob_sees"] = {p["muc"]["nick"]: str(p["muc"]["jid"]) for p in occupants}

    for client in (alice, bob):
        client.disconnect()
    print(json.dumps(report), flush=True)


asyncio.run(asyncio.wait_for(main(), 90))
