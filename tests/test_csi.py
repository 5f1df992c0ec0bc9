"""XEP-0352 client state indication over real sockets, raw and with slixmpp's plugin."""

from __future__ import annotations

from tests.server_helpers import DOMAIN, PASSWORD, ServerTestCase
from tests.sm_helpers import NS_STREAMS_ERROR, body_of, enable, sm, stream_error

NS_CSI = "urn:xmpp:csi:0"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}/desk"


def is_iq(iq_id):
    return lambda e: e.name == "iq" and e.getAttribute("id") == iq_id


async def sync(client, iq_id="sync"):
    client.send(f"<iq type='get' id='{iq_id}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await client.wait_for(is_iq(iq_id))


def status_of(presence) -> str:
    return "".join(str(c) for c in presence.elements() if c.name == "status")


def seen(client) -> list[str]:
    """What arrived, in order: presence by status, chat states, bodies (no iq)."""
    out = []
    for e in client.stanzas:
        if e.name == "presence":
            out.append(f"presence:{status_of(e)}")
        elif e.name == "message" and body_of(e) is not None:
            out.append(f"body:{body_of(e)}")
        elif e.name == "message":
            out.append("state:" + ",".join(c.name for c in e.elements()))
    return out


class Raw(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def setUp(self):
        await self.start_server()
        self.alice = await self.connect()
        await self.alice.login("alice", resource="phone")
        self.bob = await self.connect()
        await self.bob.login("bob", resource="desk")

    def directed(self, status: str) -> None:
        self.bob.send(f"<presence to='{ALICE}/phone'><status>{status}</status></presence>")

    def state(self, name: str) -> None:
        self.bob.send(f"<message to='{ALICE}/phone' type='chat'>"
                      f"<{name} xmlns='http://jabber.org/protocol/chatstates'/></message>")

    async def test_feature_offered_after_authentication(self):
        self.assertIn(b"<csi xmlns='urn:xmpp:csi:0'/>", self.alice.received)

    async def test_inactive_holds_presence_and_states_until_a_body(self):
        self.alice.send(f"<inactive xmlns='{NS_CSI}'/>")
        await sync(self.alice, "inactive")
        for n in range(3):
            self.directed(f"s{n}")
        self.state("composing")
        self.state("paused")
        await sync(self.bob)
        await sync(self.alice)  # an iq answer is never held
        self.assertEqual(seen(self.alice), [])
        self.bob.send(f"<message to='{ALICE}/phone' type='chat'><body>hello</body></message>")
        await self.alice.wait_for(lambda e: body_of(e) == "hello")
        # The latest presence, the latest chat state, then the message that could not wait.
        self.assertEqual(seen(self.alice), ["presence:s2", "state:paused", "body:hello"])

    async def test_active_flushes_everything_and_stops_holding(self):
        self.alice.send(f"<inactive xmlns='{NS_CSI}'/>")
        await sync(self.alice, "inactive")
        self.directed("away")
        self.state("gone")
        await sync(self.bob)
        self.alice.send(f"<active xmlns='{NS_CSI}'/>")
        await self.alice.wait_for(lambda e: e.name == "message")
        self.assertEqual(seen(self.alice), ["presence:away", "state:gone"])
        self.directed("back")
        await self.alice.wait_for(lambda e: e.name == "presence" and status_of(e) == "back")

    async def test_subscription_requests_are_not_held(self):
        self.alice.send("<presence/>")
        await self.alice.wait_for(lambda e: e.name == "presence")  # her own, back
        self.alice.send(f"<inactive xmlns='{NS_CSI}'/>")
        await sync(self.alice, "inactive")
        self.bob.send(f"<presence to='{ALICE}' type='subscribe'/>")
        request = await self.alice.wait_for(lambda e: e.name == "presence")
        self.assertEqual(request["type"], "subscribe")

    async def test_the_held_queue_is_bounded(self):
        self.server.router.stream_extensions[-1].max_held = 5
        self.alice.send(f"<inactive xmlns='{NS_CSI}'/>")
        await sync(self.alice, "inactive")
        for n in range(6):
            self.bob.send(f"<presence to='{ALICE}/phone' from='{BOB}'><status>s{n}</status></presence>")
            self.bob.send(f"<message to='{ALICE}/phone' type='headline'><x xmlns='urn:example'>{n}</x></message>")
        await self.alice.wait_for(lambda e: e.name == "presence")
        self.assertLessEqual(len(self.server.router.session(f"{ALICE}/phone").csi.held), 5)

    async def test_with_stream_management_held_stanzas_count_when_written(self):
        await enable(self.alice)
        self.alice.send(f"<inactive xmlns='{NS_CSI}'/>")
        await sync(self.alice, "inactive")
        self.directed("held")
        await sync(self.bob)
        manager = self.server.router.session(f"{ALICE}/phone").sm
        sent = manager.sent
        self.alice.send(f"<active xmlns='{NS_CSI}'/>")
        await self.alice.wait_for(lambda e: e.name == "presence")
        self.assertEqual(manager.sent, sent + 1)
        self.assertEqual([e for e in self.alice.stanzas if e.name == "failed"], [])
        self.assertIsNotNone(sm)

    async def test_unknown_csi_element_is_a_stream_error(self):
        self.alice.send(f"<sleepy xmlns='{NS_CSI}'/>")
        self.assertIn(f"<unsupported-stanza-type xmlns='{NS_STREAMS_ERROR}'", stream_error(await self.alice.closed))

    async def test_before_bind_is_refused(self):
        from tests.sm_helpers import authenticate

        client = await self.connect()
        await authenticate(client, "alice")
        client.send(f"<inactive xmlns='{NS_CSI}'/>")
        self.assertIn("<not-authorized", stream_error(await client.closed))


class SlixmppInactive(ServerTestCase):
    async def test_slixmpp_csi(self):
        await self.start_server()
        report = await self.run_client("csi_inactive.py", "127.0.0.1", self.port, DOMAIN, PASSWORD)
        self.assertTrue(report["csi_offered"])
        self.assertEqual(report["seen"], ["presence:s2", "body:wake up"])
        self.assertEqual(report["after_active"], "presence:s3")
