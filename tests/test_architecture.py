"""Rules of the house that a reader relies on, checked on the source itself."""

from __future__ import annotations

import ast
import os

from twisted.trial import unittest

from tests.peers import temp_dir

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, "xep207")
WRITES = {"create_node", "set_node_config", "delete_node", "set_affiliation", "set_subscription",
          "remove_subscription", "put_item", "delete_items", "purge_items", "create_account",
          "update_account", "delete_account", "answer_pending_subscription"}
# Only the engine (and the storage layer itself, and the backend contract suite) write storage.
MAY_WRITE = ("pubsub", "storage", "testing")


def storage_writes(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in WRITES:
            owner = node.func.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name in ("storage", "backend", "target"):
                found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {name}.{node.func.attr}")
    return found


class OneAuthority(unittest.TestCase):
    def test_nothing_outside_the_engine_writes_storage(self):
        offenders = []
        for folder, _, files in os.walk(ROOT):
            relative = os.path.relpath(folder, ROOT)
            if relative.split(os.sep)[0] in MAY_WRITE:
                continue
            for name in files:
                if name.endswith(".py"):
                    offenders += storage_writes(os.path.join(folder, name))
        self.assertEqual(offenders, [], "storage written around the engine")

    def test_the_walker_sees_a_write(self):
        path = os.path.join(temp_dir(self), "file")
        with open(path, "w") as f:
            f.write("async def f(self):\n    await self.storage.put_item('s', 'n', None, 1)\n")
        self.assertEqual(len(storage_writes(path)), 1)


class KindNames(unittest.TestCase):
    """mypy checks each kind's ``name`` against ``NodeKindName``; this checks
    the other way: every listed name has exactly one kind (the delivery
    dispatches renderers by it, so two kinds sharing a name would collide)."""

    def test_every_kind_name_belongs_to_exactly_one_kind(self):
        from typing import get_args

        import importlib
        import pkgutil

        import xep207.pubsub.kinds
        from xep207.pubsub.kinds.base import NodeKind, NodeKindName

        for module in pkgutil.iter_modules(xep207.pubsub.kinds.__path__):  # some load lazily elsewhere
            importlib.import_module(f"xep207.pubsub.kinds.{module.name}")

        kinds, todo = [], [NodeKind]
        while todo:
            kind = todo.pop()
            kinds.append(kind)
            todo.extend(kind.__subclasses__())
        names = [kind.name for kind in kinds
                 if "name" in vars(kind) and kind.__module__.startswith("xep207.")]
        self.assertEqual(sorted(names), sorted(get_args(NodeKindName)))


class Packaging(unittest.TestCase):
    def test_every_package_ships_in_the_wheel(self):
        """pyproject.toml lists packages by hand (the twisted/plugins namespace
        needs it): a new folder of modules must be listed, or the installed
        server cannot import it."""
        import tomllib

        with open(os.path.join(ROOT, os.pardir, "pyproject.toml"), "rb") as f:
            listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
        found = set()
        for folder, _, files in os.walk(ROOT):
            if "__pycache__" not in folder and any(name.endswith(".py") for name in files):
                relative = os.path.relpath(folder, os.path.join(ROOT, os.pardir))
                found.add(relative.replace(os.sep, "."))
        self.assertEqual(sorted(found - listed), [])
