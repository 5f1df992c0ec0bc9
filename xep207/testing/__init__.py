"""Test support for people who build on xep207.

- ``StorageContract``: the storage contract as tests. A backend author writes::

      from twisted.trial import unittest
      from xep207.testing import StorageContract

      class MyBackendContract(StorageContract, unittest.TestCase):
          def make_storage(self):
              return MyBackend("mine://…")

  and runs it with ``trial`` or ``pytest``.
- ``StanzaHarness`` (``xep207.testing.stanzas``): drive handlers with raw XML.
"""

from xep207.testing.contract import StorageContract
from xep207.testing.stanzas import StanzaHarness

__all__ = ["StorageContract", "StanzaHarness"]
