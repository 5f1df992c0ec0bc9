"""Server plugins: found through Twisted's plugin system, enabled by name, wired by hooks.

The plugin used is the README's example, ``examples/no_shouting``, so the
documented code is the tested code.
"""

from __future__ import annotations

import os

import twisted.plugins
from twisted.python import usage
from twisted.trial import unittest

from tests.peers import temp_dir

from tests.server_helpers import DOMAIN, ServerTestCase
from xep207.hooks import Hooks
from xep207.tap import Options

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "no_shouting",
                       "twisted", "plugins")


def with_example_plugin(test: unittest.TestCase) -> None:
    path = os.path.abspath(EXAMPLE)
    twisted.plugins.__path__.append(path)
    test.addCleanup(twisted.plugins.__path__.remove, path)


class Enabling(unittest.TestCase):
    def test_an_unknown_plugin_is_a_usage_error(self):
        options = Options()
        with self.assertRaises(usage.UsageError) as caught:
            options.parseOptions(["--plugin", "no-such-plugin"])
        self.assertIn("no-such-plugin", str(caught.exception))

    def test_config_file_lists_plugins(self):
        with_example_plugin(self)
        path = os.path.join(temp_dir(self), "file")
        with open(path, "w") as f:
            f.write('plugins = ["no-shouting"]\n')
        options = Options()
        options.parseOptions(["--config", path])
        self.assertEqual(options["plugins"], ["no-shouting"])


class ExamplePlugin(ServerTestCase):
    users = ("alice", "bob")
    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def online(self, user, resource):
        client = await self.connect()
        await client.login(user, resource=resource)
        client.send("<presence/>")
        await client.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == client.jid)
        return client

    async def test_no_shouting_refuses_capitals_and_lets_the_rest_through(self):
        with_example_plugin(self)
        await self.start_server("--plugin", "no-shouting")
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='m1'><body>HELLO</body></message>")
        error = await alice.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "m1")
        self.assertEqual(error["type"], "error")
        self.assertIn("policy-violation", error.toXml())
        alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='m2'><body>hello</body></message>")
        got = await bob.wait_for(lambda e: e.name == "message" and e.body is not None)
        self.assertEqual(str(got.body), "hello")  # the shouted one never arrived first


class HookOrder(unittest.TestCase):
    async def test_priority_then_insertion_order_and_first_answer_wins(self):
        hooks, seen = Hooks(), []

        def handler(tag, answer):
            def run(value):
                seen.append(tag)
                return answer
            return run

        hooks.add("e", handler("late", "late"), priority=-1)
        hooks.add("e", handler("first", None))
        hooks.add("e", handler("second", "answer"))
        hooks.add("e", handler("early", False), priority=10)
        self.assertEqual(await hooks.first("e", 1), "answer")
        self.assertEqual(seen, ["early", "first", "second"])


class Documented(unittest.TestCase):
    def test_the_readme_shows_the_tested_example(self):
        root = os.path.join(os.path.dirname(__file__), os.pardir)
        with open(os.path.join(EXAMPLE, "no_shouting.py"), encoding="utf-8") as f:
            code = f.read().split('"""\n\n', 1)[1]
        with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
            self.assertIn(code, f.read())
