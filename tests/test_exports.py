"""The public API for extension is what these ``__all__`` say, no more, no less.

A name added or removed here is an API change: do it on purpose (Klein's
``test_exports.py`` is the model).
"""

from __future__ import annotations

import importlib

from twisted.trial import unittest

PUBLIC = {
    "xep207.storage": {"IStorage", "IStorageFactory", "NodeExists", "AccountExists",
                       "StorageUnavailable", "open_storage"},
    "xep207.pubsub.kinds": {"Access", "INodeKind", "NodeKind", "PairKind", "PresenceKind",
                            "RosterKind", "Trusted", "is_trusted", "pair_node_id", "pair_parties",
                            "PRESENCE_NODE", "ROSTER_NODE", "standard_kinds"},
    "xep207.hooks": {"Hooks", "STANZA", "SESSION_BOUND", "SESSION_UNBOUND", "INITIAL_PRESENCE",
                     "SUBSCRIPTION_CHANGED", "ITEM_PUBLISHED", "ITEMS_RETRACTED", "NODE_EMPTIED", "UNACKED",
                     "AVAILABILITY_CHANGED", "KEPT_OFFLINE"},
    "xep207.plugins": {"IServerPlugin", "PluginNotFound", "find_plugins", "install_plugins"},
    "xep207.testing": {"StorageContract", "StanzaHarness", "Client", "RunningServer", "server_fixture",
                       "start_server", "InMemoryServer"},
}


class Exports(unittest.TestCase):
    def test_each_package_exports_exactly_its_public_names(self):
        for name, expected in PUBLIC.items():
            module = importlib.import_module(name)
            with self.subTest(module=name):
                self.assertEqual(set(module.__all__), expected)
                for attribute in module.__all__:
                    self.assertTrue(hasattr(module, attribute), f"{name}.{attribute} is missing")
