"""New items of one SQLite batch, stored with multi-row statements.

Why: the sqlite3 module lets go of the GIL around every statement step and
every reset, and under load the reactor thread holds it; each time, the writer
thread then waits for the reactor's next system call to take it back. Measured
under the 1:1 chat benchmark (issue 13): 170 µs of wall time per stored item
for 30 µs of work, batches of 400 items taking 25–90 ms, and every message's
delivery waiting for them. One ``INSERT … VALUES (…), (…), …`` for a run of
puts makes that wait once per run instead of once per item.

What it must not change is what each put would have done alone: the same
rows, the same ``seq`` order (the order issued), the same answers. A put that
overwrites an existing id (or one issued earlier in the same run) is
detected by the insert's row count; that statement's rows are then removed
and its puts run one by one, as ``ItemPut`` runs them alone.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from xep207.storage.records import Item
from xep207.storage.sql import ItemPut, insert_items

# Statements of 128, 64, … 1 rows: a run of any length is a few of them, and
# the connection's statement cache holds eight shapes, not one per length.
_SIZES = (128, 64, 32, 16, 8, 4, 2, 1)
_INSERTS = {size: insert_items(size) for size in _SIZES}


def run_jobs(cursor, batch: list) -> list[tuple[Any, Any]]:
    """Each job of the batch run in order, as ``(deferred, result)``; runs of
    two or more ``ItemPut``s are stored together."""
    results: list[tuple[Any, Any]] = []
    append = results.append
    count = len(batch)
    start = 0
    while start < count:
        function, args, d = batch[start]
        end = start + 1
        if _groups(function):
            while end < count and _groups(batch[end][0]):
                end += 1
        if end - start == 1:
            append((d, function(cursor, *args)))
        else:
            puts = [job[0] for job in batch[start:end]]
            results.extend(zip([job[2] for job in batch[start:end]], store_new_items(cursor, puts)))
        start = end
    return results


def _groups(function) -> bool:
    # A node that keeps one item (a presence, an avatar) is nearly always
    # overwritten: such a put would only make its statement run twice.
    return type(function) is ItemPut and function.max_items != 1


def store_new_items(cursor, puts: list[ItemPut]) -> list[Item]:
    """The stored items, in order; the puts share one storage."""
    stored: list[Item] = []
    start = 0
    for size in _SIZES:
        while len(puts) - start >= size:
            chunk = puts[start:start + size]
            stored.extend(_insert_chunk(cursor, chunk))
            start += size
    return stored


def _insert_chunk(cursor, chunk: list[ItemPut]) -> list[Item]:
    if len(chunk) == 1:
        return [chunk[0](cursor)]
    values: list = []
    limits: dict[tuple[str, str], int | None] = {}
    for put in chunk:
        values.extend(put.values())
        if limits.setdefault((put.service, put.node_id), put.max_items) != put.max_items:
            # (max_items changed between two puts to a node: each trims to its own, in turn)
            return [put(cursor) for put in chunk]
    cursor.execute(_INSERTS[len(chunk)], values)
    inserted = cursor.rowcount
    if inserted != len(chunk):
        # An id that exists (or repeats in the chunk): undo the chunk, then
        # each put alone, in order, replaces as it would have. (AUTOINCREMENT
        # leaves a gap in seq where these rows were; seq orders, it does not count.)
        if inserted > 0:
            _undo(cursor, len(chunk), inserted)
        return [put(cursor) for put in chunk]
    # The rows got consecutive seqs, in the order listed: AUTOINCREMENT, one writer.
    seq = cursor.lastrowid - inserted
    stored = []
    added: Counter = Counter()
    for put in chunk:
        seq += 1
        item = put.item
        stored.append(Item(item.item_id, item.payload, item.publisher, item.published, seq))
        added[(put.service, put.node_id)] += 1
    storage = chunk[0].storage
    for (service, node_id), count in added.items():
        max_items = limits[(service, node_id)]
        if max_items is not None and storage._trim_needed(cursor, (service, node_id), max_items, count):
            storage._trim(cursor, service, node_id, max_items)
    return stored


def _undo(cursor, rows: int, inserted: int) -> None:
    """Delete what a chunk of ``rows`` rows inserted. Every row listed took a
    seq, the skipped ones too (AUTOINCREMENT counts them): the chunk's rows
    are the last ``rows`` seqs handed out, not the last ``inserted`` before
    ``lastrowid`` (that left the rows before a skipped one, and each one's put
    then counted as a replacement: the node kept more than max_items)."""
    top = cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()[0]
    cursor.execute("DELETE FROM items WHERE seq > ?", (top - rows,))
    if cursor.rowcount != inserted:  # (never seen; the batch then runs again, one put at a time)
        raise RuntimeError(f"a chunk of {rows} items inserted {inserted} rows, {cursor.rowcount} found")
