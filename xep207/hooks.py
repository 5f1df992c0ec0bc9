"""Named events with ordered handlers: how layers and plugins plug in.

One mechanism instead of callback lists per concern (Prosody's ``module:hook``
is the model): a handler is added under an event name with a priority (higher
runs first; equal priorities run in the order added). ``fire`` runs every
handler; ``first`` stops at the first handler that answers (returns something
other than None or False), which is how a stanza is captured.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any, Callable

from twisted.internet import defer
from twisted.python.failure import Failure

from xep207 import logs

__all__ = ["Hooks", "STANZA", "SESSION_BOUND", "SESSION_UNBOUND", "INITIAL_PRESENCE",
           "SUBSCRIPTION_CHANGED", "ITEM_PUBLISHED", "ITEMS_RETRACTED", "NODE_EMPTIED", "UNACKED",
           "AVAILABILITY_CHANGED", "KEPT_OFFLINE"]

# The events the server fires (third-party plugins may add their own names).
STANZA = "stanza"  # (stanza) from a session, before routing; a truthy answer consumes it
SESSION_BOUND = "session-bound"  # (session)
SESSION_UNBOUND = "session-unbound"  # (session); may return a Deferred to wait for
INITIAL_PRESENCE = "initial-presence"  # (session), after the probe is answered
SUBSCRIPTION_CHANGED = "subscription-changed"  # (SubscriptionChange)
ITEM_PUBLISHED = "item-published"  # (node, item, requestor), after storing, before delivery (``notify``: by kind)
ITEMS_RETRACTED = "items-retracted"  # (node, deleted item ids, requestor), after deleting
NODE_EMPTIED = "node-emptied"  # (node, requestor): every item gone (purged, or the node deleted)
# (node, item, account): a one-to-one message none of the account's sessions got,
# kept for its next one (told once its offline mark is written; ``notify``: "pair")
KEPT_OFFLINE = "kept-offline"
UNACKED = "stanzas-unacknowledged"  # (session, [stanza Elements]): a XEP-0198 session ended without their ack
# (session) whose availability or priority just changed, awaited before anyone is told
# (a cluster registers it first, so whoever sees the presence can route to the session)
AVAILABILITY_CHANGED = "availability-changed"
STANZA_NAMES = frozenset(("message", "presence", "iq"))


class Hooks:
    def __init__(self) -> None:
        self._handlers: dict[str, list[tuple[int, int, Callable[..., Any]]]] = {}
        self._order = itertools.count()
        # (event, registration) -> the stanza names or node kinds it wants
        # (``add(stanzas=..., kinds=...)``); per registration, not per handler:
        # one handler added twice for different names keeps both.
        self._wants: dict[tuple[str, int], frozenset[str]] = {}
        # event with such handlers -> stanza name -> the handlers that see it
        self._by_stanza: dict[str, dict[str, list[tuple[int, int, Callable[..., Any]]]]] = {}

    def add(self, name: str, handler: Callable[..., Any], priority: int = 0,
            stanzas: tuple[str, ...] | None = None, kinds: tuple[str, ...] | None = None) -> None:
        """``stanzas``: for an event asked with ``first`` whose first argument
        is a stanza (``STANZA``), the handler only sees stanzas of these
        names; ``kinds``: for an event told with ``notify(..., kind=)``
        (``ITEM_PUBLISHED``), only events on nodes of these kinds. A handler
        that ignores the others costs them no call."""
        handlers = self._handlers.setdefault(name, [])
        order = next(self._order)
        handlers.append((-priority, order, handler))
        handlers.sort(key=lambda entry: entry[:2])
        if stanzas is not None or kinds is not None:
            self._wants[(name, order)] = frozenset((*(stanzas or ()), *(kinds or ())))
        self._regroup(name)

    def remove(self, name: str, handler: Callable[..., Any]) -> None:
        for _, order, added in self._handlers.get(name, []):
            if added == handler:
                self._wants.pop((name, order), None)
        self._handlers[name] = [h for h in self._handlers.get(name, []) if h[2] != handler]
        self._regroup(name)

    def _regroup(self, name: str) -> None:
        self._by_stanza.pop(name, None)
        if any(event == name for event, _ in self._wants):
            self._by_stanza[name] = {}  # filled per stanza name as asked

    def _for_stanza(self, name: str, kind: str, remember: bool = False) -> list[tuple[int, int, Callable[..., Any]]]:
        """The handlers of ``name`` that want ``kind`` (a stanza's name, a node kind's)."""
        handlers = [entry for entry in self._handlers.get(name, ())
                    if kind in self._wants.get((name, entry[1]), (kind,))]
        if remember or kind in STANZA_NAMES:  # (never a cache entry per name a client made up)
            self._by_stanza[name][kind] = handlers
        return handlers

    def handlers(self, name: str) -> list[Callable[..., Any]]:
        return [handler for _, _, handler in self._handlers.get(name, ())]

    def fire(self, name: str, *args: Any) -> defer.Deferred:
        """Run every handler; fires when the Deferreds they returned have.
        A failing handler is logged (storage trouble in one line) and does
        not stop the others. Cheap when no handler waits: it runs per publish."""
        pending = []
        for _, _, handler in self._handlers.get(name, ()):
            d = self._run(name, handler, args)
            if d is not None:
                pending.append(d)
        return defer.gatherResults(pending) if pending else defer.succeed(None)

    @staticmethod
    def _run(name: str, handler: Callable[..., Any], args: tuple[Any, ...]) -> defer.Deferred | None:
        """Call one handler of ``fire`` or ``notify``: a Deferred of what it
        still does (its failure logged), or None when it is done."""
        try:
            result = handler(*args)
        except Exception:
            logs.failure(Failure(), _what(name, handler))
            return None
        if result is None:
            return None
        if isinstance(result, defer.Deferred):
            if result.called and not result.paused and not isinstance(result.result, Failure):
                return None  # done already (most consequences of a session's end): nothing to wait for
            return result.addErrback(logs.failure, _what(name, handler))
        if inspect.iscoroutine(result):
            return defer.ensureDeferred(result).addErrback(logs.failure, _what(name, handler))
        return None

    def notify(self, name: str, *args: Any, kind: str) -> None:
        """``fire`` for an event nobody waits on (``ITEM_PUBLISHED``, on every
        publish): no Deferred unless a handler returns one, only the handlers
        that want this node ``kind`` called (``add(..., kinds=)``; a handler
        added without ``kinds`` sees every kind). A handler's failure is logged."""
        grouped = self._by_stanza.get(name)
        handlers: list[tuple[int, int, Callable[..., Any]]] | None
        if grouped is None:
            handlers = self._handlers.get(name, [])
        else:  # (node kinds are the server's own names: each one is remembered)
            handlers = grouped.get(kind)
            if handlers is None:
                handlers = self._for_stanza(name, kind, remember=True)
        for _, _, handler in handlers:
            self._run(name, handler, args)

    async def first(self, name: str, *args: Any) -> Any:
        """Run handlers in order until one answers; that answer, or None.
        (Handlers are called directly: this is every stanza's path.)"""
        answer = self.first_now(name, *args)
        if isinstance(answer, defer.Deferred):
            answer = await answer
        return answer

    def first_now(self, name: str, *args: Any) -> Any:
        """``first`` as a plain call: the answer, or a Deferred of it once a
        handler answered with something to wait for (no coroutine per stanza
        when every handler answers at once, or with a Deferred that has
        already fired; a failure stays a failed Deferred)."""
        grouped = self._by_stanza.get(name)
        if grouped is None or not args:
            handlers = self._handlers.get(name, [])
        else:
            kind = getattr(args[0], "name", "")
            handlers = grouped.get(kind) or self._for_stanza(name, kind)
        for i, (_, _, handler) in enumerate(handlers):
            answer = handler(*args)
            if answer is None or answer is False:
                continue  # (most handlers pass a stanza on at once: no awaitable test)
            if answer is True:
                return answer  # (a capture at once: no ABC check, no awaitable test)
            if isinstance(answer, defer.Deferred):
                if answer.called and not answer.paused and (
                        type(answer.result) in _PLAIN or not isinstance(answer.result, _NOT_AN_ANSWER)):
                    # Fired already (a message handed to storage at once): its
                    # answer as is, no callback chain.
                    answer = answer.result
                    if answer is None or answer is False:
                        continue
                    return answer
                return answer.addCallback(self._first_after, name, handlers[i + 1:], args)
            if inspect.isawaitable(answer):
                return defer.ensureDeferred(_awaited(answer)).addCallback(
                    self._first_after, name, handlers[i + 1:], args)
            return answer
        return None

    def _first_after(self, answer: Any, name: str, rest: list[tuple[int, int, Callable[..., Any]]],
                     args: tuple[Any, ...]) -> Any:
        if answer is not None and answer is not False:
            return answer
        later = Hooks()
        later._handlers[name] = rest
        return later.first_now(name, *args)


_NOT_AN_ANSWER = (Failure, defer.Deferred)
# Answers known at once not to be a Deferred (isinstance of one is an ABC
# check, a Python call, for anything that is not).
_PLAIN = frozenset((bool, type(None)))


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _what(name: str, handler: Callable[..., Any]) -> str:
    return f"{name} handler {getattr(handler, '__qualname__', handler)}"
