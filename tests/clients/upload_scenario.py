"""slixmpp's XEP-0363 plugin against our server: discover the upload service,
request a slot, PUT the file over HTTP, and report the GET URL.

    python upload_scenario.py HOST PORT DOMAIN PASSWORD FILE
"""

import asyncio
import json
import sys

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD, FILE = sys.argv[1:6]


async def main():
    alice = await Client(f"alice@{DOMAIN}/uploader", PASSWORD,
                         plugins=("xep_0030", "xep_0363")).online(HOST, PORT)
    upload = alice.plugin["xep_0363"]
    url = await upload.upload_file(FILE, content_type="image/png", timeout=20)
    report = {"url": url, "service": str(upload.upload_service), "max_file_size": upload.max_file_size}
    alice.disconnect()
    print(json.dumps(report))


asyncio.run(main())
