"""Work under way, so that a shutdown can wait for it (no stanza half-handled)."""

from __future__ import annotations

from twisted.internet import defer


class InFlight:
    def __init__(self) -> None:
        self._pending: set[defer.Deferred] = set()

    def __bool__(self) -> bool:
        return bool(self._pending)

    def __len__(self) -> int:
        return len(self._pending)

    def track(self, d: defer.Deferred) -> defer.Deferred:
        # (``result is None`` first: isinstance of a Deferred is an ABC check,
        # a Python call, for anything that is not one)
        if d.called and (d.result is None or not isinstance(d.result, defer.Deferred)):
            return d  # done already (most stanzas): nothing to wait for
        self._pending.add(d)  # removed again when it fires (at once if it already has)
        d.addBoth(self._settled, d)
        return d

    def _settled(self, result, d):
        self._pending.discard(d)
        return result

    async def drain(self) -> None:
        while self._pending:
            await defer.DeferredList(list(self._pending))
