"""slixmpp over XEP-0368 direct TLS (no STARTTLS allowed): log in, ping.

    python direct_tls.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import json
import sys

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]


async def main():
    alice = Client(f"alice@{DOMAIN}/tls", PASSWORD, compress=False)
    alice.enable_direct_tls = True
    alice.enable_starttls = False  # only TLS from the first byte may succeed
    await alice.online(HOST, PORT)
    ssl_object = alice.transport.get_extra_info("ssl_object")
    pong = await alice.plugin["xep_0199"].send_ping(DOMAIN)
    report = {"tls": ssl_object is not None, "alpn": ssl_object.selected_alpn_protocol() if ssl_object else None,
              "pong": pong["type"]}
    alice.disconnect()
    print(json.dumps(report))


asyncio.run(main())
