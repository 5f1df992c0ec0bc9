"""The full server's service tree: storage, router, services, listeners."""

from __future__ import annotations

import os
import socket

from twisted.application import internet, service
from twisted.internet import defer, reactor
from twisted.python import log
from wokkel.generic import VersionHandler
from wokkel.ping import PingHandler

import xep207
from xep207 import cluster
from xep207.discovery import DiscoHandler
from xep207.hooks import INITIAL_PRESENCE, STANZA, Hooks
from xep207.plugins import install_plugins
from xep207.legacy.archive import ArchiveHandler
from xep207.legacy.blocking import install as install_blocking
from xep207.legacy.last_activity import LastActivityHandler
from xep207.legacy.mam_prefs import MamPrefsHandler
from xep207.server.contact_info import ContactInfo
from xep207.legacy.caps import CapsTracker
from xep207.legacy.chat import CarbonsHandler, ChatCapture
from xep207.legacy.delivery import EventDelivery, PubSubUsage, SessionInterest
from xep207.legacy.groupchat import GroupchatService
from xep207.legacy.personal import install as install_personal_data
from xep207.legacy.presence import PresenceCapture
from xep207.legacy.render import PresenceRenderer
from xep207.legacy.roster import RosterHandler, RosterView
from xep207.legacy.subscriptions import SubscriptionCapture
from xep207.pubsub.engine import PubSubEngine
from xep207.pubsub.kinds import PairKind, PresenceKind, standard_kinds
from xep207.pubsub.kinds.room import RoomKind
from xep207.pubsub.protocol import PubSubProtocol
from xep207.server import account_control, admin_channel, backpressure, csi, direct_tls, push, service_admin
from xep207.server import stream_management, tls
from xep207.server import sasl
from xep207.server.c2s import AuthThrottle, C2SPolicy, ClientFactory, RateWindow
from xep207.server.stream import Shaping, StreamLimits
from xep207.server.components import ComponentServerFactory
from xep207.server.gc_policy import tune_collector
from xep207.server.register import RegistrationHandler
from xep207.server.router import Router
from xep207.server.services import InternalService, LegacySession, LocalServices, ServerDisco
from xep207.web import install as install_web
from xep207.service import OrderedServices, StorageService, WhenReady, prepare_sqlite
from xep207.startup import ExclusiveLock, StartupError, fail_start, prepare_data_dir


def _interfaces(value: str) -> list[str]:
    interfaces = [i.strip() for i in value.split(",") if i.strip()]
    if interfaces == ["::"] and not socket.has_ipv6:
        return ["0.0.0.0"]
    return interfaces


def _sasl_secret(data_dir: str) -> bytes:
    try:
        return sasl.load_secret(data_dir)
    except OSError as exc:
        log.msg(f"cannot keep a SASL secret in {data_dir} ({exc}): decoy salts change on restart")
        return b""


class _OnStop(service.Service):
    def __init__(self, callback):
        self.callback = callback

    def stopService(self):
        super().stopService()
        return self.callback()


class ServerService(OrderedServices):
    """The server's top service, as twistd gets it; ``server`` reaches the
    running ``Server`` from there."""

    server: Server


