"""Server plugins: third-party captures, node kinds and handlers, found like storage backends.

A plugin is an object providing ``IServerPlugin`` in a ``twisted/plugins/``
module on the Python path; the operator enables it by name (``--plugin NAME``
or ``plugins = ["NAME"]`` in the config file). ``install`` gets the running
``Server`` before it listens: it adds handlers to ``server.hooks`` (a
``STANZA`` handler captures stanzas, ``SESSION_BOUND`` follows logins, …),
node kinds to ``server.engine`` (``add_kind``) and renderers to
``server.delivery.renderers``. An enabled plugin that cannot be found is a
start-up error, never a silent no-op.
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.plugin import getPlugins
from zope.interface import Attribute, Interface

__all__ = ["IServerPlugin", "PluginNotFound", "find_plugins", "install_plugins"]


class IServerPlugin(Interface):
    name = Attribute("The name an operator enables it by.")

    def install(server: Any) -> None:
        """Wire the plugin into a server that is about to start."""


class PluginNotFound(Exception):
    pass


def find_plugins() -> dict[str, IServerPlugin]:
    import twisted.plugins

    return {plugin.name: plugin for plugin in getPlugins(IServerPlugin, twisted.plugins)}


def install_plugins(server: Any, names: Iterable[str]) -> list[str]:
    """Install the named plugins in order; the names installed."""
    names = list(names)
    if not names:
        return []
    available = find_plugins()
    missing = [n for n in names if n not in available]
    if missing:
        raise PluginNotFound(f"no xep207 plugin named {', '.join(missing)} "
                             f"(found: {', '.join(sorted(available)) or 'none'})")
    for name in names:
        available[name].install(server)
    return names
