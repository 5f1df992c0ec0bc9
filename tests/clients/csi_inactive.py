"""slixmpp's XEP-0352 plugin: while inactive, presence waits (the latest only)
until a message with a body; ``active`` lets everything through again.

    python csi_inactive.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import json
import sys

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"


async def main():
    alice = Client(f"{ALICE}/phone", PASSWORD, plugins=("xep_0030", "xep_0199", "xep_0352"))
    bob = Client(f"{BOB}/desk", PASSWORD, plugins=("xep_0030", "xep_0199"))
    seen: asyncio.Queue = asyncio.Queue()
    alice.add_event_handler("presence_available",
                            lambda p: p["from"].bare == BOB and seen.put_nowait(f"presence:{p['status']}"))
    alice.add_event_handler("message", lambda m: m["body"] and seen.put_nowait(f"body:{m['body']}"))
    await alice.online(HOST, PORT, presence=False)
    await bob.online(HOST, PORT, presence=False)
    report = {"csi_offered": alice.plugin["xep_0352"].enabled}

    alice.plugin["xep_0352"].send_inactive()
    await alice.plugin["xep_0199"].ping(DOMAIN)  # the server has read it
    for n in range(3):
        bob.send_presence(pto=f"{ALICE}/phone", pstatus=f"s{n}")
    await bob.plugin["xep_0199"].ping(DOMAIN)
    bob.send_message(mto=f"{ALICE}/phone", mbody="wake up", mtype="chat")
    report["seen"] = [await asyncio.wait_for(seen.get(), 20) for _ in range(2)]

    alice.plugin["xep_0352"].send_active()
    await alice.plugin["xep_0199"].ping(DOMAIN)
    bob.send_presence(pto=f"{ALICE}/phone", pstatus="s3")
    report["after_active"] = await asyncio.wait_for(seen.get(), 20)
    bob.disconnect()
    alice.disconnect()
    print(json.dumps(report))


asyncio.run(main())
