"""XEP-0410 with slixmpp's own plugin (xep_0410.send_self_ping): bob is joined,
then not; eve never was.

    python self_ping.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import json
import sys

from slixmpp import JID

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]
ROOM = JID(f"pinged@chat.{DOMAIN}")
PLUGINS = ("xep_0004", "xep_0030", "xep_0045", "xep_0199", "xep_0410")


async def main():
    report = {}
    bob = await Client(f"bob@{DOMAIN}/laptop", PASSWORD, plugins=PLUGINS).online(HOST, PORT)
    eve = await Client(f"eve@{DOMAIN}/lair", PASSWORD, plugins=PLUGINS).online(HOST, PORT)
    occupant = JID(f"{ROOM}/Bob")
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "Bob", maxstanzas=0)
    report["joined"] = (await bob.plugin["xep_0410"].send_self_ping(occupant, timeout=10)).name
    report["stranger"] = (await eve.plugin["xep_0410"].send_self_ping(occupant, timeout=10)).name
    info = await bob.plugin["xep_0030"].get_info(jid=ROOM)
    report["optimized"] = "http://jabber.org/protocol/muc#self-ping-optimization" in info["disco_info"]["features"]
    # The server handles one session's stanzas in order, and one room's one at a time:
    # the ping is answered after the departure.
    bob.plugin["xep_0045"].leave_muc(ROOM, "Bob")
    report["after_leaving"] = (await bob.plugin["xep_0410"].send_self_ping(occupant, timeout=10)).name
    for client in (bob, eve):
        client.disconnect()
    print(json.dumps(report), flush=True)


asyncio.run(asyncio.wait_for(main(), 90))
