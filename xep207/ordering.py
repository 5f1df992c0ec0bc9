"""One thing after another, without a Deferred for the common case of nothing waiting.

A session's stanzas are handled in the order sent, each once the one before
has been (RFC 6120 §10.1). ``defer.DeferredLock`` says that, but costs an
acquire Deferred and a callback chain per stanza even when the lock is free,
which is nearly always; ``InOrder`` calls at once when it is idle and queues
only behind work still under way.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.internet import defer
from twisted.python.failure import Failure

__all__ = ["ConversationLock", "InOrder", "handed_off"]


class InOrder:
    """``run(f, *args)``: call ``f`` once everything run before has finished.

    ``f`` returns a Deferred; the next call waits until it fires. ``run``
    returns a Deferred with ``f``'s outcome.
    """

    __slots__ = ("_queue", "_busy")

    def __init__(self) -> None:
        # Made when something first waits, dropped when the last waiter ran:
        # an empty deque costs 600 bytes, and each session has two of these.
        self._queue: deque[tuple[Callable[..., defer.Deferred], tuple, defer.Deferred | None]] | None = None
        self._busy = False

    @property
    def locked(self) -> bool:
        """Whether something runs or waits (``DeferredLock``'s name for it)."""
        return self._busy

    def run(self, f: Callable[..., defer.Deferred], *args: Any) -> defer.Deferred:
        if self._busy:
            waiter: defer.Deferred = defer.Deferred()
            self._waiting().append((f, args, waiter))
            return waiter
        self._busy = True
        d = self._call(f, args)
        if d.called and not isinstance(d.result, defer.Deferred):  # (done, not waiting on another)
            if self._queue:
                self._next()
            else:
                self._busy = False  # (every stanza of an idle session: no more calls than this)
        else:
            d.addBoth(self._finished)
        return d

    def wait_for(self, d: defer.Deferred) -> None:
        """``run(lambda: d)`` for work already under way whose outcome the caller
        keeps itself: what runs next waits until ``d`` fired (no Deferred, no
        function made per call)."""
        if self._busy:
            self._waiting().append((_itself, (d,), None))
            return
        if d.called and not isinstance(d.result, defer.Deferred):
            return
        self._busy = True
        d.addBoth(self._finished)

    def _waiting(self) -> deque:
        if self._queue is None:
            self._queue = deque()
        return self._queue

    @staticmethod
    def _call(f, args) -> defer.Deferred:
        if f is _itself:
            return args[0]  # (``wait_for``'s: the work is under way already)
        try:
            d = f(*args)
        except BaseException:
            return defer.fail()
        return d if isinstance(d, defer.Deferred) else defer.succeed(d)

    def _finished(self, result):
        self._next()
        return result

    def _next(self) -> None:
        """Run what waited, in order, until one of them has to wait itself (a
        loop, not recursion: a long queue of synchronous work stays flat)."""
        while self._queue:
            f, args, waiter = self._queue.popleft()
            d = self._call(f, args)
            if waiter is not None:
                d.addBoth(_relay, waiter)
            if not d.called or isinstance(d.result, defer.Deferred):
                d.addBoth(self._finished)
                return
        self._queue = None
        self._busy = False


def _itself(d: defer.Deferred) -> defer.Deferred:
    return d


def _pass_on(result, d: defer.Deferred):
    d.callback(None)
    return result


def _relay(result, waiter: defer.Deferred) -> None:
    waiter.callback(result)  # a Failure passes on as one


def handed_off(start: Callable[[Callable[[], None]], defer.Deferred],
               late_failure: Callable[[Any], object],
               track: Callable[[defer.Deferred], object]) -> defer.Deferred:
    """Start a storage write through the engine (``start(queued)``: a publish
    given ``queued=queued``) and fire once it is in storage's queue, so that
    whatever comes next (a stanza of the same stream, room or pair) is
    ordered after it without waiting for the commit.

    Fires with the failure if the write was refused before that (the caller
    answers it as usual); a failure after the hand-off goes to
    ``late_failure``. ``track``: the whole operation, for a clean shutdown.
    """
    handed: defer.Deferred = defer.Deferred()

    def queued() -> None:
        if not handed.called:
            handed.callback(None)

    def finished(result):
        if not handed.called:
            handed.callback(result)
        elif isinstance(result, Failure):
            late_failure(result)
        return None

    track(start(queued).addBoth(finished))
    return handed


class ConversationLock:
    """``DeferredLock``'s contract (``acquire`` fires once it is ours, ``release``
    hands it to the next waiter), plus ``try_acquire`` for the usual case of
    a free lock: no Deferred per message (issue 13).

    Publishes share it as a pipeline (``try_join``/``join``, then ``enter``
    and ``finish``): the next one may start while the one before is still
    being stored, as long as nobody else waits; each one's turn (what follows
    its store) comes once every one entered before it finished. Anyone else
    (``acquire``) has it alone, once the pipeline drained.

    A publish may also be delivered before its store finished
    (``deliver_early``), but only when everything ahead of it in the
    pipeline reached its recipients already: delivery order is the order
    entered, whichever way each one went."""

    __slots__ = ("locked", "waiting", "publishing", "_order", "_advancing", "undelivered")

    def __init__(self) -> None:
        self.locked = False
        self.waiting: deque[defer.Deferred] = deque()
        self.publishing = 0
        # [finished, turn Deferred or None, sentinel, delivered], oldest first
        self._order: deque[list] = deque()
        self._advancing = False
        self.undelivered = 0  # entries (sentinels too) not yet delivered nor finished

    def try_acquire(self) -> bool:
        if self.locked:
            return False
        self.locked = True
        return True

    def acquire(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        if self.locked:
            self.waiting.append(d)
        else:
            self.locked = True
            d.callback(self)
        return d

    def release(self) -> None:
        if self.waiting:
            self.waiting.popleft().callback(self)  # still locked: now the waiter's
        else:
            self.locked = False

    # The pipeline of publishes -----------------------------------------------------

    def try_join(self, share: bool = True) -> bool:
        """Join at once if the lock is free or (``share``) only publishes hold
        it and nobody waits."""
        if not self.locked:
            self.locked = True
            self.publishing = 1
            return True
        if share and self.publishing and not self.waiting:
            self.publishing += 1
            return True
        return False

    def join(self) -> defer.Deferred:
        return self.acquire().addCallback(self._joined)

    def _joined(self, result):
        self.publishing = 1
        return result

    def share(self) -> None:
        """Held alone (``acquire``), it becomes a pipeline of one publish;
        its ``leave`` releases it. Who queued meanwhile (``waiting``) keeps
        waiting until then (``try_join`` refuses while anyone waits)."""
        self.publishing = 1

    def enter(self) -> tuple[list, defer.Deferred | None]:
        """A place in the pipeline's order, and a Deferred firing when its turn
        comes (None: it is its turn already)."""
        entry: list = [False, None, False, False]
        if self._order:
            entry[1] = defer.Deferred()
        self._order.append(entry)
        self.undelivered += 1
        return entry, entry[1]

    def deliver_early(self, entry: list) -> bool:
        """May ``entry`` (the last one entered) reach its recipients now? Yes
        when every entry ahead of it was delivered or finished; it then
        counts as delivered."""
        if entry[3] or self.undelivered != 1:
            return False
        self._delivered(entry)
        return True

    def _delivered(self, entry: list) -> None:
        if not entry[3]:
            entry[3] = True
            self.undelivered -= 1

    def finish(self, entry: list) -> None:
        """This publish is done: the next one's turn (a loop, not recursion:
        turns that finish at once while it runs are taken up by it)."""
        entry[0] = True
        self._delivered(entry)  # (what follows a store delivers first)
        if self._advancing:
            return
        self._advancing = True
        try:
            order = self._order
            while order and order[0][0]:
                order.popleft()
                if order:
                    head = order[0]
                    turn = head[1]
                    if head[2]:
                        head[0] = True  # a sentinel: nothing to run
                        self._delivered(head)  # (its message goes now)
                    if turn is not None and not turn.called:
                        turn.callback(None)
        finally:
            self._advancing = False

    def leave(self) -> None:
        self.publishing -= 1
        if not self.publishing:
            self.release()

    def after_tail(self) -> defer.Deferred | None:
        """A Deferred firing once every publish entered so far finished; None
        when none is pending."""
        if not self._order:
            return None
        entry: list = [False, defer.Deferred(), True, False]
        self._order.append(entry)
        self.undelivered += 1  # (a message behind it must not overtake it)
        return entry[1]
