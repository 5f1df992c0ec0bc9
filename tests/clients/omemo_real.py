"""Real OMEMO (slixmpp-omemo's XEP-0384 plugin, both protocol generations) through our PEP.

Alice and Bob each start an OMEMO device: the plugin publishes its bundles and
device lists with publish-options (reconfiguring nodes where a precondition is
not met), then Alice encrypts a message for Bob, which needs Bob's device list
and bundle from his PEP service, and Bob decrypts it, which needs Alice's.
Trust is blind before verification (BTBV), as in most clients.

    python omemo_real.py HOST PORT DOMAIN PASSWORD
"""

import asyncio
import json
import sys

from omemo.storage import Just, JSONType, Maybe, Nothing, Storage
from slixmpp import JID
from slixmpp.plugins import register_plugin
from slixmpp_omemo import TrustLevel, XEP_0384

from xmpp_client import Client

HOST, PORT, DOMAIN, PASSWORD = sys.argv[1:5]
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"


class MemoryStorage(Storage):
    """The plugin's key-value store, kept in memory for one run."""

    def __init__(self):
        super().__init__()
        self.data = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self.data[key] = value

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


class OmemoPlugin(XEP_0384):
    def plugin_init(self):
        self._memory = MemoryStorage()
        super().plugin_init()

    @property
    def storage(self) -> Storage:
        return self._memory

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _devices_blindly_trusted(self, blindly_trusted, identifier):
        pass

    async def _prompt_manual_trust(self, manually_trusted, identifier):
        session_manager = await self.get_session_manager()
        for device in manually_trusted:
            await session_manager.set_trust(device.bare_jid, device.identity_key, TrustLevel.TRUSTED.value)


register_plugin(OmemoPlugin)


async def connect(user):
    client = Client(f"{user}@{DOMAIN}/omemo", PASSWORD,
                    plugins=("xep_0030", "xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0199"))
    client.register_plugin("xep_0384", module=sys.modules[__name__])
    ready = asyncio.get_running_loop().create_future()
    client.add_event_handler("omemo_initialized", lambda *_: ready.done() or ready.set_result(True))
    client.inbox = asyncio.Queue()
    client.add_event_handler("message", client.inbox.put_nowait)
    await client.online(HOST, PORT)
    await asyncio.wait_for(ready, 30)
    return client


async def main():
    report = {}
    alice = await connect("alice")
    bob = await connect("bob")
    for name, client in (("alice", alice), ("bob", bob)):
        manager = await client.plugin["xep_0384"].get_session_manager()
        devices = await manager.get_device_information(client.boundjid.bare)
        report[f"{name}_devices"] = len(devices)
    # Both generations' nodes exist on Bob's PEP service, open to anyone.
    items = await alice.plugin["xep_0030"].get_items(jid=BOB)
    report["bob_nodes"] = sorted(i[1] for i in items["disco_items"]["items"]
                                 if "omemo" in (i[1] or "") or "axolotl" in (i[1] or ""))

    plain = alice.make_message(mto=JID(BOB), mtype="chat")
    plain["body"] = "the eagle has landed"
    xep_0384 = alice.plugin["xep_0384"]
    manager = await xep_0384.get_session_manager()
    await xep_0384.refresh_device_lists({JID(BOB)}, force_download=True)
    report["bob_seen_by_alice"] = sorted(sorted(d.namespaces) for d in await manager.get_device_information(BOB))
    encrypted, errors = await xep_0384.encrypt_message(plain, {JID(BOB)})
    report["encrypt_errors"] = [repr(e) for e in errors]
    report["namespaces"] = sorted(xep_0384.is_encrypted(encrypted))
    report["ciphertext_only"] = "eagle" not in str(encrypted)
    encrypted.send()
    while True:
        stanza = await asyncio.wait_for(bob.inbox.get(), 20)
        if bob.plugin["xep_0384"].is_encrypted(stanza):
            break
    message, device = await bob.plugin["xep_0384"].decrypt_message(stanza)
    report["decrypted"] = [message["body"], device.bare_jid]

    for client in (alice, bob):
        client.disconnect()
    print(json.dumps(report), flush=True)


asyncio.run(asyncio.wait_for(main(), 120))
