"""XEP-0059 paging over an ordered list of items, shared by backends that page in Python."""

from __future__ import annotations

from typing import Sequence

from xep207.storage.records import Item, ItemPage


def page_of(
    items: Sequence[Item], limit: int | None, after: str | None, before: str | None
) -> ItemPage:
    """Select one page from ``items`` (oldest first).

    An unknown ``after``/``before`` id yields an empty page; the caller turns
    that into XEP-0059's ``item-not-found``.
    """
    ids = [i.item_id for i in items]
    start, end = 0, len(items)
    if after is not None:
        if after not in ids:
            return ItemPage((), len(items))
        start = ids.index(after) + 1
        if limit is not None:
            end = min(end, start + limit)
    elif before is not None:
        if before:
            if before not in ids:
                return ItemPage((), len(items))
            end = ids.index(before)
        if limit is not None:
            start = max(0, end - limit)
    elif limit is not None:
        start = max(0, end - limit)
    return ItemPage(tuple(items[start:end]), len(items), start if start < end else 0)
