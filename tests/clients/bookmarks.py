"""XEP-0048 (in XEP-0049 private storage) and XEP-0402 bookmarks kept in sync
(XEP-0411), driven by slixmpp's own xep_0048, xep_0049 and xep_0402 plugins.

    python bookmarks.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import json
import sys

from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0048.stanza import Bookmarks
from slixmpp.plugins.xep_0402.stanza import Conference
from slixmpp.xmlstream import ElementBase

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]
ALICE = f"alice@{DOMAIN}"
NODE = "urn:xmpp:bookmarks:1"
PLUGINS = ("xep_0030", "xep_0004", "xep_0048", "xep_0049", "xep_0060", "xep_0115", "xep_0163",
           "xep_0199", "xep_0402")


class Notes(ElementBase):
    """Some other private data (XEP-0145 annotations)."""

    name = "storage"
    namespace = "storage:rosternotes"
    plugin_attrib = "rosternotes"
    interfaces = {"note"}
    sub_interfaces = {"note"}


async def connect(user, resource):
    client = Client(f"{user}@{DOMAIN}/{resource}", PASSWORD, plugins=PLUGINS)
    client.plugin["xep_0049"].register(Notes)
    events = asyncio.Queue()
    client.add_event_handler("pubsub_publish", lambda m: events.put_nowait(("publish", m)))
    client.add_event_handler("pubsub_retract", lambda m: events.put_nowait(("retract", m)))
    await client.online(HOST, PORT, presence=False)
    client.plugin["xep_0030"].add_feature(f"{NODE}+notify")
    await client.plugin["xep_0115"].update_caps(broadcast=False)
    client.send_presence()
    return client, events


async def next_event(events):
    kind, message = await asyncio.wait_for(events.get(), 10)
    items = message["pubsub_event"]["items"]
    if kind == "publish":
        return [kind, items["node"], items["item"]["id"], items["item"]["payload"].get("name")]
    return [kind, items["node"], items["retract"]["id"]]


def conferences_0048(result):
    bookmarks = result["private"]["bookmarks"]
    return sorted([str(c["jid"]), c["name"], c["autojoin"], c["nick"]] for c in bookmarks["conferences"])


async def main():
    report = {}
    laptop, laptop_events = await connect("alice", "laptop")  # an old client: XEP-0048
    phone, phone_events = await connect("alice", "phone")  # a new one: XEP-0402
    eve, _ = await connect("eve", "x")

    info = await phone.plugin["xep_0030"].get_info(jid=ALICE)
    report["compat"] = "urn:xmpp:bookmarks:1#compat" in info["disco_info"]["features"]

    bookmarks = Bookmarks()
    bookmarks.add_conference(f"tea@chat.{DOMAIN}", "al", name="Tea", autojoin=True)
    bookmarks.add_conference(f"cake@chat.{DOMAIN}", "alice", name="Cake", autojoin=False)
    bookmarks.add_url("https://example.org/", name="home")
    await laptop.plugin["xep_0048"].set_bookmarks(bookmarks, method="xep_0049")
    report["phone_events"] = sorted([await next_event(phone_events), await next_event(phone_events)])
    items = await phone.plugin["xep_0060"].get_items(ALICE, NODE)
    report["as_0402"] = sorted([i["id"], i["conference"]["name"], i["conference"]["autojoin"],
                                i["conference"]["nick"]] for i in items["pubsub"]["items"])

    # The new client adds one (with XEP-0402's publish-options), removes one.
    conference = Conference()
    conference["name"], conference["autojoin"], conference["nick"] = "Pie", True, "ali"
    form = phone.plugin["xep_0004"].make_form("submit")
    form.add_field("FORM_TYPE", value="http://jabber.org/protocol/pubsub#publish-options", ftype="hidden")
    for var, value in (("persist_items", "true"), ("max_items", "max"),
                       ("send_last_published_item", "never"), ("access_model", "whitelist")):
        form.add_field(f"pubsub#{var}", value=value)
    await phone.plugin["xep_0060"].publish(ALICE, NODE, id=f"pie@chat.{DOMAIN}", payload=conference, options=form)
    await phone.plugin["xep_0060"].retract(ALICE, NODE, f"cake@chat.{DOMAIN}", notify=True)
    report["laptop_events"] = [await next_event(laptop_events) for _ in range(4)]
    result = await laptop.plugin["xep_0048"].get_bookmarks(method="xep_0049")
    report["as_0048"] = conferences_0048(result)
    report["urls"] = [u["url"] for u in result["private"]["bookmarks"]["urls"]]

    # Other private data beside it; another account sees nothing of either.
    notes = Notes()
    notes["note"] = "bob is tall"
    await laptop.plugin["xep_0049"].store(notes)
    result = await phone.plugin["xep_0049"].retrieve("rosternotes")
    report["notes"] = result["private"]["rosternotes"]["note"]
    try:
        iq = eve.make_iq_get(ito=ALICE)
        iq["private"].enable("rosternotes")
        await iq.send()
        report["eve_private"] = "read"
    except IqError as exc:
        report["eve_private"] = exc.condition
    try:
        await eve.plugin["xep_0060"].get_items(ALICE, NODE)
        report["eve_0402"] = "read"
    except IqError as exc:
        report["eve_0402"] = exc.condition
    result = await eve.plugin["xep_0048"].get_bookmarks(method="xep_0049")
    report["eve_own"] = conferences_0048(result)

    for client in (laptop, phone, eve):
        client.disconnect()
    print(json.dumps(report), flush=True)


asyncio.run(asyncio.wait_for(main(), 90))
