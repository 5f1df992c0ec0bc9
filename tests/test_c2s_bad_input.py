"""Raw bytes at the client port: every bad-input case gets its RFC 6120 answer,
and an established session keeps being served throughout."""

import base64

from tests.server_helpers import DOMAIN, ServerTestCase, plain_auth

NS_STREAMS_ERROR = "urn:ietf:params:xml:ns:xmpp-streams"


class BadInput(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth", "--max-stanza-size", "4096",
                   "--auth-timeout", "1", "--max-auth-failures", "3")

    async def setUp(self):
        await self.start_server()
        self.bystander = await self.connect()
        await self.bystander.login("bob", resource="bystander")

    async def assert_bystander_served(self):
        self.bystander.send("<iq type='get' id='still-there'><ping xmlns='urn:xmpp:ping'/></iq>")
        await self.bystander.expect("id='still-there'")

    async def assert_stream_error(self, client, condition):
        data = await client.closed
        text = data.decode("utf-8", "replace")
        self.assertIn(f"<{condition} xmlns='{NS_STREAMS_ERROR}'", text)
        self.assertIn("</stream:stream>", text)
        await self.assert_bystander_served()

    async def test_not_well_formed(self):
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        client.send("<message><body>unclosed</message>")
        await self.assert_stream_error(client, "not-well-formed")

    async def test_garbage_instead_of_a_header(self):
        client = await self.connect()
        client.send("GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        await self.assert_stream_error(client, "not-well-formed")

    async def test_invalid_namespace(self):
        client = await self.connect()
        client.send("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
                    f"to='{DOMAIN}' version='1.0'>")
        await self.assert_stream_error(client, "invalid-namespace")

    async def test_wrong_stream_namespace(self):
        client = await self.connect()
        client.send(f"<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='{DOMAIN}' version='1.0'>")
        await self.assert_stream_error(client, "invalid-namespace")

    async def test_host_unknown(self):
        client = await self.connect()
        client.header("elsewhere.example")
        await self.assert_stream_error(client, "host-unknown")

    async def test_old_version_is_unsupported(self):
        client = await self.connect()
        client.send(f"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                    f"to='{DOMAIN}'>")
        await self.assert_stream_error(client, "unsupported-version")

    async def test_oversized_stanza_before_auth(self):
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        client.send("<message><body>" + "x" * 8000 + "</body></message>")
        await self.assert_stream_error(client, "policy-violation")

    async def test_oversized_stanza_in_session_is_policy_violation(self):
        client = await self.connect()
        await client.login("alice")
        client.send("<message to='bob@localhost'><body>" + "y" * 5000 + "</body></message>")
        await self.assert_stream_error(client, "policy-violation")
        self.assertNotIn(b"yyyy", self.bystander.received)

    async def test_xml_bomb_is_refused_before_expanding(self):
        client = await self.connect()
        entities = "".join(f'<!ENTITY lol{i} "&lol{i - 1};&lol{i - 1};&lol{i - 1};&lol{i - 1};">'
                           for i in range(1, 10))
        client.send("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol0 'lol'>" + entities + "]>"
                    + "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                    f"to='{DOMAIN}' version='1.0'>&lol9;")
        await self.assert_stream_error(client, "restricted-xml")

    async def test_comments_and_processing_instructions_are_restricted(self):
        for junk in ("<!-- hello -->", "<?evil data?>"):
            client = await self.connect()
            client.header()
            await client.expect("</stream:features>")
            client.send(junk)
            await self.assert_stream_error(client, "restricted-xml")

    async def test_stanza_before_authentication_is_not_authorized(self):
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        client.send("<message to='bob@localhost'><body>sneaky</body></message>")
        await self.assert_stream_error(client, "not-authorized")
        self.assertNotIn(b"sneaky", self.bystander.received)

    async def test_idle_unauthenticated_stream_times_out(self):
        client = await self.connect()
        client.header()
        await self.assert_stream_error(client, "connection-timeout")

    async def test_whitespace_keepalives_are_tolerated(self):
        client = await self.connect()
        await client.login("alice")
        client.send("  \n \t ")
        client.send("<iq type='get' id='after-whitespace'><ping xmlns='urn:xmpp:ping'/></iq>\n \n")
        await client.expect("id='after-whitespace'")

    async def test_legacy_session_establishment_is_accepted(self):
        client = await self.connect()
        await client.login("alice")
        client.send("<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        await client.expect("id='sess' type='result'")

    async def test_unknown_iq_gets_service_unavailable(self):
        client = await self.connect()
        await client.login("alice")
        client.send("<iq type='get' id='what'><query xmlns='urn:example:nothing'/></iq>")
        await client.expect("<service-unavailable")

    async def test_empty_domain_label_is_jid_malformed(self):
        # Twisted's nameprep raises IndexError, not InvalidFormat, for "a..b".
        client = await self.connect()
        await client.login("alice")
        client.send("<message to='x@a..b' id='dots'><body>x</body></message>")
        await client.expect("<jid-malformed")
        await self.assert_bystander_served()

    async def test_subscription_to_another_domain_does_not_loop(self):
        # It was captured again each time it was routed on: RecursionError, no answer.
        client = await self.connect()
        await client.login("alice")
        client.send("<presence to='romeo@example.org' type='subscribe'/>")
        await client.expect("<remote-server-not-found")
        client.send("<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>")
        await client.expect("id='after'")

    async def test_spoofed_from_is_invalid_from(self):
        client = await self.connect()
        await client.login("alice")
        client.send("<message from='bob@localhost/x' to='bob@localhost'><body>spoof</body></message>")
        await self.assert_stream_error(client, "invalid-from")
        self.assertNotIn(b"spoof", self.bystander.received)


class Authentication(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth", "--max-auth-failures", "3")

    async def setUp(self):
        await self.start_server()

    async def test_wrong_password_then_right_one(self):
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        client.send(plain_auth("alice", "wrong-password"))
        await client.expect("<not-authorized/></failure>")
        client.send(plain_auth("alice", "wonderland"))
        await client.expect("<success")

    async def test_unknown_mechanism_and_bad_encoding(self):
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        client.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-MAGIC'/>")
        await client.expect("<invalid-mechanism/>")
        client.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!notbase64</auth>")
        await client.expect("<incorrect-encoding/>")
        client.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                    + base64.b64encode(b"no-nul-separators").decode() + "</auth>")
        await client.expect("<malformed-request/>")

    async def test_repeated_failures_are_throttled(self):
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        for _ in range(3):
            client.send(plain_auth("alice", "guess"))
            await client.expect("<not-authorized/>")
        client.send(plain_auth("alice", "wonderland"))  # even the right password, for now
        await client.expect("<temporary-auth-failure/>")
        self.assertNotIn(b"<success", client.received)

    async def test_unknown_user_fails_like_a_wrong_password(self):
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        client.send(plain_auth("nobody", "wonderland"))
        await client.expect("<not-authorized/>")

    async def test_scram_unknown_user_still_gets_a_challenge(self):
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        first = base64.b64encode(b"n,,n=nobody,r=abcdefgh").decode()
        client.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{first}</auth>")
        data = await client.expect("</challenge>")
        self.assertIn(b"<challenge", data)


class Negotiation(ServerTestCase):
    async def setUp(self):
        await self.start_server()

    async def test_tls_required_by_default(self):
        client = await self.connect()
        client.header()
        features = await client.expect("</stream:features>")
        self.assertIn(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>", features)
        self.assertNotIn(b"<mechanisms", features)
        client.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHdvbmRlcmxhbmQ=</auth>")
        await client.expect("<encryption-required/>")

    async def test_self_signed_certificate_generated_in_data_dir(self):
        import os

        self.assertTrue(os.path.exists(os.path.join(self.data_dir, "tls", f"{DOMAIN}.crt")))
        key = os.path.join(self.data_dir, "tls", f"{DOMAIN}.key")
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)


class PlainNotOfferedWithoutTLS(ServerTestCase):
    server_args = ("--tls-optional",)

    async def test_plain_only_over_tls(self):
        await self.start_server()
        client = await self.connect()
        client.header()
        features = await client.expect("</stream:features>")
        self.assertIn(b"<mechanism>SCRAM-SHA-256</mechanism>", features)
        self.assertNotIn(b"<mechanism>PLAIN</mechanism>", features)
