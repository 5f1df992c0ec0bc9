"""``twistd xep207`` keeps what exists once the server is built out of every
later garbage collection and collects the young generation less often
(xep207.server.gc_policy); a process that only embeds xep207 keeps its
collector as it was. Both run in a child process:
freezing this test runner's objects would outlive the test."""

import json
import subprocess
import sys

from twisted.trial import unittest

from tests.peers import source_env, temp_dir

from xep207.server.gc_policy import YOUNG_THRESHOLD

PROBE = """
import gc, json, sys
from xep207.tap import Options, makeService
options = Options()
options.parseOptions(sys.argv[1:])
before = gc.get_freeze_count(), gc.get_threshold()
from xep207.testing import server as embedded  # (the embedding path: imported, nothing changed)
after_import = gc.get_freeze_count(), gc.get_threshold()
top = makeService(options)
print(json.dumps({"before": before, "after_import": after_import,
                  "after": [gc.get_freeze_count(), gc.get_threshold()]}))
"""


class FrozenAtStart(unittest.TestCase):
    def test_the_plugin_tunes_the_collector_once_built(self):
        directory = temp_dir(self)
        done = subprocess.run(
            [sys.executable, "-c", PROBE, "--domain", "gc.example", "--storage", "memory:", "--no-tls",
             "--c2s-port", "0", "--data-dir", directory],
            capture_output=True, text=True, cwd=directory, env=source_env(), timeout=120)
        self.assertEqual(done.returncode, 0, done.stderr)
        found = json.loads(done.stdout.strip().splitlines()[-1])
        self.assertEqual(found["before"], found["after_import"])
        self.assertEqual(found["before"][0], 0)
        frozen, thresholds = found["after"]
        self.assertGreater(frozen, 20000)  # the modules, classes and functions loaded
        self.assertEqual(thresholds, [YOUNG_THRESHOLD, *found["before"][1][1:]])
