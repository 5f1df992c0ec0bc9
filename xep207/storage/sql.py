"""The SQL both bundled database backends share (SQLite and PostgreSQL).

Statements are written once, with ``?`` placeholders and the upsert and
``RETURNING`` syntax both databases accept; a backend supplies how to run a
transaction off the reactor thread (``_transact``), its placeholder style, its
schema migrations and its integrity-error class.
"""

from __future__ import annotations

import json
import queue
from typing import Callable

from twisted.internet import defer
from twisted.python import log
from twisted.python.failure import Failure

from xep207.storage.interface import AccountExists, NodeExists
from xep207.storage.records import (
    NONE,
    PENDING,
    SUBSCRIBED,
    Account,
    Affiliation,
    Item,
    ItemPage,
    Node,
    NodeConfig,
    Subscription,
    bare,
)

TABLES = ("nodes", "affiliations", "subscriptions", "items")
_ITEM_COLUMNS = "seq, item_id, payload, publisher, published"
_SUBSCRIPTION_COLUMNS = "service, node, subscriber, subid, state, options, via"
_ACCOUNT_COLUMNS = ("user_name, domain, salt, iterations, stored_key_sha1, server_key_sha1,"
                    " stored_key_sha256, server_key_sha256, created")


def _item(row) -> Item:
    seq, item_id, payload, publisher, published = row
    return Item(item_id, payload, publisher, published, seq)


def _subscription(row) -> Subscription:
    service, node, subscriber, subid, state, options, via = row
    return Subscription(service, node, subscriber, state, subid, json.loads(options), via)


def _account(row) -> Account:
    user, domain, salt, iterations, sk1, svk1, sk256, svk256, created = row
    return Account(user, domain, bytes(salt), iterations, bytes(sk1), bytes(svk1), bytes(sk256),
                   bytes(svk256), created)


