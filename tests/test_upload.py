"""XEP-0363 HTTP File Upload: slots over XMPP, real HTTP PUT and GET, the
signature, size, type, quota and expiry rules, and slixmpp's plugin end to end."""

from __future__ import annotations

import hashlib
import os
import stat
from urllib.parse import parse_qs, urlsplit, urlunsplit

from twisted.internet import task
from twisted.words.protocols.jabber import jid as jidlib

from tests.server_helpers import DOMAIN, PASSWORD, ServerTestCase
from tests.web_helpers import http_request
from xep207.web.upload import NS_UPLOAD, ExpiryTimer

UPLOAD = f"upload.{DOMAIN}"


class Upload(ServerTestCase):
    server_args = ("--tls-optional", "--allow-plaintext-auth", "--http-port", "0",
                   "--http-interfaces", "127.0.0.1", "--upload-max-size", "100000", "--upload-quota", "150000")

    async def setUp(self):
        await self.start_server()
        self.client = await self.connect()
        await self.client.login("alice", resource="up")
        self.upload = self.server.web.upload
        self._ids = 0

    def local(self, url: str) -> str:
        """The slot URL as the test reaches it (the announced host is the domain)."""
        parts = urlsplit(url)
        self.assertEqual(parts.netloc, f"{DOMAIN}:{self.server.web.port}")
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.server.web.port}"))

    async def request(self, filename="cat.png", size="1000", content_type="image/png", client=None):
        self._ids += 1
        attributes = "".join(f" {name}='{value}'" for name, value in
                             (("filename", filename), ("size", size), ("content-type", content_type))
                             if value is not None)
        client = client or self.client
        client.send(f"<iq type='get' to='{UPLOAD}' id='slot{self._ids}'><request xmlns='{NS_UPLOAD}'{attributes}/></iq>")
        return await client.wait_for(lambda e: e.getAttribute("id") == f"slot{self._ids}")

    async def slot(self, **kwargs) -> tuple[str, str]:
        answer = await self.request(**kwargs)
        self.assertEqual(answer["type"], "result", answer.toXml())
        slot = answer.slot
        self.assertEqual(slot.uri, NS_UPLOAD)
        return self.local(slot.put["url"]), self.local(slot.get["url"])

    def error(self, answer) -> str:
        self.assertEqual(answer["type"], "error", answer.toXml())
        return next(c.name for c in answer.error.elements() if c.uri == "urn:ietf:params:xml:ns:xmpp-stanzas")

    async def put(self, url, body: bytes, content_type="image/png", length=None):
        headers = {"Content-Type": content_type} if content_type else {}
        if length is not None:
            headers["Content-Length"] = str(length)
        status, _, _ = await http_request("PUT", url, body, headers)
        return status

    # XMPP side ---------------------------------------------------------------------------

    async def test_disco_lists_the_service_its_identity_and_limit(self):
        self.client.send(f"<iq type='get' to='{DOMAIN}' id='items'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        items = await self.client.wait_for(lambda e: e.getAttribute("id") == "items")
        self.assertIn(UPLOAD, [i["jid"] for i in items.query.elements()])
        self.client.send(f"<iq type='get' to='{UPLOAD}' id='info'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        info = await self.client.wait_for(lambda e: e.getAttribute("id") == "info")
        identities = [(i["category"], i["type"]) for i in info.query.elements() if i.name == "identity"]
        features = sorted(f["var"] for f in info.query.elements() if f.name == "feature")
        self.assertEqual(identities, [("store", "file")])
        self.assertEqual(features, ["http://jabber.org/protocol/disco#info", NS_UPLOAD])
        form = next(e for e in info.query.elements() if e.name == "x")
        fields = {f["var"]: str(f.value) for f in form.elements() if f.name == "field"}
        self.assertEqual(fields, {"FORM_TYPE": NS_UPLOAD, "max-file-size": "100000"})

    async def test_too_large_gets_the_limit(self):
        answer = await self.request(size="100001")
        self.assertEqual(self.error(answer), "not-acceptable")
        self.assertEqual(answer.error["type"], "modify")
        too_large = next(answer.error.elements(NS_UPLOAD, "file-too-large"))
        self.assertEqual(str(too_large.firstChildElement()), "100000")
        self.assertEqual(too_large.firstChildElement().name, "max-file-size")

    async def test_malformed_requests(self):
        for kwargs in ({"size": None}, {"size": "-5"}, {"size": "0"}, {"size": "12kB"}, {"filename": None},
                       {"filename": ""}, {"filename": "..."}, {"filename": "&#9;&#1;"[:4]}, {"content_type": "not a type"},
                       {"content_type": "text/html; charset=utf-8\r\nX: y"}):
            self.assertEqual(self.error(await self.request(**kwargs)), "bad-request", kwargs)

    async def test_quota(self):
        put, _ = await self.slot(size="90000")
        self.assertEqual(await self.put(put, b"x" * 90000), 201)
        # a pending slot counts too: 90000 + 50000 fits, another 50000 does not
        await self.slot(size="50000")
        answer = await self.request(size="50000")
        self.assertEqual(self.error(answer), "resource-constraint")
        # another account has its own quota
        bob = await self.connect()
        await bob.login("bob", resource="up")
        await self.slot(size="90000", client=bob)

    async def test_only_local_accounts(self):
        from xep207.web.upload import UploadService

        with self.assertRaises(Exception) as caught:
            self.upload.request_slot(jidlib.JID("mallory@elsewhere.example/x"), "a", "1", None)
        self.assertEqual(caught.exception.condition, "forbidden")
        with self.assertRaises(Exception) as caught:
            self.upload.request_slot(jidlib.JID(f"{DOMAIN}"), "a", "1", None)
        self.assertEqual(caught.exception.condition, "forbidden")
        self.assertTrue(issubclass(UploadService, object))

    # HTTP side ---------------------------------------------------------------------------

    async def test_put_then_get(self):
        body = os.urandom(1000)
        put, get = await self.slot(filename="../../etc/passwd &lt;script>.png")
        self.assertTrue(get.endswith("/_.._etc_passwd%20%3Cscript%3E.png"), get)  # no separators left
        self.assertEqual(await self.put(put, body), 201)
        status, headers, data = await http_request("GET", get)
        self.assertEqual((status, data), (200, body))
        self.assertEqual(headers.getRawHeaders("content-type"), ["image/png"])
        self.assertEqual(headers.getRawHeaders("content-length"), ["1000"])
        self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"])
        self.assertEqual(headers.getRawHeaders("access-control-allow-origin"), ["*"])
        disposition = headers.getRawHeaders("content-disposition")[0]
        self.assertTrue(disposition.startswith("inline; filename=\"_.._etc_passwd _script_.png\""), disposition)
        self.assertIn("filename*=UTF-8''_.._etc_passwd%20%3Cscript%3E.png", disposition)
        # on disk: named by the slot id only, private
        directory = os.path.join(self.data_dir, "upload")
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
        slot_id = urlsplit(get).path.split("/")[2]
        self.assertEqual(sorted(os.listdir(directory)), [slot_id, slot_id + ".json"])
        for name in os.listdir(directory):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode), 0o600)
        with open(os.path.join(directory, slot_id), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).digest(), hashlib.sha256(body).digest())
        # HEAD: the headers alone
        status, headers, data = await http_request("HEAD", get)
        self.assertEqual((status, data, headers.getRawHeaders("content-type")), (200, b"", ["image/png"]))

    async def test_scriptable_types_are_attachments(self):
        put, get = await self.slot(filename="page.html", content_type="text/html")
        self.assertEqual(await self.put(put, b"<script>alert(1)</script>".ljust(1000), "text/html"), 201)
        _, headers, _ = await http_request("GET", get)
        self.assertTrue(headers.getRawHeaders("content-disposition")[0].startswith("attachment;"))
        self.assertIn("sandbox", headers.getRawHeaders("content-security-policy")[0])

    async def test_no_content_type_is_served_as_octet_stream(self):
        put, get = await self.slot(content_type=None)
        self.assertEqual(await self.put(put, b"x" * 1000, "application/whatever"), 201)
        _, headers, _ = await http_request("GET", get)
        self.assertEqual(headers.getRawHeaders("content-type"), ["application/octet-stream"])
        self.assertTrue(headers.getRawHeaders("content-disposition")[0].startswith("attachment;"))

    async def test_a_second_put_conflicts(self):
        put, get = await self.slot()
        self.assertEqual(await self.put(put, b"a" * 1000), 201)
        self.assertEqual(await self.put(put, b"b" * 1000), 409)
        _, _, data = await http_request("GET", get)
        self.assertEqual(data, b"a" * 1000)

    async def test_wrong_size_type_or_signature(self):
        put, get = await self.slot()
        self.assertEqual(await self.put(put, b"x" * 999), 403)
        self.assertEqual(await self.put(put, b"x" * 1001), 403)
        self.assertEqual(await self.put(put, b"x" * 1000, "text/html"), 403)
        self.assertEqual(await self.put(put, b"x" * 1000, None), 403)
        parts = urlsplit(put)
        query = parse_qs(parts.query)
        for key, value in (("s", "0" * 64), ("u", f"bob@{DOMAIN}"), ("e", str(int(query["e"][0]) + 3600)),
                           ("t", "text/html")):
            forged = dict(query, **{key: [value]})
            url = urlunsplit(parts._replace(query="&".join(f"{k}={v[0]}" for k, v in forged.items())))
            self.assertEqual(await self.put(url, b"x" * 1000), 403, key)
        other = urlunsplit(parts._replace(path=parts.path.replace("cat.png", "dog.png")))
        self.assertEqual(await self.put(other, b"x" * 1000), 403)
        self.assertEqual(await self.put(put.split("?")[0], b"x" * 1000), 403)
        status, _, _ = await http_request("GET", get)
        self.assertEqual(status, 404)  # nothing was stored
        self.assertEqual(await self.put(put, b"x" * 1000), 201)  # the slot itself still works

    async def test_expired_slot(self):
        clock = task.Clock()
        clock.advance(self.upload.clock.seconds())
        self.upload.clock = clock
        put, _ = await self.slot()
        clock.advance(301)
        self.assertEqual(await self.put(put, b"x" * 1000), 403)

    async def test_body_larger_than_any_upload_is_refused_before_it_is_read(self):
        put, _ = await self.slot()
        status = await self.put(put, b"x" * 100001)
        self.assertEqual(status, 413)

    async def test_a_body_without_a_length_is_refused(self):
        from twisted.internet import defer, reactor
        from twisted.web.client import Agent
        from twisted.web.http_headers import Headers
        from twisted.web.iweb import UNKNOWN_LENGTH

        from tests.web_helpers import _TrustAll

        class Endless:
            """A body of unknown length: Agent sends it chunked."""

            length = UNKNOWN_LENGTH

            def startProducing(self, consumer):
                consumer.write(b"x" * 1000)
                return defer.succeed(None)

            def stopProducing(self):
                pass

        put, _ = await self.slot()
        response = await Agent(reactor, contextFactory=_TrustAll()).request(
            b"PUT", put.encode(), Headers({b"content-type": [b"image/png"]}), Endless())
        self.assertEqual(response.code, 411)

    async def test_unknown_files_and_paths(self):
        put, get = await self.slot()
        self.assertEqual(await self.put(put, b"x" * 1000), 201)
        base = f"https://127.0.0.1:{self.server.web.port}/upload/"
        for path in ("", "0" * 32, "0" * 32 + "/cat.png", get.split("/upload/")[1].replace("cat", "dog"),
                     "../xep207.lock", "..%2Fsasl-secret/x", get.split("/upload/")[1] + "/more"):
            status, _, _ = await http_request("GET", base + path)
            self.assertEqual(status, 404, path)

    async def test_cors_preflight(self):
        put, _ = await self.slot()
        status, headers, _ = await http_request("OPTIONS", put, headers={
            "Origin": "https://web.example", "Access-Control-Request-Method": "PUT"})
        self.assertEqual(status, 204)
        self.assertIn("PUT", headers.getRawHeaders("access-control-allow-methods")[0])
        self.assertEqual(headers.getRawHeaders("access-control-allow-headers"), ["Content-Type"])

    # Retention -----------------------------------------------------------------------------

    async def test_expiry_timer_removes_old_files_and_frees_the_quota(self):
        clock = task.Clock()
        clock.advance(self.upload.clock.seconds())
        self.upload.clock = clock
        put, get = await self.slot(size="90000")
        self.assertEqual(await self.put(put, b"x" * 90000), 201)
        timer = ExpiryTimer(self.upload, 60)
        timer.startService()
        self.addCleanup(timer.stopService)
        clock.advance(604800 - 61)
        status, _, _ = await http_request("GET", get)
        self.assertEqual(status, 200)
        self.assertEqual(self.error(await self.request(size="90000")), "resource-constraint")
        clock.advance(61)
        status, _, _ = await http_request("GET", get)
        self.assertEqual(status, 404)
        self.assertEqual(os.listdir(os.path.join(self.data_dir, "upload")), [])
        await self.slot(size="90000")

    async def test_files_survive_a_restart(self):
        put, get = await self.slot()
        self.assertEqual(await self.put(put, b"k" * 1000), 201)
        await self.restart_server()
        get = get.replace(f":{urlsplit(get).port}/", f":{self.server.web.port}/")
        status, _, data = await http_request("GET", get)
        self.assertEqual((status, data), (200, b"k" * 1000))


