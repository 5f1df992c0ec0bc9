"""A real browser client end to end: Converse.js in headless Chromium, driven by
Playwright, over the server's WebSocket endpoint, beside a slixmpp contact.

One browser, one sequence: log in, see the contact's presence, chat both ways,
join a room and see a groupchat message, upload a file, then open the page again
in a fresh browser context (no local cache) and find the conversation there (MAM).
Plain ws:// on loopback: allowed by the operator's --http-plain, and Chromium
would refuse the test's self-signed certificate.

Screenshots go to the test's temp dir, and to $XEP207_BROWSER_ARTIFACTS when set.
Skips on a laptop without Chromium, Playwright or tests/browser/node_modules
(``npm ci`` there); never when CI=true.
"""

from __future__ import annotations

import json
import os
import sys
from urllib.parse import urlencode

from twisted.internet import defer, protocol, reactor, threads
from twisted.python.threadpool import ThreadPool
from twisted.web import static
from twisted.web.server import Site

from tests.peers import CLIENTS, temp_dir
from tests.server_helpers import DOMAIN, PASSWORD, ServerTestCase
from tests.web_helpers import http_request

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "browser")
DIST = os.path.join(HERE, "node_modules", "converse.js", "dist")
CHROMIUM = os.environ.get("XEP207_CHROMIUM", "/usr/bin/chromium")
ROOM = f"lobby@chat.{DOMAIN}"
TIMEOUT = 30_000  # ms, for one DOM condition
BOB = f".roster-contacts li.current-xmpp-contact a.open-chat[data-jid='bob@{DOMAIN}']"
ONLINE_BOB = f".roster-contacts li.current-xmpp-contact.online a.open-chat[data-jid='bob@{DOMAIN}']"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if not os.path.exists(os.path.join(DIST, "converse.min.js")):
        return "no Converse.js (npm ci in tests/browser)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no playwright (pip install playwright)"
    return None


class Contact(protocol.ProcessProtocol):
    """The slixmpp child: JSON commands in, JSON events out, awaited one by one."""

    def __init__(self):
        self.events: list[dict] = []
        self._waiters: list = []
        self._buffer = b""
        self.ended = defer.Deferred()
        self.stderr = b""

    def outReceived(self, data):
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self.events.append(json.loads(line))
        self._check()

    def errReceived(self, data):
        self.stderr = (self.stderr + data)[-8000:]

    def processEnded(self, reason):
        for _, d in self._waiters:
            d.errback(AssertionError(f"the contact exited: {self.stderr.decode(errors='replace')}"))
        self._waiters = []
        self.ended.callback(None)

    def _check(self):
        for match, d in list(self._waiters):
            for event in self.events:
                if not event.get("consumed") and match(event):
                    event["consumed"] = True
                    self._waiters.remove((match, d))
                    d.callback(event)
                    break

    def wait_for(self, match, timeout: float = 30) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((match, d))
        self._check()
        return d.addTimeout(timeout, reactor)

    def command(self, **command) -> None:
        self.transport.write(json.dumps(command).encode() + b"\n")


class Browser:
    """Chromium through Playwright's sync API, on a thread of its own (the API
    is bound to the thread that started it; the reactor keeps serving)."""

    def __init__(self, artifacts: list[str]):
        self.pool = ThreadPool(1, 1, "browser")
        self.pool.start()
        self.artifacts = artifacts
        self.playwright = self.browser = self.context = self.page = None

    def call(self, function, *args) -> defer.Deferred:
        return threads.deferToThreadPool(reactor, self.pool, function, *args)

    def start(self) -> None:
        from playwright.sync_api import sync_playwright

        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

    def open(self, url: str) -> None:
        """A fresh context (its own empty storage) and the page in it."""
        if self.context is not None:
            self.context.close()
        self.context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(TIMEOUT)
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        self.page.goto(url)

    def screenshot(self, name: str) -> None:
        for folder in self.artifacts:
            self.page.screenshot(path=os.path.join(folder, f"{name}.png"))

    def dump(self, name: str) -> None:
        """What the page showed and logged, for a failed step."""
        if self.page is None:
            return
        self.screenshot(name)
        for folder in self.artifacts:
            with open(os.path.join(folder, f"{name}.html"), "w", encoding="utf-8") as f:
                f.write(self.page.content())
            with open(os.path.join(folder, f"{name}.console.txt"), "w", encoding="utf-8") as f:
                f.write("\n".join(self.console))

    def close(self) -> None:
        if self.browser is not None:
            self.browser.close()
        if self.playwright is not None:
            self.playwright.stop()

    async def stop(self) -> None:
        try:
            await self.call(self.close)
        finally:
            self.pool.stop()


