"""Dispatching a stream's elements to its XPath observers without the XPath
machinery for each one (issue 13).

Twisted's ``EventDispatcher.dispatch`` sorts the priorities, builds a lambda
and matches every registered query against every element, then calls each
observer through a wrapper that copies its keyword arguments: a dozen Python
calls per stanza for what is, on a bound client stream, one observer (``/*``).
``FastElementDispatch.dispatch`` keeps the same observers and the same
semantics (priority order, registration order, lazily evaluated queries, an
observer's exception logged and the others still called, observers added or
removed meanwhile taking effect after the dispatch) but works from a plan made
once per element name: the observers whose query could match an element of
that name, in order, with ``/*``-style queries known to match.

A plan is dropped whenever an observer is added or removed. An element that
a one-time observer could match goes through ``dispatch`` itself (which
removes the observer without telling anyone), and the plans are dropped after.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from twisted.python import log
from twisted.words.xish import xpath
from twisted.words.xish.utility import EventDispatcher

# One query of a plan (None: matches any element of the plan's name) and the
# observers to call with an element it matches, in the order registered.
_Step = tuple[Any, tuple[Callable[[Any], object], ...]]


def _callable(wrapper: Any) -> Callable[[Any], object]:
    """What ``_MethodWrapper(method, *args, **kwargs)(element)`` calls."""
    if not wrapper.args and not wrapper.kwargs:
        return wrapper.method
    return partial(wrapper.method, *wrapper.args, **wrapper.kwargs)


def _name_only(query: Any, name: str) -> bool | None:
    """Whether ``query`` matches every element called ``name`` (True), none of
    them (False), or depends on more than the name (None)."""
    location = query.baseLocation
    if type(location) is not xpath._Location:
        return None  # ``//``: any descendant
    if location.elementName is not None and location.elementName != name:
        return False
    if location.predicates or location.childLocation is not None:
        return None
    return True


def plan_for(dispatcher: EventDispatcher, name: str) -> list[_Step] | None:
    """The observers an element called ``name`` may reach, in dispatch order;
    None when a one-time observer is among them (``dispatch`` must run)."""
    steps: list[_Step] = []
    for priority in sorted(dispatcher._xpathObservers, reverse=True):
        for query, callbacks in dispatcher._xpathObservers[priority].items():
            matches = _name_only(query, name)
            if matches is False:
                continue
            calls = []
            for wrapper, onetime in callbacks.callbacks.values():
                if onetime:
                    return None
                calls.append(_callable(wrapper))
            if calls:
                steps.append((None if matches else query, tuple(calls)))
    return steps


MAX_PLANS = 16  # element names remembered per dispatcher (a peer may make names up)


class FastElementDispatch(EventDispatcher):
    """An ``EventDispatcher`` whose element dispatches go by per-name plans:
    mixed into an ``XmlStream``, or made the class of a pipe's ends (``faster``)."""

    _plans: dict[str, list[_Step] | None] | None = None

    def _addObserver(self, onetime, event, observerfn, priority, *args, **kwargs):
        self._plans = None
        return super()._addObserver(onetime, event, observerfn, priority, *args, **kwargs)

    def removeObserver(self, event, observerfn):
        self._plans = None
        return super().removeObserver(event, observerfn)

    def dispatch(self, obj, event=None):
        if event is not None or type(getattr(obj, "name", None)) is not str:
            if event is not None and not self._eventObservers:
                return False  # (a server's client stream: nobody observes its named events)
            return super().dispatch(obj, event)  # a named event, or not an element
        return self.dispatch_element(obj)

    def dispatch_element(self, element) -> bool:
        """``dispatch(element)``: whether some observer was called."""
        plans = self._plans
        if plans is None:
            plans = self._plans = {}
        name = element.name
        try:
            steps = plans[name]
        except KeyError:
            if len(plans) >= MAX_PLANS:
                plans.clear()
            steps = plans[name] = plan_for(self, name)
        if steps is None:
            found = EventDispatcher.dispatch(self, element)
            self._plans = None  # it may have dropped one-time observers
            return found
        found = False
        self._dispatchDepth += 1
        try:
            for query, calls in steps:
                if query is None or query.matches(element):
                    found = True
                    for call in calls:
                        try:
                            call(element)
                        except BaseException:
                            log.err()
        finally:
            self._dispatchDepth -= 1
        if self._dispatchDepth == 0 and self._updateQueue:
            queued, self._updateQueue = self._updateQueue, []
            for update in queued:
                update()
        return found


def faster(dispatcher: EventDispatcher) -> None:
    """Make a plain ``EventDispatcher`` (an end of wokkel's ``XmlPipe``)
    dispatch elements by plans; its observers stay as they are."""
    if type(dispatcher) is EventDispatcher:
        dispatcher.__class__ = FastElementDispatch
