"""``twistd xep207``: command-line options and the service tree.

Two modes share the same engine and pubsub service:

- ``twistd -n xep207 [options]``: a complete XMPP server (see ``server.tap``);
- ``twistd -n xep207 component --jid … --secret …``: a XEP-0114 component that
  attaches the pubsub service to an existing XMPP server.
"""

from __future__ import annotations

import os

from twisted.application import service
from twisted.python import usage
from twisted.words.protocols.jabber import jid as jidlib
from wokkel.component import Component

from xep207.pubsub.engine import PubSubEngine
from xep207.service import ComponentStatus, StorageService, WhenReady, pubsub_handlers


def _check_storage_url(url: str) -> str:
    from xep207.storage import open_storage

    try:
        open_storage(url)
    except (ValueError, ImportError) as exc:
        raise usage.UsageError(f"--storage: {exc}")
    return url


def _positive_int(value) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be positive")
    return number


_positive_int.coerceDoc = "Must be a positive integer."


class ComponentOptions(usage.Options):
    synopsis = "--jid pubsub.example.org --secret-file FILE [options]"
    longdesc = ("Connect to an XMPP server as a XEP-0114 external component and "
                "serve XEP-0060 publish-subscribe at the component's JID. "
                "Reconnects with backoff when the connection drops.")

    optParameters = [
        ["jid", None, None, "The component's JID, e.g. pubsub.example.org (required)."],
        ["secret", None, None,
         "The component secret. Visible to other local users in the process list: "
         "prefer --secret-file or the XEP207_COMPONENT_SECRET environment variable."],
        ["secret-file", None, None, "Read the component secret from this file."],
        ["host", None, "localhost", "The XMPP server's host."],
        ["port", None, 5347, "The XMPP server's component port.", _positive_int],
        ["storage", None, None,
         "Storage URL: memory:, sqlite:///relative.db, sqlite:////absolute.db, "
         "postgresql://user@host/db, or a plugin's scheme. "
         "Default: sqlite in --data-dir."],
        ["data-dir", None, "xep207-data", "Directory for the default SQLite database."],
        ["max-payload-size", None, 65536, "Largest item payload in bytes.", _positive_int],
    ]

    def postOptions(self):
        if not self["jid"]:
            raise usage.UsageError("--jid is required")
        try:
            self["jid"] = jidlib.JID(self["jid"])
        except jidlib.InvalidFormat as exc:
            raise usage.UsageError(f"--jid: invalid JID ({exc})")
        secret = self["secret"] or os.environ.get("XEP207_COMPONENT_SECRET")
        if self["secret-file"]:
            try:
                with open(self["secret-file"], encoding="utf-8") as f:
                    secret = f.read().strip()
            except OSError as exc:
                raise usage.UsageError(f"--secret-file: {exc}")
        if not secret:
            raise usage.UsageError("a component secret is required (--secret-file or --secret)")
        self["secret"] = secret
        if not self["storage"]:
            self["storage"] = default_storage_url(self["data-dir"])
        _check_storage_url(self["storage"])


def default_storage_url(data_dir: str) -> str:
    return "sqlite:///" + os.path.join(os.path.abspath(data_dir), "xep207.sqlite")


def make_component_service(options) -> service.MultiService:
    top = service.MultiService()
    storage_service = StorageService(options["storage"])
    if storage_service.storage.url.startswith("sqlite:"):
        os.makedirs(os.path.dirname(storage_service.storage.path) or ".", exist_ok=True)
    storage_service.setServiceParent(top)
    engine = PubSubEngine(storage_service.storage, max_payload_size=options["max-payload-size"])
    component = Component(options["host"], options["port"], options["jid"].full(), options["secret"])
    for handler in [*pubsub_handlers(engine), ComponentStatus(options["jid"].full())]:
        handler.setHandlerParent(component)
    started = WhenReady(storage_service.ready)
    started.setServiceParent(top)
    component.setServiceParent(started)
    return top


class Options(usage.Options):
    synopsis = "[server options] | component [component options]"
    longdesc = __doc__
    subCommands = [
        ["component", None, ComponentOptions,
         "Attach the pubsub service to an existing XMPP server (XEP-0114)."],
    ]

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("name a mode: component")


def makeService(options) -> service.IService:
    if options.subCommand == "component":
        return make_component_service(options.subOptions)
    from xep207.server.tap import make_server_service

    return make_server_service(options)
