"""Global backpressure: client streams are not read while the storage writer is behind.

The shaper (``ServerStream._charge``) bounds what one client sends; nothing
there bounds what many send together. Clients that do not wait for delivery
(two hundred connections pipelining one-to-one messages) fill the writer's
queue faster than it empties: memory grows, so does everyone's latency, and a
crash loses more. So, as Prosody and ejabberd stop reading c2s sockets when a
queue downstream is too deep, the storage says when it falls behind and when
it caught up (``SQLStorage.watch_backlog``: a high- and a low-water mark of
operations waiting for their answers), and meanwhile client streams stop
reading.

Lazily: a stream is paused when it reads (or has a slice of an earlier read
to parse) while the storage is behind, and what it read waits unparsed. A
stream that sends nothing costs nothing, and only the streams paused are
resumed. Once the storage caught up they are resumed in the order paused,
each parsing a slice of what waited, until the storage is behind again; the
rest stay paused, first in line for the next time: a few clients flooding
cannot keep the others from their turn. Writes go on meanwhile
(deliveries, answers to stanzas parsed before), and a stanza parsed before
is handled. Only client streams are held (their listener hands this object
over): components, the admin channel, the metrics endpoint and the
cluster's links are read as ever. ``memory:`` has no writer queue: it never
holds anything.

A socket that is not read does not say that its peer left: a client that
closes its connection while paused is seen gone once read again (or
written to); a connection the server ends meanwhile (an authentication
timeout, a stream error) is forgotten at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.python import log

from xep207.server.stream import HELD_BY_STORAGE

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from xep207.server.stream import ServerStream

# Under sustained overload the marks are crossed many times a second: one
# line for the first time in this long, and how often since with the next.
LOG_INTERVAL = 10.0  # seconds


class Backpressure:
    """Which client streams wait for the storage writer, and whether they must."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.holding = False  # the storage is behind: streams stop as they read
        # Paused streams, in the order paused (a dict: ordered, and removal by key).
        self.paused: dict[ServerStream, None] = {}
        self.pauses = 0  # times the storage fell behind (metrics)
        self._since = 0.0
        self._logged_at: float | None = None  # when "behind" was last logged
        self._logged_pauses = 0  # ``pauses`` then
        self._logging = False  # this hold's "behind" was logged: so is its end
        self._resuming: IDelayedCall | None = None

    def storage_backlogged(self, backlogged: bool) -> None:
        """The storage's watcher (``watch_backlog``): it fell behind, or caught up."""
        if backlogged == self.holding:
            return
        self.holding = backlogged
        now = self.clock.seconds()
        if backlogged:
            self.pauses += 1
            self._since = now
            self._logging = self._logged_at is None or now - self._logged_at >= LOG_INTERVAL
            if self._logging:
                more = self.pauses - self._logged_pauses - 1
                since = f" (and {more} more times since the last such line)" if more else ""
                self._logged_at, self._logged_pauses = now, self.pauses
                log.msg(f"storage writer behind: client streams stop reading until it catches up{since}")
            return
        if self._logging:
            log.msg(f"storage writer caught up: {len(self.paused)} client streams read again "
                    f"(after {now - self._since:.3f} s)")
        if self._resuming is None:  # (not here: among the storage's answers)
            self._resuming = self.clock.callLater(0, self._resume)

    def _resume(self) -> None:
        """The paused streams in the order paused, until the storage is behind again."""
        self._resuming = None
        while self.paused and not self.holding:
            stream = next(iter(self.paused))
            del self.paused[stream]
            try:
                stream.storage_caught_up()
            except Exception:  # (the others must not stay paused for one stream's bug)
                log.err(None, "resuming a client stream failed")

    def pause(self, stream: ServerStream) -> None:
        """``stream`` has something to parse while the storage is behind: it waits."""
        if stream not in self.paused:
            self.paused[stream] = None
            stream.hold_reading(HELD_BY_STORAGE)

    def forget(self, stream: ServerStream) -> None:
        """``stream``'s connection is gone."""
        self.paused.pop(stream, None)


def install(server, clock: IReactorTime) -> Backpressure:
    """One for a running ``Server``: its storage backend tells it (when the
    backend has a writer queue), its client listener hands it to its streams."""
    backpressure = Backpressure(clock)
    watch = getattr(server.storage_backend, "watch_backlog", None)
    if watch is not None:
        watch(backpressure.storage_backlogged)
    return backpressure
