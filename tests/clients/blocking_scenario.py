"""slixmpp's XEP-0191 plugin against our server: list, block, the pushes,
what a block does to messages both ways, unblock.

    python blocking_scenario.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import json
import sys

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]


async def main():
    alice = await Client(f"alice@{DOMAIN}/phone", PASSWORD, plugins=("xep_0030", "xep_0191")).online(HOST, PORT)
    eve = await Client(f"eve@{DOMAIN}/desk", PASSWORD).online(HOST, PORT)
    report = {}
    inboxes = {name: asyncio.Queue() for name in ("alice", "eve", "blocked", "unblocked")}
    alice.add_event_handler("message", inboxes["alice"].put_nowait)
    eve.add_event_handler("message", inboxes["eve"].put_nowait)
    alice.add_event_handler("blocked", inboxes["blocked"].put_nowait)
    alice.add_event_handler("unblocked", inboxes["unblocked"].put_nowait)

    async def next_of(name, timeout=10):
        return await asyncio.wait_for(inboxes[name].get(), timeout)

    info = await alice.plugin["xep_0030"].get_info(jid=DOMAIN)
    report["advertised"] = "urn:xmpp:blocking" in info["disco_info"]["features"]
    blocking = alice.plugin["xep_0191"]
    report["initial"] = sorted(str(j) for j in await blocking.get_blocked_jids())
    await blocking.block([f"eve@{DOMAIN}", "spam.example"])
    push = await next_of("blocked")
    report["pushed"] = sorted(str(item["jid"]) for item in push["block"]["substanzas"])
    report["listed"] = sorted(str(j) for j in await blocking.get_blocked_jids())

    eve.send_message(mto=f"alice@{DOMAIN}", mbody="let me in", mtype="chat")
    bounced = await next_of("eve")
    report["incoming"] = [bounced["type"], bounced["error"]["condition"]]
    alice.send_message(mto=f"eve@{DOMAIN}", mbody="go away", mtype="chat")
    refused = await next_of("alice")
    report["outgoing"] = [refused["type"], refused["error"]["condition"],
                          "urn:xmpp:blocking:errors" in str(refused["error"])]

    await blocking.unblock(f"eve@{DOMAIN}")
    push = await next_of("unblocked")
    report["unpushed"] = sorted(str(item["jid"]) for item in push["unblock"]["substanzas"])
    eve.send_message(mto=f"alice@{DOMAIN}", mbody="friends again", mtype="chat")
    report["after"] = (await next_of("alice"))["body"]
    report["final"] = sorted(str(j) for j in await blocking.get_blocked_jids())
    for client in (alice, eve):
        client.disconnect()
    print(json.dumps(report))


asyncio.run(main())
