"""slixmpp's XEP-0198 plugin against the server: acks, a dropped connection,
resumption, and the messages sent meanwhile.

    python sm_resume.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import json
import sys

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"


async def main():
    # (no compression: this test client's zlib state would not survive the reconnection)
    alice = Client(f"{ALICE}/phone", PASSWORD, compress=False, plugins=("xep_0030", "xep_0199", "xep_0198"))
    bob = Client(f"{BOB}/desk", PASSWORD)
    enabled = asyncio.get_running_loop().create_future()
    alice.add_event_handler("sm_enabled", lambda s: enabled.done() or enabled.set_result(s["id"]))
    received: asyncio.Queue = asyncio.Queue()
    alice.add_event_handler("message", lambda m: m["body"] and received.put_nowait(m["body"]))
    await alice.online(HOST, PORT)
    await bob.online(HOST, PORT)
    report = {"sm_id": bool(await asyncio.wait_for(enabled, 20))}

    for n in range(3):
        bob.send_message(mto=ALICE, mbody=f"m{n}", mtype="chat")
    report["before"] = [await asyncio.wait_for(received.get(), 20) for _ in range(3)]
    sm = alice.plugin["xep_0198"]
    sm.request_ack()  # slixmpp's own <r/>: the server answers with what it handled
    await asyncio.sleep(0)

    # The network goes away under alice (no </stream:stream>); bob goes on writing.
    resumed = asyncio.get_running_loop().create_future()
    alice.add_event_handler("session_resumed", lambda s: resumed.done() or resumed.set_result(True))
    alice.add_event_handler("sm_failed", lambda s: resumed.done() or resumed.set_result(False))
    gone = asyncio.get_running_loop().create_future()
    alice.add_event_handler("disconnected", lambda e: gone.done() or gone.set_result(True))
    alice.abort()
    await asyncio.wait_for(gone, 20)
    for n in range(3, 5):
        bob.send_message(mto=ALICE, mbody=f"m{n}", mtype="chat")
    await bob.plugin["xep_0199"].ping(DOMAIN)  # bob's messages were handled
    alice.connect(HOST, int(PORT))
    report["resumed"] = await asyncio.wait_for(resumed, 20)
    report["after"] = [await asyncio.wait_for(received.get(), 20) for _ in range(2)]
    # A round trip on the resumed stream: it is the same session.
    pong = await alice.plugin["xep_0199"].send_ping(DOMAIN)
    report["pong_to"] = str(pong["to"])
    report["handled_by_server"] = sm.last_ack
    bob.disconnect()
    alice.disconnect()
    print(json.dumps(report))


asyncio.run(main())
