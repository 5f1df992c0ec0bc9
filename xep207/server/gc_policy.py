"""The garbage collector's share of a running server's time (issue 13).

CPython's cyclic collector walks every object of the generations it
collects. Two things made it cost the server a fifth of its time under load:

- A full collection walks everything, including the modules, classes and
  functions loaded at start-up (some 60,000 objects) that never become
  garbage: 40-230 ms a pass. ``gc.freeze()`` once the server is built moves
  them into the permanent generation, which no collection walks again.
- The young generation is collected every 700 allocations that outlive the
  last pass. Work in flight (a batch waiting for SQLite's commit, results
  made by its thread and freed by the reactor) counts as such, so one-to-one
  chat on SQLite made a young pass every 21 messages and an older one every
  230, each promoting what was in flight: 20 µs of collector per message.
  Every 10,000 allocations instead: 10 passes per 5,000 messages, not 260.
  One-to-one, room and presence stanzas leave no reference cycles
  (``xep207.xmlutil.release``), so what waits longer for a pass is the rarer
  cycle: a megabyte or two at most.

Only ``twistd xep207`` does this: a process that embeds xep207 (a test suite)
keeps its collector as it was.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "tune_collector"]

YOUNG_THRESHOLD = 10_000


def tune_collector() -> int:
    """Collect once, keep what is left out of every later collection, and
    collect the young generation less often; how many objects were frozen."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    return gc.get_freeze_count()
