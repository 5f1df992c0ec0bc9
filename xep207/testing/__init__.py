"""Test support for people who build on xep207.

- ``StorageContract``: the storage contract as tests. A backend author writes::

      from twisted.trial import unittest
      from xep207.testing import StorageContract

      class MyBackendContract(StorageContract, unittest.TestCase):
          def make_storage(self):
              return MyBackend("mine://…")

  and runs it with ``trial`` or ``pytest``.
- ``StanzaHarness`` (``xep207.testing.stanzas``): drive handlers with raw XML.
- ``InMemoryServer`` (``xep207.testing.harness``): the whole server without
  sockets; log accounts in, send raw stanzas, wait until it is quiet, read
  what each session received.
"""

from xep207.testing.contract import StorageContract
from xep207.testing.harness import InMemoryServer
from xep207.testing.stanzas import StanzaHarness

__all__ = ["InMemoryServer", "StorageContract", "StanzaHarness"]
