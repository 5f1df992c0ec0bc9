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

from xep207.config import ConfigFileOptions
from xep207.pubsub.engine import PubSubEngine
from xep207.service import (ComponentStatus, OrderedServices, StorageService, WhenReady, prepare_sqlite,
                             pubsub_handlers)
from xep207.startup import StartupError, fail_start, prepare_data_dir


def _check_storage_url(url: str) -> str:
    from xep207.storage import open_storage

    try:
        open_storage(url)
    except (ValueError, ImportError) as exc:
        raise usage.UsageError(f"--storage: {exc}")
    return url


# usage.Options reads ``coerceDoc`` off a coerce function: an attribute its type cannot declare.
def _positive_int(value) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be positive")
    return number


_positive_int.coerceDoc = "Must be a positive integer."  # type: ignore[attr-defined]


def _count(value) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


_count.coerceDoc = "A non-negative integer (0: no limit)."  # type: ignore[attr-defined]


def _port(value) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError("must be a port number (0 picks a free one)")
    return number


_port.coerceDoc = "A TCP port (0: any free port)."  # type: ignore[attr-defined]


def _port_or_none(value) -> int:
    return 0 if str(value).lower() in ("none", "off") else _port(value)


_port_or_none.coerceDoc = "A TCP port (0 or none: off)."  # type: ignore[attr-defined]


def _positive_float(value) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be positive")
    return number


_positive_float.coerceDoc = "A positive number."  # type: ignore[attr-defined]


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
        ["max-payload-size", None, 196608, "Largest item payload in bytes.", _positive_int],
        ["metrics-port", None, None, "Serve Prometheus metrics over HTTP on this port (off by default).",
         _port],
        ["metrics-interface", None, "127.0.0.1", "Address for the metrics port (loopback by default)."],
        ["log-format", None, "text", "Log as 'text' or 'json' (one JSON event per line)."],
    ]

    def postOptions(self):
        _log_format(self)
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


def _log_format(options) -> None:
    """``--log-format json``: twistd's own ``--logger`` set to our JSON observer
    (twistd starts logging after parsing options, before the service exists)."""
    if options["log-format"] not in ("text", "json"):
        raise usage.UsageError("--log-format is text or json")
    twistd_options = getattr(options, "parent", None)
    while twistd_options is not None and not hasattr(twistd_options, "loadedPlugins"):
        twistd_options = getattr(twistd_options, "parent", None)
    if options["log-format"] == "json" and twistd_options is not None and not twistd_options["logger"]:
        from xep207 import logs

        logs.json_output(twistd_options["logfile"])
        twistd_options["logger"] = "xep207.logs.json_observer"


def default_storage_url(data_dir: str) -> str:
    return "sqlite:///" + os.path.join(os.path.abspath(data_dir), "xep207.sqlite")


def make_component_service(options) -> service.MultiService:
    top = OrderedServices()
    storage_service = StorageService(options["storage"])
    if options["storage"] == default_storage_url(options["data-dir"]):
        try:
            prepare_data_dir(options["data-dir"])
        except StartupError as exc:
            fail_start(str(exc))
    try:
        prepare_sqlite(options["storage"])
    except StartupError as exc:
        fail_start(str(exc))
    storage_service.setServiceParent(top)
    engine = PubSubEngine(storage_service.storage, max_payload_size=options["max-payload-size"])
    component = Component(options["host"], options["port"], options["jid"].full(), options["secret"])
    for handler in [*pubsub_handlers(engine), ComponentStatus(options["jid"].full())]:
        handler.setHandlerParent(component)
    started = WhenReady(storage_service.ready)
    started.setServiceParent(top)
    component.factory.noisy = False  # no "Starting factory" line per reconnection
    component.setServiceParent(started)
    if options["metrics-port"] is not None:
        from xep207.metrics import MetricsService

        MetricsService(options["metrics-port"], options["metrics-interface"]).setServiceParent(started)
    return top