class ConverseInChromium(ServerTestCase):
    # PLAIN over TCP for the raw set-up streams; Converse picks SCRAM-SHA-256 over ws://
    server_args = ("--tls-optional", "--allow-plaintext-auth", "--http-port", "0", "--http-plain", "--http-interfaces", "127.0.0.1")

    async def setUp(self):
        reason = missing()
        if reason:
            if os.environ.get("CI") == "true":
                raise AssertionError(f"the browser test cannot run in CI: {reason}")
            self.skipTest(reason)
        await self.start_server()
        web = self.server.web
        web.external_url = f"http://127.0.0.1:{web.port}"  # slot URLs the browser reaches
        # Converse's page from another origin, as a deployment serves it (uploads need CORS).
        root = static.File(HERE)
        root.putChild(b"dist", static.File(DIST))
        self.page_port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(self.page_port.stopListening)
        self.artifacts = [temp_dir(self)]
        if os.environ.get("XEP207_BROWSER_ARTIFACTS"):
            os.makedirs(os.environ["XEP207_BROWSER_ARTIFACTS"], exist_ok=True)
            self.artifacts.append(os.environ["XEP207_BROWSER_ARTIFACTS"])
        await self.befriend("alice", "bob")

    async def befriend(self, one: str, other: str) -> None:
        """A mutual presence subscription, made over raw TCP streams before the clients come."""
        a, b = await self.connect(), await self.connect()
        await a.login(one, resource="setup")
        await b.login(other, resource="setup")
        for client in (a, b):  # interested (RFC 6121 §2.1.6) and available: requests reach it
            client.send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
            await client.wait_for(lambda e: e.getAttribute("id") == "roster")
            client.send("<presence/>")
        for x, y, name_x, name_y in ((a, b, one, other), (b, a, other, one)):
            x.send(f"<presence type='subscribe' to='{name_y}@{DOMAIN}'/>")
            await y.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "subscribe")
            y.send(f"<presence type='subscribed' to='{name_x}@{DOMAIN}'/>")
            await x.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "subscribed")
        for client in (a, b):
            client.transport.loseConnection()
            await client.closed

    async def start_contact(self) -> Contact:
        contact = Contact()
        reactor.spawnProcess(contact, sys.executable,
                             [sys.executable, os.path.join(CLIENTS, "browser_contact.py"), "127.0.0.1",
                              str(self.port), f"bob@{DOMAIN}/slixmpp", PASSWORD],
                             env=os.environ, path=CLIENTS)

        async def stop():
            if not contact.ended.called:
                contact.command(op="quit")
                await contact.ended

        self.addCleanup(stop)
        await contact.wait_for(lambda e: e["event"] == "online")
        return contact

    def page_url(self) -> str:
        query = urlencode({"ws": f"ws://127.0.0.1:{self.server.web.port}/xmpp-websocket",
                           "jid": f"alice@{DOMAIN}", "password": PASSWORD, "room": ROOM,
                           "nick": "alice"})
        return f"http://127.0.0.1:{self.page_port.getHost().port}/index.html?{query}"

    async def test_converse(self):
        bob = await self.start_contact()
        browser = Browser(self.artifacts)
        self.addCleanup(browser.stop)
        await browser.call(browser.start)
        step = "start"
        try:
            for step, action in self.steps(bob, browser):
                await action()
        except BaseException:
            await browser.call(browser.dump, f"failed-{step}")
            raise

    def steps(self, bob: Contact, browser: Browser):
        """(name, coroutine function) in order: each waits on the DOM or on the contact."""

        def on_page(function, *args):
            return browser.call(function, *args)

        async def log_in():
            await on_page(browser.open, self.page_url())
            # the roster shows bob, online (his slixmpp presence)
            await on_page(lambda: browser.page.locator(ONLINE_BOB).wait_for())
            await on_page(browser.screenshot, "1-logged-in")

        async def chat_to_contact():
            def send():
                browser.page.locator(BOB).click()
                box = browser.page.locator(f"converse-chat[jid='bob@{DOMAIN}'] textarea.chat-textarea")
                box.fill("Hello Bob, from Converse")
                box.press("Enter")

            await on_page(send)
            message = await bob.wait_for(lambda e: e["event"] == "message" and e["type"] == "chat")
            self.assertEqual(message["body"], "Hello Bob, from Converse")
            self.assertEqual(message["from"].split("/")[0], f"alice@{DOMAIN}")

        async def chat_from_contact():
            bob.command(op="chat", to=f"alice@{DOMAIN}", body="Hello Alice, from slixmpp")
            await on_page(lambda: browser.page.locator(".chat-msg__text",
                                                       has_text="Hello Alice, from slixmpp").wait_for())
            await on_page(browser.screenshot, "2-chat")

        async def groupchat():
            bob.command(op="join", room=ROOM, nick="bob")
            await bob.wait_for(lambda e: e["event"] == "joined")
            bob.command(op="groupchat", room=ROOM, body="Welcome to the lobby")

            def seen():
                browser.page.locator(f"a.open-room[data-room-jid='{ROOM}']").click()
                browser.page.locator(f"converse-muc[jid='{ROOM}'] .chat-msg__text",
                                     has_text="Welcome to the lobby").wait_for()

            await on_page(seen)
            await on_page(browser.screenshot, "3-groupchat")

        async def upload():
            path = os.path.join(self.artifacts[0], "upload.txt")
            body = b"a file from the browser\n" * 40
            with open(path, "wb") as f:
                f.write(body)

            def attach():
                browser.page.locator(BOB).click()
                browser.page.locator(f"converse-chat[jid='bob@{DOMAIN}'] input[type=file]").set_input_files(path)

            await on_page(attach)
            message = await bob.wait_for(lambda e: e["event"] == "message" and "/upload/" in e["body"])
            self.uploaded = message["body"].strip()
            self.assertEqual(message["oob"], self.uploaded)  # XEP-0066 beside the body, as Converse sends it
            status, _, data = await http_request("GET", self.uploaded)
            self.assertEqual((status, data), (200, body))
            await on_page(browser.screenshot, "4-upload")

        async def history_from_the_archive():
            # a fresh context: nothing cached in the browser, the history can only come from MAM
            await on_page(browser.open, self.page_url())

            def history():
                browser.page.locator(BOB).click()
                chat = browser.page.locator(f"converse-chat[jid='bob@{DOMAIN}']")
                chat.locator(".chat-msg__text", has_text="Hello Bob, from Converse").wait_for()
                chat.locator(".chat-msg__text", has_text="Hello Alice, from slixmpp").wait_for()
                chat.locator(f"a[href='{self.uploaded}']").first.wait_for()

            await on_page(history)
            await on_page(browser.screenshot, "5-history-after-reload")

        return [("log-in", log_in), ("chat-to-contact", chat_to_contact), ("chat-from-contact", chat_from_contact),
                ("groupchat", groupchat), ("upload", upload), ("history", history_from_the_archive)]


__all__ = ["ConverseInChromium"]
