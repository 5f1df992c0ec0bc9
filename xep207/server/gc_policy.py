"""The garbage collector's share of a running server's time (issue 13).

CPython's cyclic collector walks every object of the generations it
collects; a full collection walks them all, including the modules, classes
and functions loaded at start-up (some 60,000 objects), none of which ever
becomes garbage. Under the one-to-one benchmark full collections took
40-230 ms each, and together up to a fifth of the reactor thread's time,
more the more the server fell behind (work waiting is promoted, and promotes
the next full collection). ``gc.freeze()`` once the server is built moves what
exists then into the permanent generation, which no collection walks again.

Only ``twistd xep207`` does this: a process that embeds xep207 (a test suite)
keeps its collector as it was.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_start_up_objects"]


def freeze_start_up_objects() -> int:
    """Collect once, then keep what is left out of every later collection;
    how many objects that is."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