class Options(ConfigFileOptions):
    synopsis = "[options] | component [component options]"
    longdesc = ("Run a complete XMPP server for --domain (default), or attach the pubsub "
                "service to another server as a component. Settings can also come from a "
                "TOML file (--config); the command line wins.")
    tables = ("components", "contact")

    optFlags = [
        ["tls-optional", None, "Offer STARTTLS but do not require it."],
        ["no-tls", None, "No TLS at all (local testing only; implies plaintext streams)."],
        ["allow-plaintext-auth", None, "Offer PLAIN authentication without TLS (local testing only)."],
        ["no-compression", None, "Do not offer XEP-0138 stream compression."],
        ["registration", None, "Allow XEP-0077 in-band registration of new accounts."],
        ["deliver-to-all-resources", None,
         "Deliver messages to a bare JID to every resource with non-negative priority, "
         "not only the highest (RFC 6121 §8.5.2.1.1 allows both)."],
        ["http-plain", None, "Serve plain HTTP on --http-port instead of HTTPS (behind a TLS-terminating "
         "proxy, or on loopback for local testing)."],
        ["no-upload", None, "No XEP-0363 file upload service on the HTTP port."],
        ["c2s-reuse-port", None,
         "Open the client port with SO_REUSEPORT: several processes of a cluster on one "
         "machine share it (Linux spreads connections over them)."],
        ["push-body", None, "Include message bodies in XEP-0357 push notifications (off: sender and count only)."],
    ]
    optParameters = [
        ["config", "c", None, "A TOML file with any of these options (long names as keys)."],
        ["domain", "d", "localhost", "The XMPP domain this server serves."],
        ["data-dir", None, "xep207-data",
         "Directory for the embedded SQLite database, the generated TLS certificate and the SASL secret."],
        ["storage", None, None,
         "Storage URL: memory:, sqlite:///relative.db, sqlite:////absolute.db, "
         "postgresql://user@host/db, or a plugin's scheme. Default: SQLite in --data-dir."],
        ["c2s-port", None, 5222, "Port for client connections.", _port],
        ["c2s-direct-tls-port", None, 5223,
         "Port for XEP-0368 direct TLS client connections (0 or none: off; needs TLS).", _port_or_none],
        ["c2s-interfaces", None, "::",
         "Comma-separated addresses to listen on for clients ('::' is IPv6 and IPv4)."],
        ["tls-cert", None, None, "PEM certificate (chain) for the domain. Default: self-signed."],
        ["tls-key", None, None, "PEM private key for --tls-cert."],
        ["max-stanza-size", None, 262144, "Largest stanza in bytes (policy-violation beyond).",
         _positive_int],
        ["max-stanza-elements", None, 5000, "Most elements in one stanza (policy-violation beyond).",
         _positive_int],
        ["max-stanza-depth", None, 64, "Deepest element nesting in a stanza (policy-violation beyond).",
         _positive_int],
        ["max-pre-auth-stanza-size", None, 16384, "Largest stanza in bytes before authentication.",
         _positive_int],
        ["max-pre-auth-stanza-elements", None, 64, "Most elements in one stanza before authentication.",
         _positive_int],
        ["max-pre-auth-stanza-depth", None, 8, "Deepest element nesting before authentication.",
         _positive_int],
        ["max-unauthenticated", None, 10,
         "Concurrent unauthenticated client connections per address (policy-violation beyond).",
         _positive_int],
        ["c2s-rate", None, 32768, "Bytes per second a client may send, averaged (0: unlimited).", _count],
        ["c2s-burst", None, 131072, "Bytes a client may send at once above --c2s-rate.", _positive_int],
        ["max-output-buffer", None, 1048576,
         "Bytes waiting for a client that does not read before it is disconnected (0: unlimited).", _count],
        ["max-payload-size", None, 196608,
         "Largest pubsub item payload in bytes (XEP-0084 avatars, vCards with photos); below "
         "--max-stanza-size, so that a larger item is payload-too-big, not a stream error.", _positive_int],
        ["auth-timeout", None, 60, "Seconds a connection may stay unauthenticated.", _positive_int],
        ["max-auth-failures", None, 5,
         "Failed logins per address per minute before further attempts are refused.", _positive_int],
        ["max-account-auth-failures", None, 10,
         "Failed logins per account per minute before further attempts are refused.", _positive_int],
        ["max-registrations", None, 5,
         "XEP-0077 registrations per address per hour (and one per connection).", _positive_int],
        ["pubsub-domain", None, None, "The pubsub service's JID. Default: pubsub.DOMAIN."],
        ["chat-domain", None, None, "The groupchat service's JID. Default: chat.DOMAIN."],
        ["component-port", None, 5347, "Port for XEP-0114 components (only with components).", _port],
        ["component-interface", None, "127.0.0.1", "Address for the component port."],
        ["metrics-port", None, None, "Serve Prometheus metrics over HTTP on this port (off by default).",
         _port],
        ["metrics-interface", None, "127.0.0.1", "Address for the metrics port (loopback by default)."],
        ["log-format", None, "text", "Log as 'text' or 'json' (one JSON event per line)."],
        ["sm-resume-timeout", None, 300,
         "Seconds a XEP-0198 session may stay detached awaiting resumption (0: no resumption).", _count],
        ["sm-max-unacked", None, 5000,
         "Stanzas a XEP-0198 session may leave unacknowledged (policy-violation beyond).", _positive_int],
        ["http-port", None, None,
         "Serve HTTPS (WebSocket, XEP-0156 host-meta, XEP-0363 uploads) on this port "
         "(off by default; Prosody's HTTPS port is 5281).", _port],
        ["http-interfaces", None, "::", "Comma-separated addresses for the HTTP port (all by default)."],
        ["http-external-url", None, None,
         "The HTTP port's URL as clients reach it (behind a proxy). Default: https://DOMAIN:PORT."],
        ["upload-domain", None, None, "The XEP-0363 upload service's JID. Default: upload.DOMAIN."],
        ["upload-max-size", None, 10485760, "Largest file in bytes an upload slot is given for.",
         _positive_int],
        ["upload-quota", None, 104857600, "Bytes of uploaded files an account may keep at once.",
         _positive_int],
        ["upload-retention", None, 604800, "Seconds an uploaded file is kept.", _positive_int],
        ["upload-dir", None, None,
         "Keep uploaded files here, a directory every process of a cluster shares (NFS, a shared volume); "
         "needed with --cluster. Default: DATA_DIR/upload."],
        ["cluster", None, None,
         "redis://host:port/db: serve --domain together with the other processes using this Redis "
         "and the same shared --storage (postgresql://…); see docs/cluster.md."],
        ["node-name", None, None, "This process's name in the cluster. Default: hostname-pid."],
        ["cluster-timeout", None, 15.0,
         "Seconds without a heartbeat after which a cluster process is dead and its sessions end.",
         _positive_float],
    ]
    subCommands = [
        ["component", None, ComponentOptions,
         "Attach the pubsub service to an existing XMPP server (XEP-0114)."],
    ]

    def __init__(self):
        super().__init__()
        self["components"] = {}
        self["plugins"] = []
        self["contact"] = {}  # XEP-0157: type -> URIs (xep207.server.contact_info)
        self["admins"] = []

    def opt_plugin(self, name):
        """NAME: enable a server plugin (xep207.plugins.IServerPlugin); repeatable."""
        self["plugins"].append(name)

    def opt_contact(self, value):
        """TYPE=URI: an XEP-0157 contact address (abuse, admin, support…; repeatable)."""
        kind, sep, uri = value.partition("=")
        if not sep or not kind or not uri:
            raise usage.UsageError("--contact takes TYPE=URI")
        known = self["contact"].get(kind) or []
        self["contact"][kind] = [*(known if isinstance(known, list) else [known]), uri]

    def opt_admin(self, jid):
        """JID: an account allowed XEP-0133 service administration (repeatable)."""
        self["admins"].append(jid)

    def opt_component(self, value):
        """NAME=SECRET: accept an external component (repeatable; prefer the config file)."""
        name, sep, secret = value.partition("=")
        if not sep or not name or not secret:
            raise usage.UsageError("--component takes NAME=SECRET")
        self["components"][name] = secret

    def postOptions(self):
        if self.subCommand is not None:
            return
        _log_format(self)
        try:
            domain = jidlib.JID(self["domain"])
        except jidlib.InvalidFormat as exc:
            raise usage.UsageError(f"--domain: {exc}")
        if domain.user or domain.resource:
            raise usage.UsageError("--domain is a domain name, not a JID")
        self["domain"] = domain.host
        self["pubsub-domain"] = self["pubsub-domain"] or f"pubsub.{domain.host}"
        self["chat-domain"] = self["chat-domain"] or f"chat.{domain.host}"
        if bool(self["tls-cert"]) != bool(self["tls-key"]):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        for option in ("tls-cert", "tls-key"):
            if self[option] and not os.path.isfile(self[option]):
                raise usage.UsageError(f"--{option}: no such file {self[option]}")
        if not self["storage"]:
            self["storage"] = default_storage_url(self["data-dir"])
        _check_storage_url(self["storage"])
        from xep207.server.contact_info import parse_addresses

        try:
            self["contact"] = parse_addresses(self["contact"])
        except ValueError as exc:
            raise usage.UsageError(f"--contact: {exc}")
        self["upload-domain"] = self["upload-domain"] or f"upload.{domain.host}"
        if self["http-port"] is not None and self["no-tls"] and not self["http-plain"]:
            raise usage.UsageError("--http-port with --no-tls serves plain HTTP: say so with --http-plain")
        url = self["http-external-url"]
        if url and not url.startswith(("http://", "https://")):
            raise usage.UsageError("--http-external-url is an http:// or https:// URL")
        if self["cluster"]:
            from xep207.cluster.link import RedisAddress

            try:
                RedisAddress.parse(self["cluster"])
            except ValueError as exc:
                raise usage.UsageError(f"--cluster: {exc}")
            if self["storage"].startswith(("sqlite:", "memory:")):
                raise usage.UsageError("--cluster needs storage every process shares (postgresql://…)")
        if self["plugins"]:
            from xep207.plugins import find_plugins

            missing = sorted(set(self["plugins"]) - set(find_plugins()))
            if missing:
                raise usage.UsageError(f"--plugin: no xep207 plugin named {', '.join(missing)}")


def makeService(options) -> service.IService:
    if options.subCommand == "component":
        return make_component_service(options.subOptions)
    from xep207.server.tap import make_server_service

    return make_server_service(options)
