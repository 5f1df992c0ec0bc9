"""slixmpp's xep_0077 against our server with registration off: alice changes
her password (the old one stops working, the new one works), then cancels her
account while bob, her contact, watches.

    python account_scenario.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import json
import sys

from slixmpp.exceptions import IqError

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]
NEW_PASSWORD = "a much better password"
PLUGINS = ("xep_0030", "xep_0199", "xep_0077")


async def main():
    report = {}
    alice = await Client(f"alice@{DOMAIN}/phone", PASSWORD, plugins=PLUGINS).online(HOST, PORT)
    bob = await Client(f"bob@{DOMAIN}/desk", PASSWORD, plugins=PLUGINS).online(HOST, PORT)
    subscribed = asyncio.get_running_loop().create_future()
    bob.add_event_handler("presence_subscribed", lambda p: subscribed.done() or subscribed.set_result(p))
    bob.send_presence_subscription(pto=f"alice@{DOMAIN}")  # alice's slixmpp approves by itself
    await asyncio.wait_for(subscribed, 10)

    reply = await alice.plugin["xep_0077"].change_password(NEW_PASSWORD, timeout=10)
    report["changed"] = reply["type"]
    try:
        stale = await Client(f"alice@{DOMAIN}/stale", PASSWORD).online(HOST, PORT, timeout=10)
        report["old_password"] = "logged in"
        stale.disconnect()
    except (RuntimeError, asyncio.TimeoutError):
        report["old_password"] = "refused"
    fresh = await Client(f"alice@{DOMAIN}/fresh", NEW_PASSWORD).online(HOST, PORT)
    report["new_password"] = "logged in"
    fresh.disconnect()

    seen = asyncio.Queue()
    for event in ("presence_unavailable", "presence_unsubscribed"):
        bob.add_event_handler(event, lambda p: seen.put_nowait(p["type"])
                              if p["from"].bare == f"alice@{DOMAIN}" else None)
    ended = asyncio.get_running_loop().create_future()
    alice.add_event_handler("disconnected", lambda _: ended.done() or ended.set_result(True))
    try:
        reply = await alice.plugin["xep_0077"].cancel_registration(timeout=10)
        report["cancel"] = reply["type"]
    except IqError as exc:
        report["cancel"] = exc.iq["error"]["condition"]
    await asyncio.wait_for(ended, 10)
    saw = []
    while len(set(saw)) < 2:
        saw.append(await asyncio.wait_for(seen.get(), 10))
    report["bob_saw"] = sorted(set(saw))
    bob.disconnect()
    print(json.dumps(report))


asyncio.run(main())
