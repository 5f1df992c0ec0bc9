"""``sqlite:///path`` — the embedded default.

One connection, used from one dedicated thread (``adbapi`` with a pool of one),
so the reactor never blocks and writes are serialized without lock errors.
WAL journaling with ``synchronous=NORMAL``: a transaction is durable once its
commit returns, across a process kill (power loss may lose the last commits;
set ``?synchronous=FULL`` in the URL to trade speed for that too).
"""

from __future__ import annotations

import json
import sqlite3
from urllib.parse import parse_qs, urlsplit

from twisted.enterprise import adbapi
from zope.interface import implementer

from xep207.storage.interface import AccountExists, IStorage, NodeExists
from xep207.storage.records import (
    NONE,
    Account,
    Affiliation,
    Item,
    ItemPage,
    Node,
    NodeConfig,
    Subscription,
    bare,
)

# Each entry migrates the schema from version i to i + 1. Append, never edit.
MIGRATIONS = [
    """
    CREATE TABLE nodes (
        service TEXT NOT NULL, node TEXT NOT NULL, config TEXT NOT NULL,
        creator TEXT NOT NULL, created REAL NOT NULL,
        PRIMARY KEY (service, node));
    CREATE TABLE affiliations (
        service TEXT NOT NULL, node TEXT NOT NULL, entity TEXT NOT NULL,
        affiliation TEXT NOT NULL,
        PRIMARY KEY (service, node, entity));
    CREATE INDEX affiliations_entity ON affiliations (entity);
    CREATE TABLE subscriptions (
        service TEXT NOT NULL, node TEXT NOT NULL, subscriber TEXT NOT NULL,
        subscriber_bare TEXT NOT NULL, subid TEXT NOT NULL, state TEXT NOT NULL,
        options TEXT NOT NULL, via TEXT NOT NULL,
        PRIMARY KEY (service, node, subscriber));
    CREATE INDEX subscriptions_bare ON subscriptions (subscriber_bare);
    CREATE TABLE items (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        service TEXT NOT NULL, node TEXT NOT NULL, item_id TEXT NOT NULL,
        payload TEXT NOT NULL, publisher TEXT NOT NULL, published REAL NOT NULL,
        UNIQUE (service, node, item_id));
    CREATE INDEX items_node_seq ON items (service, node, seq);
    CREATE TABLE accounts (
        jid TEXT PRIMARY KEY, user TEXT NOT NULL, domain TEXT NOT NULL,
        salt BLOB NOT NULL, iterations INTEGER NOT NULL,
        stored_key_sha1 BLOB NOT NULL, server_key_sha1 BLOB NOT NULL,
        stored_key_sha256 BLOB NOT NULL, server_key_sha256 BLOB NOT NULL,
        created REAL NOT NULL);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def _path_from_url(url: str) -> tuple[str, dict]:
    """SQLAlchemy's convention: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``."""
    parts = urlsplit(url)
    if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
        raise ValueError(f"not a sqlite URL: {url!r} (use sqlite:///relative or sqlite:////absolute)")
    return parts.path[1:], {k: v[-1] for k, v in parse_qs(parts.query).items()}


def _item(row) -> Item:
    seq, item_id, payload, publisher, published = row
    return Item(item_id, payload, publisher, published, seq)


def _subscription(row) -> Subscription:
    service, node, subscriber, subid, state, options, via = row
    return Subscription(service, node, subscriber, state, subid, json.loads(options), via)


_ITEM_COLUMNS = "seq, item_id, payload, publisher, published"
_SUBSCRIPTION_COLUMNS = "service, node, subscriber, subid, state, options, via"


@implementer(IStorage)
class SQLiteStorage:
    def __init__(self, url: str):
        self.url = url
        self.path, params = _path_from_url(url)
        synchronous = params.get("synchronous", "NORMAL").upper()
        if synchronous not in ("NORMAL", "FULL", "OFF"):
            raise ValueError(f"synchronous must be NORMAL, FULL or OFF, not {synchronous!r}")
        self._synchronous = synchronous
        self._pool = None

    def _open(self, connection):
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self._synchronous}")
        connection.execute("PRAGMA foreign_keys=ON")

    def start(self):
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            self.path,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=self._open,
        )
        return self._pool.runInteraction(self._migrate)

    def stop(self):
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @staticmethod
    def _migrate(cursor):
        cursor.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = cursor.execute("SELECT version FROM schema_version").fetchone()
        version = row[0] if row else 0
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {version} is newer than this xep207 ({SCHEMA_VERSION})"
            )
        for script in MIGRATIONS[version:]:
            for statement in script.split(";"):
                if statement.strip():
                    cursor.execute(statement)
        cursor.execute("DELETE FROM schema_version")
        cursor.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    def _query(self, sql, args=()):
        return self._pool.runQuery(sql, args)

    def _run(self, interaction, *args):
        return self._pool.runInteraction(interaction, *args)

    # Nodes

    def create_node(self, node):
        def create(cursor):
            try:
                cursor.execute(
                    "INSERT INTO nodes VALUES (?, ?, ?, ?, ?)",
                    (node.service, node.node_id, json.dumps(node.config.to_dict()),
                     node.creator, node.created),
                )
            except sqlite3.IntegrityError:
                raise NodeExists((node.service, node.node_id))

        return self._run(create)

    def get_node(self, service, node_id):
        def found(rows):
            if not rows:
                return None
            config, creator, created = rows[0]
            return Node(service, node_id, NodeConfig.from_dict(json.loads(config)), creator, created)

        return self._query(
            "SELECT config, creator, created FROM nodes WHERE service = ? AND node = ?",
            (service, node_id),
        ).addCallback(found)

    def list_nodes(self, service):
        return self._query(
            "SELECT node FROM nodes WHERE service = ? ORDER BY node", (service,)
        ).addCallback(lambda rows: [r[0] for r in rows])

    def set_node_config(self, service, node_id, config):
        return self._pool.runOperation(
            "UPDATE nodes SET config = ? WHERE service = ? AND node = ?",
            (json.dumps(config.to_dict()), service, node_id),
        )

    def delete_node(self, service, node_id):
        return self._run(self._delete_node, service, node_id)

    @staticmethod
    def _delete_node(cursor, service, node_id):
        for table in ("nodes", "affiliations", "subscriptions", "items"):
            cursor.execute(f"DELETE FROM {table} WHERE service = ? AND node = ?", (service, node_id))

    # Affiliations

    def get_affiliations(self, service, node_id):
        return self._query(
            "SELECT entity, affiliation FROM affiliations WHERE service = ? AND node = ?",
            (service, node_id),
        ).addCallback(dict)

    def set_affiliation(self, service, node_id, entity, affiliation):
        if affiliation == NONE:
            return self._pool.runOperation(
                "DELETE FROM affiliations WHERE service = ? AND node = ? AND entity = ?",
                (service, node_id, entity),
            )
        return self._pool.runOperation(
            "INSERT OR REPLACE INTO affiliations VALUES (?, ?, ?, ?)",
            (service, node_id, entity, affiliation),
        )

    def get_entity_affiliations(self, entity, service=None):
        sql = "SELECT service, node, affiliation FROM affiliations WHERE entity = ?"
        args = [entity]
        if service is not None:
            sql += " AND service = ?"
            args.append(service)
        return self._query(sql + " ORDER BY service, node", args).addCallback(
            lambda rows: [Affiliation(s, n, entity, a) for s, n, a in rows]
        )

    # Subscriptions

    def get_subscriptions(self, service, node_id):
        return self._query(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE service = ? AND node = ?",
            (service, node_id),
        ).addCallback(lambda rows: [_subscription(r) for r in rows])

    def get_subscription(self, service, node_id, subscriber):
        return self._query(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions"
            " WHERE service = ? AND node = ? AND subscriber = ?",
            (service, node_id, subscriber),
        ).addCallback(lambda rows: _subscription(rows[0]) if rows else None)

    def set_subscription(self, subscription):
        s = subscription
        return self._pool.runOperation(
            "INSERT OR REPLACE INTO subscriptions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (s.service, s.node_id, s.subscriber, bare(s.subscriber), s.subid, s.state,
             json.dumps(dict(s.options)), s.via),
        )

    def remove_subscription(self, service, node_id, subscriber):
        return self._pool.runOperation(
            "DELETE FROM subscriptions WHERE service = ? AND node = ? AND subscriber = ?",
            (service, node_id, subscriber),
        )

    def get_entity_subscriptions(self, entity, service=None, node_id=None):
        sql = f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE subscriber_bare = ?"
        args = [entity]
        if service is not None:
            sql += " AND service = ?"
            args.append(service)
        if node_id is not None:
            sql += " AND node = ?"
            args.append(node_id)
        return self._query(sql + " ORDER BY service, node, subscriber", args).addCallback(
            lambda rows: [_subscription(r) for r in rows]
        )

    # Items

    def put_item(self, service, node_id, item, max_items):
        def put(cursor):
            cursor.execute(
                "DELETE FROM items WHERE service = ? AND node = ? AND item_id = ?",
                (service, node_id, item.item_id),
            )
            cursor.execute(
                "INSERT INTO items (service, node, item_id, payload, publisher, published)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (service, node_id, item.item_id, item.payload, item.publisher, item.published),
            )
            seq = cursor.lastrowid
            if max_items is not None:
                cursor.execute(
                    "DELETE FROM items WHERE service = ? AND node = ? AND seq <= ("
                    " SELECT seq FROM items WHERE service = ? AND node = ?"
                    " ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (service, node_id, service, node_id, max_items),
                )
            return Item(item.item_id, item.payload, item.publisher, item.published, seq)

        return self._run(put)

    def get_items(self, service, node_id, item_ids):
        item_ids = list(item_ids)
        if not item_ids:
            return self._query("SELECT 1 WHERE 0").addCallback(lambda _: [])
        marks = ", ".join("?" * len(item_ids))
        return self._query(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE service = ? AND node = ?"
            f" AND item_id IN ({marks}) ORDER BY seq",
            [service, node_id, *item_ids],
        ).addCallback(lambda rows: [_item(r) for r in rows])

    def page_items(self, service, node_id, limit=None, after=None, before=None):
        def page(cursor):
            where = "service = ? AND node = ?"
            key = (service, node_id)
            count = cursor.execute(f"SELECT COUNT(*) FROM items WHERE {where}", key).fetchone()[0]
            anchor = after if after is not None else before
            anchor_seq = None
            if anchor:
                row = cursor.execute(
                    f"SELECT seq FROM items WHERE {where} AND item_id = ?", (*key, anchor)
                ).fetchone()
                if row is None:
                    return ItemPage((), count)
                anchor_seq = row[0]
            lim = -1 if limit is None else limit
            if after is not None:
                rows = cursor.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM items WHERE {where} AND seq > ?"
                    " ORDER BY seq LIMIT ?", (*key, anchor_seq, lim)).fetchall()
            else:
                bound = "AND seq < ?" if anchor_seq is not None else ""
                args = (*key, anchor_seq) if anchor_seq is not None else key
                rows = cursor.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM items WHERE {where} {bound}"
                    " ORDER BY seq DESC LIMIT ?", (*args, lim)).fetchall()
                rows.reverse()
            items = tuple(_item(r) for r in rows)
            first_index = 0
            if items:
                first_index = cursor.execute(
                    f"SELECT COUNT(*) FROM items WHERE {where} AND seq < ?", (*key, items[0].seq)
                ).fetchone()[0]
            return ItemPage(items, count, first_index)

        return self._run(page)

    def delete_items(self, service, node_id, item_ids):
        def delete(cursor):
            deleted = []
            for item_id in item_ids:
                cursor.execute(
                    "DELETE FROM items WHERE service = ? AND node = ? AND item_id = ?",
                    (service, node_id, item_id),
                )
                if cursor.rowcount:
                    deleted.append(item_id)
            return deleted

        return self._run(delete)

    def purge_items(self, service, node_id):
        return self._pool.runOperation(
            "DELETE FROM items WHERE service = ? AND node = ?", (service, node_id)
        )

    # Accounts

    def create_account(self, account):
        def create(cursor):
            try:
                cursor.execute(
                    "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (account.jid, account.user, account.domain, account.salt,
                     account.iterations, account.stored_key_sha1, account.server_key_sha1,
                     account.stored_key_sha256, account.server_key_sha256, account.created),
                )
            except sqlite3.IntegrityError:
                raise AccountExists(account.jid)

        return self._run(create)

    def get_account(self, jid):
        return self._query(
            "SELECT user, domain, salt, iterations, stored_key_sha1, server_key_sha1,"
            " stored_key_sha256, server_key_sha256, created FROM accounts WHERE jid = ?",
            (jid,),
        ).addCallback(lambda rows: Account(*rows[0]) if rows else None)

    def update_account(self, account):
        return self._pool.runOperation(
            "UPDATE accounts SET salt = ?, iterations = ?, stored_key_sha1 = ?,"
            " server_key_sha1 = ?, stored_key_sha256 = ?, server_key_sha256 = ? WHERE jid = ?",
            (account.salt, account.iterations, account.stored_key_sha1, account.server_key_sha1,
             account.stored_key_sha256, account.server_key_sha256, account.jid),
        )

    def delete_account(self, jid):
        def delete(cursor):
            cursor.execute("DELETE FROM accounts WHERE jid = ?", (jid,))
            for table in ("nodes", "affiliations", "subscriptions", "items"):
                cursor.execute(f"DELETE FROM {table} WHERE service = ?", (jid,))
            cursor.execute("DELETE FROM subscriptions WHERE subscriber_bare = ?", (jid,))
            cursor.execute("DELETE FROM affiliations WHERE entity = ?", (jid,))

        return self._run(delete)

    def list_accounts(self, domain=None):
        if domain is None:
            d = self._query("SELECT jid FROM accounts ORDER BY jid")
        else:
            d = self._query("SELECT jid FROM accounts WHERE domain = ? ORDER BY jid", (domain,))
        return d.addCallback(lambda rows: [r[0] for r in rows])