class Server:
    """The pieces of a running server, for embedding and tests."""

    def __init__(self, options, clock=reactor):
        domain = options["domain"]
        self.domain = domain
        self.top = ServerService()
        self.storage_service = StorageService(options["storage"])
        self.storage_service.setServiceParent(self.top)
        self.storage = self.storage_service.storage
        self.storage_backend = self.storage_service.backend
        pubsub_domain = options["pubsub-domain"]
        self.hooks = Hooks()  # one set of named events for the router, the engine and plugins
        self.router = Router(domain, self.storage, self.hooks)
        self.router.deliver_to_all = options["deliver-to-all-resources"]
        self.delivery = EventDelivery(self.router)
        chat_domain = options["chat-domain"]
        self.engine = PubSubEngine(
            self.storage, self.delivery, pep_domains=[domain],
            interest=SessionInterest(self.router), max_payload_size=options["max-payload-size"],
            kinds=standard_kinds(pubsub_domain, chat_domain), hooks=self.hooks)

        # Legacy capture: presence, subscriptions and the roster over nodes.
        self.hooks.add(STANZA, PubSubUsage().intercept, priority=100, stanzas=("iq",))  # observes, never captures
        self.roster = RosterView(self.router, self.engine)
        self.subscriptions = SubscriptionCapture(self.router, self.engine, self.delivery, self.roster)
        self.caps = CapsTracker(self.router, self.engine, self.delivery)
        self.presence = PresenceCapture(self.router, self.engine, self.delivery, self.subscriptions,
                                        self.caps)
        self.chat = ChatCapture(self.router, self.engine, pubsub_domain, self.delivery)
        self.carbons = CarbonsHandler(self.router)
        self.hooks.add(INITIAL_PRESENCE, self.chat.deliver_offline)
        self.groupchat = GroupchatService(self.router, self.engine, chat_domain)
        self.delivery.renderers.update({PresenceKind.name: PresenceRenderer(), PairKind.name: self.chat,
                                        RoomKind.name: self.groupchat.renderer})
        ready = self.storage_service.ready
        self.cluster = cluster.install(self, options)  # None without --cluster (docs/cluster.md)
        if self.cluster is None:  # alone, nothing a previous run left is alive
            ready.addCallback(lambda _: defer.ensureDeferred(self.presence.clear_stale()))
            ready.addCallback(lambda _: defer.ensureDeferred(self.groupchat.clear_stale()))
        self.started = WhenReady(ready)
        self.started.setServiceParent(self.top)

        # Addresses of the server itself and of its accounts (PEP).
        self.local = LocalServices(self.router)
        handlers = [ServerDisco(self.router, options["registration"]), DiscoHandler(), LegacySession(),
                    PingHandler(), VersionHandler("xep207", xep207.__version__),
                    PubSubProtocol(self.engine, accepts=self.engine.is_pep, pep=True),
                    RosterHandler(self.roster, self.subscriptions), ArchiveHandler(self.chat)]
        self.accounts = account_control.install(self)  # one path: XEP-0077, xep207ctl, XEP-0133
        handlers.append(RegistrationHandler(self))  # self-service always; sign-up with --registration
        for handler in handlers:
            handler.setHandlerParent(self.local)
        install_blocking(self)  # XEP-0191
        MamPrefsHandler(self.engine, domain).setHandlerParent(self.local)  # XEP-0313 §6
        LastActivityHandler(self.router, self.engine).setHandlerParent(self.local)  # XEP-0012
        ContactInfo(domain, options.get("contact") or {}).setHandlerParent(self.local)  # XEP-0157
        install_personal_data(self)  # private storage, bookmarks, vCard, avatars (PEP nodes)

        # The pubsub service on its own domain.
        self.pubsub = InternalService(self.router, pubsub_domain)
        for handler in (PubSubProtocol(self.engine, accepts=lambda s: s == pubsub_domain),
                        DiscoHandler(), PingHandler()):
            handler.setHandlerParent(self.pubsub)
        self.pubsub.setServiceParent(self.started)
        self.router.internal_routes.add(pubsub_domain)

        # The groupchat service: XEP-0045 and XEP-0060 on the same room nodes.
        self.rooms = InternalService(self.router, chat_domain)
        rooms_pubsub = PubSubProtocol(self.engine, accepts=lambda s: s.split("@")[-1] == chat_domain
                                      and "/" not in s, allow_create=False)
        rooms_pubsub.hideNodes = True  # rooms are listed as rooms, by the groupchat service
        rooms_pubsub.describes = lambda target: target == chat_domain
        rooms_pubsub.serial = self.groupchat.in_room  # one room's requests in turn, through both doors
        for handler in (self.groupchat, rooms_pubsub, DiscoHandler()):  # the groupchat service answers pings (XEP-0410)
            handler.setHandlerParent(self.rooms)
        self.rooms.setServiceParent(self.started)
        self.router.internal_routes.add(chat_domain)

        self.stream_management = stream_management.install(self, options, clock)  # XEP-0198
        csi.install(self)  # XEP-0352

        # Client connections.
        tls_context = None
        if not options["no-tls"]:
            tls_context = tls.context_factory(domain, options["data-dir"], options["tls-cert"],
                                              options["tls-key"])
        self.policy = C2SPolicy(
            domain=domain, tls=tls_context, require_tls=not options["tls-optional"],
            allow_plaintext_auth=options["allow-plaintext-auth"],
            compression=not options["no-compression"],
            limits=StreamLimits(options["max-stanza-size"], options["max-stanza-elements"],
                                options["max-stanza-depth"]),
            pre_auth_limits=StreamLimits(options["max-pre-auth-stanza-size"],
                                         options["max-pre-auth-stanza-elements"],
                                         options["max-pre-auth-stanza-depth"]),
            shaping=Shaping(options["c2s-rate"], options["c2s-burst"], options["max-output-buffer"]),
            max_unauthenticated=options["max-unauthenticated"],
            auth_timeout=options["auth-timeout"], registration=options["registration"],
            sasl_secret=_sasl_secret(options["data-dir"]))
        self.throttle = AuthThrottle(clock, options["max-auth-failures"],
                                     options["max-account-auth-failures"])
        self.registrations = RateWindow(clock, options["max-registrations"], 3600.0)
        # Client streams stop reading while the storage writer is behind.
        self.backpressure = backpressure.install(self, clock)
        self.client_factory = ClientFactory(self.policy, self.router, self.throttle, self.backpressure)
        self.client_factory.noisy = False
        self.listeners = []
        for interface in _interfaces(options["c2s-interfaces"]):
            listener = (cluster.ReusePortServer if options.get("c2s-reuse-port") else internet.TCPServer)(
                options["c2s-port"], self.client_factory, interface=interface)
            listener.setServiceParent(self.started)
            self.listeners.append(listener)
        self.direct_tls_listeners = direct_tls.install(self, options, _interfaces(options["c2s-interfaces"]))

        # The HTTP(S) port: WebSocket, host-meta, uploads (xep207.web), when asked for.
        self.web = install_web(self, options, _interfaces(options.get("http-interfaces", "::")))

        # Prometheus, when asked for.
        self.metrics = None
        if options["metrics-port"] is not None:
            from xep207.metrics import MetricsService

            self.metrics = MetricsService(options["metrics-port"], options["metrics-interface"], self)
            self.metrics.setServiceParent(self.started)

        admin_channel.install(self, options)  # xep207ctl's way in: DATA-DIR/admin.sock
        service_admin.install(self, options)  # XEP-0133 ad-hoc commands for --admin accounts
        self.push = push.install(self, options)  # XEP-0357 push notifications

        # Added last, stopped first: sessions end while storage is still open.
        _OnStop(lambda: defer.ensureDeferred(self.close_sessions())).setServiceParent(self.started)

        # Server plugins (xep207.plugins), last: everything they extend exists.
        install_plugins(self, options.get("plugins", ()))

        # External components (XEP-0114).
        components = options["components"]
        if components:
            factory = ComponentServerFactory(self.router, components)
            factory.noisy = False
            listener = internet.TCPServer(options["component-port"], factory,
                                          interface=options["component-interface"])
            listener.setServiceParent(self.started)
            self.listeners.append(listener)

    async def close_sessions(self) -> None:
        """On shutdown, while storage is still open: every session goes
        unavailable (its presence item retracted, contacts told), then its
        stream ends with ``system-shutdown``."""
        await self.quiesce()
        sessions = [s for resources in list(self.router.sessions.values()) for s in resources.values()]
        for session in sessions:
            await self.router.unbind(session)
        # Going unavailable sent presence to rooms and contacts: let it land.
        await self.quiesce()
        for session in sessions:
            session.close("system-shutdown", "the server is stopping")

    async def quiesce(self) -> None:
        """Wait until no stanza is being routed and no room work is under way."""
        while self.router.in_flight or self.groupchat.in_flight:
            await self.router.in_flight.drain()
            await self.groupchat.in_flight.drain()



def make_server_service(options) -> service.IService:
    try:
        uses_data_dir = options["storage"].startswith("sqlite:") or not (
            options["no-tls"] or options["tls-cert"]) or (
            options.get("http-port") is not None and not options.get("no-upload"))  # uploaded files
        if uses_data_dir:
            data_dir = prepare_data_dir(options["data-dir"])
            ExclusiveLock(os.path.join(data_dir, "xep207.lock"), f"data dir {data_dir}")
        prepare_sqlite(options["storage"])
        server = Server(options)
    except StartupError as exc:
        fail_start(str(exc))
    log.msg(f"xep207 {xep207.__version__} serving {server.domain} "
            f"(storage {server.storage.url}, pubsub at {options['pubsub-domain']})")
    server.top.server = server
    tune_collector()  # (xep207.server.gc_policy: the process is ours)
    return server.top
