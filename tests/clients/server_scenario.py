"""slixmpp against our server: login (SCRAM over STARTTLS, then zlib), ping, disco,
message routing between two accounts and two resources, errors for unknown users.

    python server_scenario.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import json
import sys

from slixmpp.exceptions import IqError

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]


async def main():
    phone = await Client(f"alice@{DOMAIN}/phone", PASSWORD, plugins=("xep_0030", "xep_0199", "xep_0092")).online(HOST, PORT)
    laptop = await Client(f"alice@{DOMAIN}/laptop", PASSWORD).online(HOST, PORT)
    bob = await Client(f"bob@{DOMAIN}/desk", PASSWORD).online(HOST, PORT)
    report = {"compressed": [c.compressed for c in (phone, laptop, bob)],
              "mechanism": phone.plugin["feature_mechanisms"].mech.name,
              "bound": phone.boundjid.full}

    await phone.plugin["xep_0199"].ping(DOMAIN)
    report["ping"] = True
    info = await phone.plugin["xep_0030"].get_info(jid=DOMAIN)
    report["identities"] = sorted(f"{c}/{t}" for c, t, _, _ in info["disco_info"]["identities"])
    report["features"] = sorted(info["disco_info"]["features"])
    items = await phone.plugin["xep_0030"].get_items(jid=DOMAIN)
    report["items"] = sorted(i[0] for i in items["disco_items"]["items"])
    version = await phone.plugin["xep_0092"].get_version(DOMAIN)
    report["version"] = version["software_version"]["name"]

    inboxes = {name: asyncio.Queue() for name in ("phone", "laptop", "bob")}
    for name, client in (("phone", phone), ("laptop", laptop), ("bob", bob)):
        client.add_event_handler("message", lambda m, name=name: inboxes[name].put_nowait(m))

    async def next_message(name, timeout=10):
        return await asyncio.wait_for(inboxes[name].get(), timeout)

    # To the bare JID: both resources (same priority) get it.
    bob.send_message(mto=f"alice@{DOMAIN}", mbody="to bare", mtype="chat")
    got = [await next_message("phone"), await next_message("laptop")]
    report["bare_delivery"] = [(m["from"].full, m["body"]) for m in got]
    # To one resource: only that one.
    bob.send_message(mto=f"alice@{DOMAIN}/laptop", mbody="to laptop", mtype="chat")
    report["full_delivery"] = (await next_message("laptop"))["body"]
    # And back.
    phone.send_message(mto=f"bob@{DOMAIN}/desk", mbody="hi bob", mtype="chat")
    report["reply"] = (await next_message("bob"))["body"]
    # Unknown user: the message bounces with service-unavailable.
    bob.send_message(mto=f"nobody@{DOMAIN}", mbody="hello?", mtype="chat")
    error = await next_message("bob")
    report["unknown_user"] = [error["type"], error["error"]["condition"]]
    # iq to a resource that is not online: service-unavailable.
    try:
        await bob.plugin["xep_0199"].ping(f"alice@{DOMAIN}/nowhere")
        report["iq_unknown_resource"] = "answered"
    except IqError as exc:
        report["iq_unknown_resource"] = exc.condition
    # A domain that is not ours: no server-to-server here.
    try:
        await bob.plugin["xep_0199"].ping("elsewhere.example")
        report["remote"] = "answered"
    except IqError as exc:
        report["remote"] = exc.condition
    report["quiet"] = all(inboxes[name].empty() for name in inboxes)

    for client in (phone, laptop, bob):
        client.disconnect()
    print(json.dumps(report), flush=True)


asyncio.run(asyncio.wait_for(main(), 90))
