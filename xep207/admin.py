"""``xep207ctl``: manage accounts in the same storage the server uses.

    xep207ctl [--config FILE] [--storage URL] [--data-dir DIR] [--domain D] COMMAND

When the server runs, every command goes through its admin socket
(``DATA-DIR/admin.sock``, ``xep207.server.admin_channel``), so it takes effect
at once (sessions end, contacts are told); otherwise storage is changed
directly. A server that holds the data dir but does not answer is never
bypassed.

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


class SessionsCommand(usage.Options):
    synopsis = "sessions [JID]"

    def parseArgs(self, jid: str | None = None) -> None:
        self["jid"] = jid


class Kick(_JidCommand):
    synopsis = "kick JID (an account, or one full JID)"


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
        ["sessions", None, SessionsCommand, "List the connected sessions (of one account). Server running only."],
        ["kick", None, Kick, "End an account's sessions, or one session. Server running only."],
        ["migrate", None, Migrate, "Copy all data from one storage URL to another (idempotent)."],
    ]

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("name a command: adduser, deluser, passwd, list, sessions or kick")
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
    channel = await _connect_to_server(options["data-dir"])
    if channel is not None:
        try:
            return await _through_server(channel, command, options.subOptions)
        finally:
            channel.transport.loseConnection()
    if _server_running(options["data-dir"]):
        print(f"xep207ctl: the server using {os.path.abspath(options['data-dir'])} is running but its "
              f"admin socket does not answer; nothing was changed", file=sys.stderr)
        return 1
    if command in ("sessions", "kick"):
        print(f"xep207ctl: {command}: no server is running on {os.path.abspath(options['data-dir'])}",
              file=sys.stderr)
        return 1
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


async def _connect_to_server(data_dir: str):
    """An AMP connection to the running server's admin socket, or None when
    no server listens there (then storage is changed directly)."""
    from twisted.internet import endpoints, reactor
    from twisted.internet.error import ConnectError
    from twisted.protocols import amp

    from xep207.server.admin_channel import socket_path

    path = socket_path(data_dir)
    if not os.path.exists(path):
        return None
    endpoint = endpoints.UNIXClientEndpoint(reactor, path, timeout=10)
    try:
        return await endpoints.connectProtocol(endpoint, amp.AMP())
    except (ConnectError, OSError):
        return None  # a socket left by a server that is gone


def _server_running(data_dir: str) -> bool:
    """Whether a server holds the data dir's lock (see xep207.startup.ExclusiveLock)."""
    import fcntl

    try:
        descriptor = os.open(os.path.join(data_dir, "xep207.lock"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(descriptor)


async def _through_server(channel, command: str, sub) -> int:
    """The command, done by the running server: contacts are told, sessions end."""
    from twisted.protocols import amp

    from xep207.server import admin_channel as ac

    try:
        if command == "adduser":
            created = await channel.callRemote(ac.AddUser, jid=sub["jid"], password=_read_password())
            print(f"created {created['jid']}")
        elif command == "passwd":
            await channel.callRemote(ac.Passwd, jid=sub["jid"], password=_read_password())
            print(f"changed the password of {sub['jid']} (its sessions were ended)")
        elif command == "deluser":
            await channel.callRemote(ac.DelUser, jid=sub["jid"])
            print(f"deleted {sub['jid']}")
        elif command == "kick":
            ended = await channel.callRemote(ac.Kick, jid=sub["jid"])
            print(f"ended {ended['ended']} sessions of {sub['jid']}")
        elif command == "list":
            after = None
            while True:
                jids = (await channel.callRemote(ac.ListUsers, after=after))["jids"]
                if not jids:
                    break
                for jid in jids:
                    print(jid)
                after = jids[-1]
        elif command == "sessions":
            after = None
            while True:
                rows = (await channel.callRemote(ac.Sessions, jid=sub["jid"], after=after))["sessions"]
                if not rows:
                    break
                for row in rows:
                    print(f"{row['jid']}\t{row['address']}\t{'available' if row['available'] else 'connected'}")
                after = rows[-1]["jid"]
        return 0
    except accounts.AccountError as exc:
        print(f"xep207ctl: {exc}", file=sys.stderr)
        return 1
    except amp.RemoteAmpError as exc:
        print(f"xep207ctl: the server failed: {exc}", file=sys.stderr)
        return 1


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
