"""The storage contract as a backend author runs it: trial, pytest, pytest with pytest-twisted.

Each test writes a small third-party test module to a temporary directory and
runs a real test runner on it in a child process, then reads the runner's own
report: its exit code, its summary counts and each test's outcome. Memory is
not durable, so the contract's durability test must come out *skipped* (not
errored, not passed); SQLite is durable, so everything must pass.
"""

import os
import re
import subprocess
import sys
import textwrap

from twisted.trial import unittest

from tests.peers import source_env, temp_dir
from xep207.testing import StorageContract

CONTRACT_TESTS = sorted(name for name in dir(StorageContract) if name.startswith("test"))
DURABILITY_TEST = "test_reopen_keeps_everything"

BACKEND_TESTS = textwrap.dedent('''
    """What a backend author writes: the contract, mixed into trial's TestCase."""
    import os
    import shutil
    import tempfile

    from twisted.internet import defer
    from twisted.trial import unittest

    from xep207.storage.memory import MemoryStorage
    from xep207.storage.sqlite import SQLiteStorage
    from xep207.testing import StorageContract


    class MemoryContract(StorageContract, unittest.TestCase):
        def make_storage(self):
            return MemoryStorage()


    class SQLiteContract(StorageContract, unittest.TestCase):
        def make_storage(self):
            directory = tempfile.mkdtemp()
            self.addCleanup(shutil.rmtree, directory)
            self.url = "sqlite:///" + os.path.join(directory, "contract.sqlite")
            return SQLiteStorage(self.url)

        async def reopen(self):
            await defer.maybeDeferred(self.storage.stop)
            self.storage = SQLiteStorage(self.url)
            await self.storage.start()
            return self.storage
''')


class RunnerReport:
    """What a runner said: exit code, summary counts, and each test's outcome by class."""

    def __init__(self, code: int, output: str, counts: dict[str, int],
                 outcomes: dict[tuple[str, str], str]):
        self.code = code
        self.output = output
        self.counts = counts
        self.outcomes = outcomes

    def of(self, test_class: str) -> dict[str, str]:
        return {name: outcome for (cls, name), outcome in self.outcomes.items()
                if cls == test_class}


class StorageContractUnderRunner:
    """Mixed into one TestCase per runner; ``command`` and ``parse`` say how it runs.

    The runner runs once per TestCase class (a runner starts in seconds): both
    backends in one go, each test then checks its own backend's outcomes.
    """

    _report: RunnerReport | None = None

    def command(self, module: str) -> list[str]:
        raise NotImplementedError

    def parse(self, code: int, output: str) -> RunnerReport:
        raise NotImplementedError

    def report(self) -> RunnerReport:
        if type(self)._report is None:
            type(self)._report = self.run_runner()
        return type(self)._report

    def run_runner(self) -> RunnerReport:
        directory = temp_dir(self)
        with open(os.path.join(directory, "test_backend.py"), "w") as f:
            f.write(BACKEND_TESTS)
        with open(os.path.join(directory, "pytest.ini"), "w") as f:
            f.write("[pytest]\n")  # the author's project, not ours: no setup.cfg from here
        # Only what an author's shell would have: no pytest settings inherited from our run.
        env = {k: v for k, v in source_env().items() if not k.startswith("PYTEST_")}
        completed = subprocess.run(self.command("test_backend"), cwd=directory, env=env,
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                   timeout=120)
        return self.parse(completed.returncode, completed.stdout + completed.stderr)

    def test_whole_run_passes_with_one_skip(self):
        report = self.report()
        self.assertEqual(report.code, 0, report.output)
        expected = {"passed": 2 * len(CONTRACT_TESTS) - 1, "skipped": 1}
        self.assertEqual(report.counts, expected, report.output)

    def test_non_durable_backend_reports_durability_skipped(self):
        report = self.report()
        expected = {name: "passed" for name in CONTRACT_TESTS}
        expected[DURABILITY_TEST] = "skipped"
        self.assertEqual(report.of("MemoryContract"), expected, report.output)
        self.assertIn("backend is not durable", report.output)

    def test_durable_backend_passes_everything(self):
        report = self.report()
        self.assertEqual(report.of("SQLiteContract"), {name: "passed" for name in CONTRACT_TESTS},
                         report.output)


class Trial(StorageContractUnderRunner, unittest.TestCase):
    def command(self, module):
        return [sys.executable, "-m", "twisted.trial", module]

    def parse(self, code, output):
        # A tree: "  MemoryContract", then "    test_accounts ...   [OK]" per test;
        # "PASSED (skips=1, successes=29)" at the end.
        names = {"OK": "passed", "SKIPPED": "skipped"}
        outcomes, test_class = {}, None
        for line in output.splitlines():
            if heading := re.fullmatch(r"  (\w+)", line):
                test_class = heading.group(1)
            elif result := re.fullmatch(r"    (test\w+) \.\.\.\s+\[(\w+)\]", line):
                outcomes[test_class, result.group(1)] = names.get(result.group(2), result.group(2))
        summary = re.search(r"^(PASSED|FAILED) \((.*)\)$", output, re.M)
        self.assertIsNotNone(summary, output)
        raw = {key: int(n) for key, n in re.findall(r"(\w+)=(\d+)", summary.group(2))}
        counts = {"passed": raw.pop("successes", 0), "skipped": raw.pop("skips", 0), **raw}
        return RunnerReport(code, output, counts, outcomes)


class Pytest(StorageContractUnderRunner, unittest.TestCase):
    plugins = ("-p", "no:twisted")  # plain pytest, whether or not pytest-twisted is installed

    def command(self, module):
        return [sys.executable, "-m", "pytest", *self.plugins, "-p", "no:cacheprovider",
                "-v", "-rs", f"{module}.py"]

    def parse(self, code, output):
        # "test_backend.py::MemoryContract::test_accounts PASSED" per test;
        # "==== 29 passed, 1 skipped, 3 warnings in 0.61s ====" at the end.
        outcomes = {(test_class, name): status.lower() for test_class, name, status
                    in re.findall(r"::(\w+)::(test\w+) ([A-Z]+)\b", output)}
        summary = output.strip().splitlines()[-1]
        counts = {"passed": 0, "skipped": 0}
        for n, what in re.findall(r"(\d+) (\w+)", summary):
            if what not in ("warning", "warnings"):
                counts[what] = int(n)
        return RunnerReport(code, output, counts, outcomes)


class PytestTwisted(Pytest):
    """pytest with pytest-twisted active, as in a suite that embeds xep207: its
    reactor runs in a greenlet for the whole session, trial TestCases included."""

    plugins = ()  # installed plugins load themselves, pytest-twisted among them

    def parse(self, code, output):
        plugins = re.search(r"^plugins: (.*)$", output, re.M)
        self.assertIsNotNone(plugins, output)
        self.assertRegex(plugins.group(1), r"\btwisted-\d", "pytest-twisted is not active")
        return super().parse(code, output)