class SlixmppUpload(ServerTestCase):
    """slixmpp's xep_0363 plugin (aiohttp for the PUT) uploads end to end, over
    plain HTTP on loopback (the test does not make aiohttp trust the test certificate)."""

    server_args = ("--tls-optional", "--http-port", "0", "--http-plain", "--http-interfaces", "127.0.0.1")

    async def test_upload_file(self):
        from tests.peers import temp_dir

        # the port is known once listening: announce it as the external URL
        await self.start_server()
        self.server.web.external_url = f"http://127.0.0.1:{self.server.web.port}"
        path = os.path.join(temp_dir(self), "kitten.png")
        body = os.urandom(5000)
        with open(path, "wb") as f:
            f.write(body)
        report = await self.run_client("upload_scenario.py", "127.0.0.1", self.port, DOMAIN, PASSWORD, path)
        self.assertEqual(report["service"], UPLOAD)
        self.assertEqual(report["max_file_size"], 10485760)
        self.assertTrue(report["url"].endswith("/kitten.png"), report["url"])
        status, headers, data = await http_request("GET", report["url"])
        self.assertEqual((status, data), (200, body))
        self.assertEqual(headers.getRawHeaders("content-type"), ["image/png"])
        owners = {f.owner for f in self.server.web.upload.store.files.values()}
        self.assertEqual(owners, {f"alice@{DOMAIN}"})


