"""Storage: one interface, bundled backends, and third-party ones found by URL scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

from twisted.plugin import getPlugins
from zope.interface import Attribute, Interface

from xep207.storage.interface import AccountExists, IStorage, NodeExists, StorageUnavailable

__all__ = ["IStorage", "IStorageFactory", "NodeExists", "AccountExists", "StorageUnavailable",
           "open_storage"]


class IStorageFactory(Interface):
    """A storage backend plugin.

    Provide one from a module in a ``twisted/plugins/`` directory on the Python
    path; ``open_storage`` then opens URLs of its ``scheme``.
    """

    scheme = Attribute("The URL scheme this backend opens, e.g. 'redis'.")

    def open(url):
        """An ``IStorage`` for ``url`` (not yet started)."""


def _bundled(scheme: str, url: str):
    if scheme == "memory":
        from xep207.storage.memory import MemoryStorage

        return MemoryStorage(url)
    if scheme == "sqlite":
        from xep207.storage.sqlite import SQLiteStorage

        return SQLiteStorage(url)
    if scheme in ("postgresql", "postgres"):
        from xep207.storage.postgresql import PostgreSQLStorage

        return PostgreSQLStorage(url)
    return None


def open_storage(url: str) -> IStorage:
    """The backend for ``url``: bundled ones first, then Twisted plugins."""
    scheme = urlsplit(url).scheme or url.rstrip(":")
    storage = _bundled(scheme, url)
    if storage is not None:
        return storage
    import twisted.plugins

    for factory in getPlugins(IStorageFactory, twisted.plugins):
        if factory.scheme == scheme:
            return factory.open(url)
    raise ValueError(f"no storage backend for URL scheme {scheme!r} ({url})")
