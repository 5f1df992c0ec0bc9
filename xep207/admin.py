"""``xep207ctl``: manage accounts in the same storage the server uses.

    xep207ctl [--config FILE] [--storage URL] [--data-dir DIR] [--domain D] COMMAND

Passwords are read from a prompt (twice) on a terminal, or from the first line
of standard input otherwise — never from the command line.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

from twisted.internet import defer, task
from twisted.python import usage

from xep207.pubsub.engine import PubSubEngine
from xep207.pubsub.kinds import standard_kinds
from xep207.server import accounts
from xep207.storage import open_storage
from xep207.tap import Options as ServerOptions


def _read_password(confirm: bool = True) -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Again: ") != password:
            raise accounts.AccountError("the passwords differ")
        return password
    return sys.stdin.readline().rstrip("\n")


class _JidCommand(usage.Options):
    # Twisted's documented way to take positional arguments is to override
    # parseArgs with them, which its own zero-argument signature cannot express.
    def parseArgs(self, jid: str) -> None:  # type: ignore[override]
        self["jid"] = jid


class AddUser(_JidCommand):
    synopsis = "adduser JID"


class DelUser(_JidCommand):
    synopsis = "deluser JID"


class Passwd(_JidCommand):
    synopsis = "passwd JID"


class ListUsers(usage.Options):
    synopsis = "list"


class Migrate(usage.Options):
    synopsis = "migrate --from URL --to URL"
    optParameters = [["from", None, None, "Storage URL to copy from."],
                     ["to", None, None, "Storage URL to copy to (created or brought up to date)."]]

    def postOptions(self):
        if not self["from"] or not self["to"]:
            raise usage.UsageError("migrate needs --from and --to")
        if self["from"] == self["to"]:
            raise usage.UsageError("--from and --to are the same storage")


class Options(ServerOptions):
    synopsis = "[--config FILE] [--storage URL] [--data-dir DIR] [--domain D] COMMAND"
    # Any: the server's Options infers its list's element type from its one
    # subcommand class, and a list cannot hold others under that type.
    subCommands: Any = [
        ["adduser", None, AddUser, "Create an account (password from a prompt or stdin)."],
        ["deluser", None, DelUser, "Delete an account with its nodes and subscriptions."],
        ["passwd", None, Passwd, "Change an account's password."],
        ["list", None, ListUsers, "List the accounts of --domain."],
        ["migrate", None, Migrate, "Copy all data from one storage URL to another (idempotent)."],
    ]

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("name a command: adduser, deluser, passwd or list")
        # Told where the server's data is (rather than guessing ./xep207-data)?
        self.location_given = bool(self["storage"] or self["config"] or self["data-dir"] != "xep207-data")
        sub, self.subCommand = self.subCommand, None
        try:
            super().postOptions()
        finally:
            self.subCommand = sub


async def migrate(options) -> int:
    from xep207.storage.migrate import copy_storage

    source = open_storage(options.subOptions["from"])
    target = open_storage(options.subOptions["to"])
    await defer.maybeDeferred(source.start)
    try:
        await defer.maybeDeferred(target.start)
        try:
            counts = await copy_storage(source, target)
        finally:
            await defer.maybeDeferred(target.stop)
    finally:
        await defer.maybeDeferred(source.stop)
    print(f"copied {counts.accounts} accounts, {counts.nodes} nodes, {counts.items} items, "
          f"{counts.subscriptions} subscriptions, {counts.affiliations} affiliations")
    for mismatch in counts.mismatches:
        print(f"xep207ctl: mismatch: {mismatch}", file=sys.stderr)
    return 1 if counts.mismatches else 0


def _sqlite_ready(url: str, location_given: bool) -> bool:
    """The server's SQLite file, found; or created (private) where we were told, and said so.

    Run from the wrong directory with no --config/--data-dir/--storage, this
    once created an empty ./xep207-data and reported success."""
    from xep207.startup import DATA_DIR_MODE, StartupError, create_private
    from xep207.storage.sqlite import _path_from_url

    path = os.path.abspath(_path_from_url(url)[0])
    if os.path.exists(path):
        return True
    if not location_given:
        print(f"xep207ctl: no server database at {path} (created nothing); run this where the server "
              "runs, or pass the server's --config, --data-dir or --storage", file=sys.stderr)
        return False
    try:
        os.makedirs(os.path.dirname(path), mode=DATA_DIR_MODE, exist_ok=True)
        create_private(path)
    except (OSError, StartupError) as exc:
        print(f"xep207ctl: cannot create the database {path}: {exc}", file=sys.stderr)
        return False
    print(f"xep207ctl: created a new database at {path}", file=sys.stderr)
    return True


async def run(options) -> int:
    command = options.subCommand
    if command == "migrate":
        return await migrate(options)
    url = options["storage"]
    if url.startswith("sqlite:") and not _sqlite_ready(url, getattr(options, "location_given", True)):
        return 1
    storage = open_storage(url)
    await defer.maybeDeferred(storage.start)
    try:
        domain = options["domain"]
        # The same node kinds as the server: deleting an account deletes its
        # one-to-one conversations too.
        engine = PubSubEngine(storage, pep_domains=[domain], kinds=standard_kinds(
            options["pubsub-domain"] or f"pubsub.{domain}", options["chat-domain"] or f"chat.{domain}"))
        if command == "list":
            for jid in await storage.list_accounts(options["domain"]):
                print(jid)
            return 0
        jid = options.subOptions["jid"]
        if "@" not in jid:
            jid = f"{jid}@{options['domain']}"
        if command == "adduser":
            created = await accounts.create_account(engine, jid,
                                                    _read_password())
            print(f"created {created}")
        elif command == "passwd":
            await accounts.change_password(engine, jid, _read_password())
            print(f"changed the password of {jid}")
        elif command == "deluser":
            await accounts.delete_account(engine, jid)
            print(f"deleted {jid}")
        return 0
    except accounts.AccountError as exc:
        print(f"xep207ctl: {exc}", file=sys.stderr)
        return 1
    finally:
        await defer.maybeDeferred(storage.stop)


def main(argv=None) -> None:
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as exc:
        print(f"{options}\nxep207ctl: {exc}", file=sys.stderr)
        sys.exit(2)

    def react_main(reactor):
        return defer.ensureDeferred(run(options)).addCallback(lambda code: sys.exit(code) if code else None)

    task.react(react_main)


if __name__ == "__main__":
    main()
