"""One clock for the client: trio time, mapped to wall time at client start."""

from __future__ import annotations

import math
import time

import attrs
import trio


@attrs.frozen
class Clock:
    """Maps ``trio.current_time()`` to wall-clock seconds since the epoch.

    Deadlines and staleness use trio time, so a ``MockClock`` moves every
    timer, staleness check and stored timestamp together; timestamps users
    see and L2 stores are wall time, so they mean the same in every process.
    """

    trio_start: float
    wall_start: float

    @classmethod
    def start(cls) -> Clock:
        """Anchor the mapping at this moment.  Must be called inside ``trio.run``."""
        return cls(trio_start=trio.current_time(), wall_start=time.time())

    def now(self) -> float:
        """Trio time now."""
        return trio.current_time()

    def wall(self, trio_time: float | None = None) -> float:
        """Wall time of ``trio_time`` (now, if ``None``)."""
        if trio_time is None:
            trio_time = trio.current_time()
        return self.wall_start + (trio_time - self.trio_start)

    def from_wall(self, wall_time: float) -> float:
        """Trio time of ``wall_time``."""
        return self.trio_start + (wall_time - self.wall_start)

    def stamp(self, now: float) -> tuple[float, float]:
        """The wall time to stamp data current at trio time ``now``, and the trio time that
        stamp maps back to (:meth:`from_wall`), never after ``now``.

        A wall time (about 1.8e9 s) holds a time to a quarter of a microsecond, a trio
        time far finer, so the mapping there and back may move it: the stamp is the
        latest one that maps to ``now`` or before, so that a deadline counted from the
        stamp (as the L1 table keeps them) comes no later than one counted from ``now``.
        """
        # wall() and from_wall() written out: this runs at every landing.
        trio_start, wall_start = self.trio_start, self.wall_start
        wall = wall_start + (now - trio_start)
        at = trio_start + (wall - wall_start)
        while at > now:
            wall = math.nextafter(wall, -math.inf)
            at = trio_start + (wall - wall_start)
        return wall, at