class UploadServiceAnswers(ServerTestCase):
    """What the upload service says to requests it does not serve."""

    server_args = ("--tls-optional", "--allow-plaintext-auth", "--http-port", "0", "--http-plain",
                   "--http-interfaces", "127.0.0.1")

    async def test_other_requests_get_errors(self):
        client = await self.connect()
        await client.login("alice")
        for n, payload in enumerate((f"<iq type='set' to='{UPLOAD}' id='q0'><request xmlns='{NS_UPLOAD}' "
                                     "filename='a' size='1'/></iq>",
                                     f"<iq type='get' to='{UPLOAD}' id='q1'><query xmlns='jabber:iq:version'/></iq>",
                                     f"<iq type='get' to='{UPLOAD}' id='q2'><query "
                                     "xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>")):
            client.send(payload)
            answer = await client.wait_for(lambda e, n=n: e.getAttribute("id") == f"q{n}")
            self.assertEqual(answer["type"], "error", payload)

    async def test_no_upload_flag(self):
        await self.server.top.stopService()
        await self.start_server("--no-upload")
        self.assertIsNone(self.server.web.upload)
        self.assertNotIn(UPLOAD, self.server.router.routes)
        status, _, _ = await http_request("GET", f"http://127.0.0.1:{self.server.web.port}/upload/" + "0" * 32 + "/x")
        self.assertEqual(status, 404)

    async def setUp(self):
        await self.start_server()
