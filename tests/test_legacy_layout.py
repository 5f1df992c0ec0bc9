"""The legacy door stays a set of small modules, one concept each (issue 10):
a reader finds where a stanza is handled without paging through one file."""

import pathlib

from twisted.trial import unittest

LEGACY = pathlib.Path(__file__).resolve().parent.parent / "xep207" / "legacy"
MAX_LINES = 300


class LegacyLayout(unittest.TestCase):
    def test_every_legacy_module_is_small(self):
        modules = sorted(LEGACY.rglob("*.py"))
        self.assertIn(LEGACY / "groupchat" / "service.py", modules)
        too_long = {str(m.relative_to(LEGACY)): n for m in modules
                    if (n := len(m.read_text().splitlines())) > MAX_LINES}
        self.assertEqual(too_long, {}, f"split these: modules over {MAX_LINES} lines")

