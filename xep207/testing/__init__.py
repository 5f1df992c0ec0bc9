"""Test support for people who build on xep207.

- ``StorageContract``: the storage contract as tests. A backend author writes::

      from twisted.trial import unittest
      from xep207.testing import StorageContract

      class MyBackendContract(StorageContract, unittest.TestCase):
          def make_storage(self):
              return MyBackend("mine://…")

  and runs it with ``trial``, ``pytest`` or pytest with pytest-twisted; a
  backend whose ``reopen`` returns None has its durability test skipped.
- ``start_server`` / ``server_fixture`` (``xep207.testing.server``): a real
  server on a free port with accounts, and ``Client``s logged into it over
  STARTTLS and SASL, from trial test cases or pytest-twisted fixtures.
- ``StanzaHarness`` (``xep207.testing.stanzas``): drive handlers with raw XML.
- ``InMemoryServer`` (``xep207.testing.harness``): the whole server without
  sockets; log accounts in, send raw stanzas, wait until it is quiet, read
  what each session received.
"""

from xep207.testing.contract import StorageContract
from xep207.testing.harness import InMemoryServer
from xep207.testing.server import Client, RunningServer, server_fixture, start_server
from xep207.testing.stanzas import StanzaHarness

__all__ = ["StorageContract", "StanzaHarness", "Client", "RunningServer", "server_fixture",
           "start_server", "InMemoryServer"]
