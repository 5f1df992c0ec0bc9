"""slixmpp's xep_0050/xep_0133 against our server: alice (an --admin) lists the
commands, adds carol, counts who is online; bob, not an admin, is refused.

    python admin_scenario.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import json
import sys

from slixmpp.exceptions import IqError

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]
PLUGINS = ("xep_0030", "xep_0004", "xep_0050", "xep_0133")
ADMIN = "http://jabber.org/protocol/admin"


async def main():
    report = {}
    alice = await Client(f"alice@{DOMAIN}/desk", PASSWORD, plugins=PLUGINS).online(HOST, PORT)
    bob = await Client(f"bob@{DOMAIN}/desk", PASSWORD, plugins=PLUGINS).online(HOST, PORT)
    items = await alice.plugin["xep_0050"].get_commands(DOMAIN)
    report["commands"] = sorted(node.split("#")[1] for _, node, _ in items["disco_items"]["items"])
    adhoc = alice.plugin["xep_0050"]
    first = await adhoc.send_command(DOMAIN, f"{ADMIN}#add-user")
    form = first["command"]["form"]
    report["form_fields"] = sorted(form.get_fields())
    answer = alice.plugin["xep_0004"].make_form(ftype="submit")
    answer.add_field(var="FORM_TYPE", ftype="hidden", value=ADMIN)
    answer.add_field(var="accountjid", value=f"carol@{DOMAIN}")
    answer.add_field(var="password", value="carols-password")
    answer.add_field(var="password-verify", value="carols-password")
    done = await adhoc.send_command(DOMAIN, f"{ADMIN}#add-user", action="complete", payload=answer,
                                    sessionid=first["command"]["sessionid"])
    report["add_user"] = done["command"]["status"]
    carol = await Client(f"carol@{DOMAIN}/r", "carols-password").online(HOST, PORT)
    count = await adhoc.send_command(DOMAIN, f"{ADMIN}#get-online-users-num")
    report["online"] = count["command"]["form"].get_values()["onlineusersnum"]
    try:
        await bob.plugin["xep_0050"].send_command(DOMAIN, f"{ADMIN}#get-online-users-num")
        report["bob"] = "allowed"
    except IqError as exc:
        report["bob"] = exc.iq["error"]["condition"]
    for client in (alice, bob, carol):
        client.disconnect()
    print(json.dumps(report))


asyncio.run(main())
