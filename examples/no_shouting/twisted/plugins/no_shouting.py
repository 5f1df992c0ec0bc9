"""An example xep207 server plugin: messages in capitals are refused.

Put this file in a ``twisted/plugins/`` directory on the Python path and start
the server with ``--plugin no-shouting``.
"""

from twisted.plugin import IPlugin
from zope.interface import provider

from xep207.hooks import STANZA
from xep207.plugins import IServerPlugin


def shouting(stanza) -> bool:
    body = next((c for c in stanza.elements() if c.name == "body"), None)
    text = str(body) if body is not None else ""
    return stanza.name == "message" and text.isupper()


@provider(IPlugin, IServerPlugin)
class NoShouting:
    name = "no-shouting"

    @staticmethod
    def install(server) -> None:
        def refuse_shouting(stanza) -> bool:
            if getattr(stanza, "session", None) is None or not shouting(stanza):
                return False  # not captured: routing goes on
            server.router.bounce(stanza, "policy-violation", "please do not shout")
            return True  # captured: nobody receives it

        # Before the captures (priority 0), after the pubsub-usage observer (100).
        server.hooks.add(STANZA, refuse_shouting, priority=50)
