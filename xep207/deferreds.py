"""Reading a Deferred that has fired already, without its callback machinery."""

from __future__ import annotations

from twisted.internet import defer
from twisted.python.failure import Failure

__all__ = ["fired_with_value"]


def fired_with_value(d: defer.Deferred) -> bool:
    """Whether ``d`` has fired with a value that may be read off ``d.result``
    now: not waiting, not paused, not a failure. (A Deferred whose result is
    another Deferred is paused; the isinstance says so for whoever reads it.)

    For the paths where an answer at hand saves a callback chain (a login
    whose account is cached). The per-message paths keep their own inline
    checks: there a call is what they save."""
    return d.called and not d.paused and not isinstance(d.result, (Failure, defer.Deferred))
