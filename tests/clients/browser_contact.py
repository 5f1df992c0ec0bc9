"""A slixmpp contact for the browser test, driven line by line: commands as JSON
on stdin, events as JSON on stdout.

    python browser_contact.py HOST PORT JID PASSWORD

Commands: {"op": "chat", "to", "body"}, {"op": "join", "room", "nick"},
{"op": "groupchat", "room", "body"}, {"op": "quit"}.
Events: {"event": "online"}, {"event": "message", "from", "type", "body", "oob"},
{"event": "joined", "room"}.
"""

import asyncio
import json
import sys

from xmpp_client import Client

HOST, PORT, JID, PASSWORD = sys.argv[1:5]


def emit(**event):
    print(json.dumps(event), flush=True)


async def main():
    client = Client(JID, PASSWORD, plugins=("xep_0030", "xep_0045", "xep_0066", "xep_0199"))

    def on_message(message):
        if message["body"]:
            emit(event="message", type=message["type"], body=message["body"],
                 oob=message["oob"]["url"] if message["oob"]["url"] else None, **{"from": str(message["from"])})

    client.add_event_handler("message", on_message)
    client.add_event_handler("groupchat_message", on_message)
    await client.online(HOST, PORT)
    emit(event="online")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        op = command["op"]
        if op == "chat":
            client.send_message(mto=command["to"], mbody=command["body"], mtype="chat")
        elif op == "join":
            await client.plugin["xep_0045"].join_muc_wait(command["room"], command["nick"], maxstanzas=0)
            emit(event="joined", room=command["room"])
        elif op == "groupchat":
            client.send_message(mto=command["room"], mbody=command["body"], mtype="groupchat")
        elif op == "quit":
            break
    client.disconnect()
    await client.disconnected


asyncio.run(main())
