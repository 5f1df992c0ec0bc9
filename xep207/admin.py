"""``xep207ctl``: manage accounts in the same storage the server uses.

    xep207ctl [--config FILE] [--storage URL] [--data-dir DIR] [--domain D] COMMAND

Passwords are read from a prompt (twice) on a terminal, or from the first line
of standard input otherwise — never from the command line.
"""

from __future__ import annotations

import getpass
import os
import sys

from twisted.internet import defer, task
from twisted.python import usage

from xep207.pubsub.engine import PubSubEngine
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
    def parseArgs(self, jid):
        self["jid"] = jid


class AddUser(_JidCommand):
    synopsis = "adduser JID"


class DelUser(_JidCommand):
    synopsis = "deluser JID"


class Passwd(_JidCommand):
    synopsis = "passwd JID"


class ListUsers(usage.Options):
    synopsis = "list"


class Options(ServerOptions):
    synopsis = "[--config FILE] [--storage URL] [--data-dir DIR] [--domain D] COMMAND"
    subCommands = [
        ["adduser", None, AddUser, "Create an account (password from a prompt or stdin)."],
        ["deluser", None, DelUser, "Delete an account with its nodes and subscriptions."],
        ["passwd", None, Passwd, "Change an account's password."],
        ["list", None, ListUsers, "List the accounts of --domain."],
    ]

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("name a command: adduser, deluser, passwd or list")
        sub, self.subCommand = self.subCommand, None
        try:
            super().postOptions()
        finally:
            self.subCommand = sub


async def run(options) -> int:
    command = options.subCommand
    url = options["storage"]
    if url.startswith("sqlite:"):
        os.makedirs(options["data-dir"], exist_ok=True)
    storage = open_storage(url)
    await defer.maybeDeferred(storage.start)
    try:
        engine = PubSubEngine(storage, pep_domains=[options["domain"]])
        if command == "list":
            for jid in await storage.list_accounts(options["domain"]):
                print(jid)
            return 0
        jid = options.subOptions["jid"]
        if "@" not in jid:
            jid = f"{jid}@{options['domain']}"
        if command == "adduser":
            created = await accounts.create_account(storage, engine.default_node_config, jid,
                                                    _read_password())
            print(f"created {created}")
        elif command == "passwd":
            await accounts.change_password(storage, jid, _read_password())
            print(f"changed the password of {jid}")
        elif command == "deluser":
            await accounts.delete_account(storage, jid)
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