def insert_items(rows: int) -> str:
    """An insert of ``rows`` new items that skips an id the node has."""
    return ("INSERT INTO items (service, node, item_id, payload, publisher, published) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows) + " ON CONFLICT (service, node, item_id) DO NOTHING")


class SQLStorage:
    """Every ``IStorage`` method, as SQL run through ``self._transact``."""

    placeholder = "?"
    integrity_errors: tuple = ()
    lock_row = ""  # what locks a row read for a change in the same transaction ("FOR UPDATE")

    MAX_BATCH = 256  # operations a writer thread takes for one transaction (at least)
    _jobs: queue.SimpleQueue
    # Operations issued and answered, both counted on the reactor thread.
    _issued = 0
    _answered = 0

    _stopped: defer.Deferred | None = None  # fires once the writer thread ended

    def _after_stop(self, start):
        """None, or (a stop still under way) ``start()`` once the old writer
        thread ended: it reads the queue and the stop Deferred off ``self``,
        which a start meanwhile would replace (its operations never answered,
        and counted as waiting for good; its stop never fired)."""
        stopping = self._stopped
        if stopping is None or stopping.called:
            return None
        ended: defer.Deferred = defer.Deferred()

        def passed_on(result):
            ended.callback(None)
            return result

        stopping.addBoth(passed_on)
        return ended.addCallback(lambda _: start())

    def _transact(self, function, *args):
        """Run ``function(cursor, *args)`` in one transaction; a Deferred."""
        raise NotImplementedError

    def _next_batch(self) -> list | None:
        """The writer thread's next batch (``drain_batch``)."""
        return drain_batch(self._jobs, self.MAX_BATCH)

    def _deliver(self, results) -> None:
        """In the reactor thread: each operation's outcome (``deliver_results``)."""
        self._answered += len(results)
        try:
            deliver_results(results)
        finally:
            if self.backlogged:  # (after the answers: what they issued in turn counts too)
                self._maybe_caught_up()

    def keeping_up(self) -> bool:
        """Whether fewer than two batches' worth of operations wait for their
        answers. While more do, one-to-one messages wait for their commit
        again (``engine.publish(early=…)``): a sender that waits for its
        messages to arrive is then held back by the store, instead of
        filling the writer's queue faster than it empties."""
        return self.waiting() < 2 * self.MAX_BATCH

    # Backpressure (xep207/server/backpressure.py): once HIGH_WATER batches'
    # worth of operations wait for their answers the storage tells its
    # watchers it fell behind, and once LOW_WATER batches' worth or fewer
    # do, that it caught up; in between nothing changes (hysteresis: a queue
    # hovering at one mark does not flap). HIGH_WATER is above keeping_up's
    # two batches, so early delivery stops first (the gentler brake, for
    # senders that wait for delivery); LOW_WATER leaves the writer a batch to
    # commit while the clients read again refill its queue. Counted in
    # batches: a backend's MAX_BATCH is what one transaction takes.
    HIGH_WATER = 4
    LOW_WATER = 1
    backlogged = False  # between the marks: as the last one crossed said
    _backlog_watchers: tuple[Callable[[bool], object], ...] = ()

    def backlog_marks(self) -> tuple[int, int]:
        """(high, low): the operations waiting that make the storage behind,
        and those it must be down to again to have caught up."""
        return self.HIGH_WATER * self.MAX_BATCH, self.LOW_WATER * self.MAX_BATCH

    def waiting(self) -> int:
        """Operations issued and not answered yet (queued, or in a batch not committed)."""
        return self._issued - self._answered

    def watch_backlog(self, watcher: Callable[[bool], object]) -> None:
        """Have ``watcher(True)`` called, on the reactor thread, when the storage
        falls behind (an operation issued past the high-water mark), and
        ``watcher(False)`` when it caught up (answers down to the low-water mark)."""
        self._backlog_watchers += (watcher,)

    def _count_issued(self) -> None:
        """One operation issued (a backend's ``_transact``): past the high-water mark, behind."""
        self._issued += 1
        if not self.backlogged and self.waiting() >= self.HIGH_WATER * self.MAX_BATCH:
            self._tell_backlog(True)

    def _maybe_caught_up(self) -> None:
        """After answers: down to the low-water mark, caught up."""
        if self.waiting() <= self.LOW_WATER * self.MAX_BATCH:
            self._tell_backlog(False)

    def _tell_backlog(self, backlogged: bool) -> None:
        self.backlogged = backlogged
        for watcher in self._backlog_watchers:
            try:
                watcher(backlogged)
            except Exception:  # (a watcher's bug must not fail the operation being issued)
                log.err(None, "a storage backlog watcher failed")

    def _sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    def _execute(self, cursor, statement: str, args=()):
        cursor.execute(self._sql(statement), tuple(args))
        return cursor

    def _fetch(self, statement: str, args=(), convert=list):
        def fetch(cursor):
            return convert(self._execute(cursor, statement, args).fetchall())

        return self._transact(fetch)

    # Item counts per node, where a backend can keep them (one writer): they
    # decide whether an insert must trim the node to ``max_items``.

    def _trim_needed(self, cursor, key: tuple[str, str], max_items: int, added: int) -> bool:
        """Whether a node may now hold more than ``max_items`` (after inserts;
        ``added``: how many were new items, not replacements). Without counts: always."""
        return True

    def _items_changed(self, key: tuple[str, str] | None) -> None:
        """Items of a node (None: of any node) went, by other means than a trim."""

    def _run(self, statement: str, args=()):
        return self._transact(lambda cursor: self._execute(cursor, statement, args) and None)

    # Nodes

    def create_node(self, node):
        def create(cursor):
            try:
                self._execute(cursor, "INSERT INTO nodes VALUES (?, ?, ?, ?, ?)",
                              (node.service, node.node_id, json.dumps(node.config.to_dict()),
                               node.creator, node.created))
            except self.integrity_errors:
                raise NodeExists((node.service, node.node_id))

        return self._transact(create)

    def get_node(self, service, node_id):
        def found(rows):
            if not rows:
                return None
            config, creator, created = rows[0]
            return Node(service, node_id, NodeConfig.from_dict(json.loads(config)), creator, created)

        return self._fetch("SELECT config, creator, created FROM nodes WHERE service = ? AND node = ?",
                           (service, node_id), found)

    # A node with its affiliations and subscriptions, in one statement: what
    # every publish needs, one round trip where there is no cache (PostgreSQL).
    _NODE_STATE = (
        "SELECT 'n', config, creator, CAST(NULL AS TEXT), CAST(NULL AS TEXT), CAST(NULL AS TEXT), created"
        " FROM nodes WHERE service = ? AND node = ?"
        " UNION ALL SELECT 'a', entity, affiliation, NULL, NULL, NULL, NULL"
        " FROM affiliations WHERE service = ? AND node = ?"
        " UNION ALL SELECT 's', subscriber, subid, state, options, via, NULL"
        " FROM subscriptions WHERE service = ? AND node = ?")

    def get_node_state(self, service, node_id):
        """``(node or None, affiliations, subscriptions)`` read together (not
        part of ``IStorage``: the engine uses it where a backend has it)."""
        def rows_to_state(rows):
            node, affiliations, subscriptions = None, {}, []
            for tag, a, b, c, d, e, created in rows:
                if tag == "n":
                    node = Node(service, node_id, NodeConfig.from_dict(json.loads(a)), b, created)
                elif tag == "a":
                    affiliations[a] = b
                else:
                    subscriptions.append(_subscription((service, node_id, a, b, c, d, e)))
            if node is None:
                return None, {}, []
            return node, affiliations, subscriptions

        key = (service, node_id)
        return self._fetch(self._NODE_STATE, key * 3, rows_to_state)

    def list_nodes(self, service):
        return self._fetch("SELECT node FROM nodes WHERE service = ? ORDER BY node", (service,),
                           lambda rows: [r[0] for r in rows])

    def list_all_nodes(self):
        return self._fetch("SELECT service, node FROM nodes ORDER BY service, node", (),
                           lambda rows: [(s, n) for s, n in rows])

    def set_node_config(self, service, node_id, config):
        return self._run("UPDATE nodes SET config = ? WHERE service = ? AND node = ?",
                         (json.dumps(config.to_dict()), service, node_id))

    def delete_node(self, service, node_id):
        def delete(cursor):
            self._items_changed((service, node_id))
            for table in TABLES:
                self._execute(cursor, f"DELETE FROM {table} WHERE service = ? AND node = ?", (service, node_id))

        return self._transact(delete)

    # Affiliations

    def get_affiliations(self, service, node_id):
        return self._fetch("SELECT entity, affiliation FROM affiliations WHERE service = ? AND node = ?",
                           (service, node_id), dict)

    def set_affiliation(self, service, node_id, entity, affiliation):
        if affiliation == NONE:
            return self._run("DELETE FROM affiliations WHERE service = ? AND node = ? AND entity = ?",
                             (service, node_id, entity))
        return self._run(
            "INSERT INTO affiliations VALUES (?, ?, ?, ?) ON CONFLICT (service, node, entity)"
            " DO UPDATE SET affiliation = excluded.affiliation", (service, node_id, entity, affiliation))

    def get_entity_affiliations(self, entity, service=None):
        statement = "SELECT service, node, affiliation FROM affiliations WHERE entity = ?"
        args = [entity]
        if service is not None:
            statement += " AND service = ?"
            args.append(service)
        return self._fetch(statement + " ORDER BY service, node", args,
                           lambda rows: [Affiliation(s, n, entity, a) for s, n, a in rows])

    # Subscriptions

    def get_subscriptions(self, service, node_id):
        return self._fetch(f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE service = ? AND node = ?",
                           (service, node_id), lambda rows: [_subscription(r) for r in rows])

    def get_subscription(self, service, node_id, subscriber):
        return self._fetch(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions"
            " WHERE service = ? AND node = ? AND subscriber = ?", (service, node_id, subscriber),
            lambda rows: _subscription(rows[0]) if rows else None)

    def set_subscription(self, subscription):
        s = subscription
        return self._run(
            "INSERT INTO subscriptions VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (service, node, subscriber) DO UPDATE SET subid = excluded.subid,"
            " state = excluded.state, options = excluded.options, via = excluded.via",
            (s.service, s.node_id, s.subscriber, bare(s.subscriber), s.subid, s.state,
             json.dumps(dict(s.options)), s.via))

    def set_subscription_option(self, service, node_id, subscriber, option, value, only_if_unset=False):
        """Set one option of a subscription (remove it: ``value`` None) and keep
        the others, in one transaction with the row locked: two writers of
        different options (or processes sharing the database) lose nothing.
        ``only_if_unset``: keep a value already there. Not part of ``IStorage``:
        the engine uses it where a backend has it. Fires with the subscription
        as it is now, or None when there is none."""
        def change(cursor):
            row = self._execute(cursor, f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions"
                                        f" WHERE service = ? AND node = ? AND subscriber = ?{self.lock_row}",
                                (service, node_id, subscriber)).fetchone()
            if row is None:
                return None
            current = _subscription(row)
            if only_if_unset and current.options.get(option):
                return current
            options = {k: v for k, v in current.options.items() if k != option}
            if value is not None:
                options[option] = value
            self._execute(cursor, "UPDATE subscriptions SET options = ?"
                                  " WHERE service = ? AND node = ? AND subscriber = ?",
                          (json.dumps(options), service, node_id, subscriber))
            return current.replace(options=options)

        return self._transact(change)

    def answer_pending_subscription(self, service, node_id, subscriber, allow):
        """An owner's answer to a pending subscription: approved (state
        ``subscribed``) or, ``allow`` false, removed, in one transaction with the
        row locked, so that of two answers at once (two doors, two processes)
        exactly one finds it pending. Not part of ``IStorage``: the engine uses
        it where a backend has it. Fires with the subscription as answered
        (state ``subscribed`` or ``none``), or None when none was pending."""
        key = (service, node_id, subscriber)

        def answer(cursor):
            row = self._execute(cursor, f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions"
                                        f" WHERE service = ? AND node = ? AND subscriber = ?{self.lock_row}",
                                key).fetchone()
            if row is None or row[4] != PENDING:
                return None
            if allow:
                self._execute(cursor, "UPDATE subscriptions SET state = ?"
                                      " WHERE service = ? AND node = ? AND subscriber = ?", (SUBSCRIBED, *key))
                return _subscription(row).replace(state=SUBSCRIBED)
            self._execute(cursor, "DELETE FROM subscriptions WHERE service = ? AND node = ? AND subscriber = ?", key)
            return _subscription(row).replace(state=NONE)

        return self._transact(answer)

    def remove_subscription(self, service, node_id, subscriber):
        return self._run("DELETE FROM subscriptions WHERE service = ? AND node = ? AND subscriber = ?",
                         (service, node_id, subscriber))

    def get_entity_subscriptions(self, entity, service=None, node_id=None):
        statement = f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE subscriber_bare = ?"
        args = [entity]
        if service is not None:
            statement += " AND service = ?"
            args.append(service)
        if node_id is not None:
            statement += " AND node = ?"
            args.append(node_id)
        return self._fetch(statement + " ORDER BY service, node, subscriber", args,
                           lambda rows: [_subscription(r) for r in rows])

    def count_subscriptions_with_option(self, service, option):
        """(subscriptions, distinct subscribers) on ``service`` whose options
        carry the key ``option`` — for metrics, not part of ``IStorage``."""
        pattern = "%" + json.dumps(option) + "%"
        return self._fetch("SELECT COUNT(*), COUNT(DISTINCT subscriber_bare) FROM subscriptions"
                           " WHERE service = ? AND options LIKE ?", (service, pattern),
                           lambda rows: (rows[0][0], rows[0][1]))

    # Items

    def put_item(self, service, node_id, item, max_items):
        return self._transact(ItemPut(self, service, node_id, item, max_items))

    _INSERT_RETURNING = insert_items(1) + " RETURNING seq"

    def _trim(self, cursor, service: str, node_id: str, max_items: int) -> None:
        """Keep the newest ``max_items`` items of a node."""
        self._execute(cursor, "DELETE FROM items WHERE service = ? AND node = ? AND seq <= ("
                              " SELECT seq FROM items WHERE service = ? AND node = ?"
                              " ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                      (service, node_id, service, node_id, max_items))

    def _insert_new_item(self, cursor, values: tuple):
        """The new row's ``(seq,)``; None when the id exists."""
        return self._execute(cursor, self._INSERT_RETURNING, values).fetchone()

    def get_items(self, service, node_id, item_ids):
        item_ids = list(item_ids)

        def get(cursor):
            if not item_ids:
                return []
            marks = ", ".join("?" * len(item_ids))
            rows = self._execute(cursor, f"SELECT {_ITEM_COLUMNS} FROM items WHERE service = ? AND node = ?"
                                         f" AND item_id IN ({marks}) ORDER BY seq",
                                 [service, node_id, *item_ids]).fetchall()
            return [_item(r) for r in rows]

        return self._transact(get)

    def page_items(self, service, node_id, limit=None, after=None, before=None):
        def page(cursor):
            where = "service = ? AND node = ?"
            key = (service, node_id)
            count = self._execute(cursor, f"SELECT COUNT(*) FROM items WHERE {where}", key).fetchone()[0]
            anchor = after if after is not None else before
            anchor_seq = None
            if anchor:
                row = self._execute(cursor, f"SELECT seq FROM items WHERE {where} AND item_id = ?",
                                    (*key, anchor)).fetchone()
                if row is None:
                    return ItemPage((), count)
                anchor_seq = row[0]
            lim = count if limit is None else limit
            if after is not None:
                rows = self._execute(cursor, f"SELECT {_ITEM_COLUMNS} FROM items WHERE {where} AND seq > ?"
                                             " ORDER BY seq LIMIT ?", (*key, anchor_seq, lim)).fetchall()
            else:
                bound = "AND seq < ?" if anchor_seq is not None else ""
                args = (*key, anchor_seq) if anchor_seq is not None else key
                rows = self._execute(cursor, f"SELECT {_ITEM_COLUMNS} FROM items WHERE {where} {bound}"
                                             " ORDER BY seq DESC LIMIT ?", (*args, lim)).fetchall()
                rows.reverse()
            items = tuple(_item(r) for r in rows)
            first_index = 0
            if items:
                first_index = self._execute(cursor, f"SELECT COUNT(*) FROM items WHERE {where} AND seq < ?",
                                            (*key, items[0].seq)).fetchone()[0]
            return ItemPage(items, count, first_index)

        return self._transact(page)

    def delete_items(self, service, node_id, item_ids):
        def delete(cursor):
            self._items_changed((service, node_id))
            deleted = []
            for item_id in item_ids:
                self._execute(cursor, "DELETE FROM items WHERE service = ? AND node = ? AND item_id = ?",
                              (service, node_id, item_id))
                if cursor.rowcount:
                    deleted.append(item_id)
            return deleted

        return self._transact(delete)

    def purge_items(self, service, node_id):
        def purge(cursor):
            self._items_changed((service, node_id))
            self._execute(cursor, "DELETE FROM items WHERE service = ? AND node = ?", (service, node_id))

        return self._transact(purge)

    # Accounts

    def create_account(self, account):
        def create(cursor):
            try:
                self._execute(cursor, f"INSERT INTO accounts (jid, {_ACCOUNT_COLUMNS})"
                                      " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              (account.jid, account.user, account.domain, account.salt, account.iterations,
                               account.stored_key_sha1, account.server_key_sha1,
                               account.stored_key_sha256, account.server_key_sha256, account.created))
            except self.integrity_errors:
                raise AccountExists(account.jid)

        return self._transact(create)

    def get_account(self, jid):
        return self._fetch(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE jid = ?", (jid,),
                           lambda rows: _account(rows[0]) if rows else None)

    def update_account(self, account):
        return self._run(
            "UPDATE accounts SET salt = ?, iterations = ?, stored_key_sha1 = ?, server_key_sha1 = ?,"
            " stored_key_sha256 = ?, server_key_sha256 = ? WHERE jid = ?",
            (account.salt, account.iterations, account.stored_key_sha1, account.server_key_sha1,
             account.stored_key_sha256, account.server_key_sha256, account.jid))

    def delete_account(self, jid):
        def delete(cursor):
            self._items_changed(None)
            self._execute(cursor, "DELETE FROM accounts WHERE jid = ?", (jid,))
            for table in TABLES:
                self._execute(cursor, f"DELETE FROM {table} WHERE service = ?", (jid,))
            self._execute(cursor, "DELETE FROM subscriptions WHERE subscriber_bare = ?", (jid,))
            self._execute(cursor, "DELETE FROM affiliations WHERE entity = ?", (jid,))

        return self._transact(delete)

    def list_accounts(self, domain=None):
        if domain is None:
            return self._fetch("SELECT jid FROM accounts ORDER BY jid", (), lambda rows: [r[0] for r in rows])
        return self._fetch("SELECT jid FROM accounts WHERE domain = ? ORDER BY jid", (domain,),
                           lambda rows: [r[0] for r in rows])


def schema(serial: str, binary: str, real: str) -> str:
    """Schema version 1, in a dialect's column types."""
    return f"""
    CREATE TABLE nodes (
        service TEXT NOT NULL, node TEXT NOT NULL, config TEXT NOT NULL,
        creator TEXT NOT NULL, created {real} NOT NULL,
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
        seq {serial},
        service TEXT NOT NULL, node TEXT NOT NULL, item_id TEXT NOT NULL,
        payload TEXT NOT NULL, publisher TEXT NOT NULL, published {real} NOT NULL,
        UNIQUE (service, node, item_id));
    CREATE INDEX items_node_seq ON items (service, node, seq);
    CREATE TABLE accounts (
        jid TEXT PRIMARY KEY, user_name TEXT NOT NULL, domain TEXT NOT NULL,
        salt {binary} NOT NULL, iterations INTEGER NOT NULL,
        stored_key_sha1 {binary} NOT NULL, server_key_sha1 {binary} NOT NULL,
        stored_key_sha256 {binary} NOT NULL, server_key_sha256 {binary} NOT NULL,
        created {real} NOT NULL)
    """


def migrate(cursor, execute, migrations: list[str]) -> None:
    """Bring the schema to ``len(migrations)``, recording the version."""
    execute(cursor, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = execute(cursor, "SELECT version FROM schema_version").fetchone()
    version = row[0] if row else 0
    if version > len(migrations):
        raise RuntimeError(f"database schema version {version} is newer than this xep207 ({len(migrations)})")
    for script in migrations[version:]:
        for statement in script.split(";"):
            if statement.strip():
                execute(cursor, statement)
    execute(cursor, "DELETE FROM schema_version")
    execute(cursor, "INSERT INTO schema_version VALUES (?)", (len(migrations),))


class ItemPut:
    """One ``put_item``, as a writer thread runs it: alone (call it with a
    cursor), or — SQLite — with the puts queued next to it as one multi-row
    statement (``sqlite_items.py``), which needs to see what it stores.
    (A plain class: one is made per message, and a frozen dataclass's
    ``__init__`` costs four times as much.)"""

    __slots__ = ("storage", "service", "node_id", "item", "max_items")

    def __init__(self, storage: SQLStorage, service: str, node_id: str, item: Item,
                 max_items: int | None) -> None:
        self.storage = storage
        self.service = service
        self.node_id = node_id
        self.item = item
        self.max_items = max_items

    def values(self) -> tuple:
        item = self.item
        return (self.service, self.node_id, item.item_id, item.payload, item.publisher, item.published)

    def __call__(self, cursor) -> Item:
        # A new id (nearly always: generated) is one insert. Replace = delete,
        # then insert as the newest. Under PostgreSQL's read committed, a
        # concurrent writer of the same id can slip in between: then the
        # insert does nothing and we go round again.
        storage, service, node_id, item, max_items = \
            self.storage, self.service, self.node_id, self.item, self.max_items
        insert, values = storage._INSERT_RETURNING, self.values()
        row = storage._insert_new_item(cursor, values)
        added = row is not None
        for _ in range(10):
            if row is not None:
                break
            storage._execute(cursor, "DELETE FROM items WHERE service = ? AND node = ? AND item_id = ?",
                             (service, node_id, item.item_id))
            row = storage._execute(cursor, insert, values).fetchone()
        else:
            raise RuntimeError(f"could not store item {item.item_id}: too much contention")
        if max_items is not None and storage._trim_needed(cursor, (service, node_id), max_items, added):
            storage._trim(cursor, service, node_id, max_items)
        return Item(item.item_id, item.payload, item.publisher, item.published, row[0])


def drain_batch(jobs: "queue.SimpleQueue", max_batch: int) -> list | None:
    """A writer thread's next batch: the first queued entry (waited for) and
    whatever else is queued, up to ``max_batch`` entries; None once stopped.
    An entry is a list of operations queued together (one reactor turn's)
    or one operation; a ``None`` entry (stop) is put back for after this batch."""
    first = jobs.get()
    if first is None:
        return None
    batch = list(first) if isinstance(first, list) else [first]
    while len(batch) < max_batch:
        try:
            entry = jobs.get_nowait()
        except queue.Empty:
            break
        if entry is None:
            jobs.put(None)  # stop after this batch
            break
        if isinstance(entry, list):
            batch.extend(entry)
        else:
            batch.append(entry)
    return batch


def deliver_results(results) -> None:
    """In the reactor thread: each operation's Deferred gets its outcome, in
    the order the writer thread ran them."""
    for d, result in results:
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)
