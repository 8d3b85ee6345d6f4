"""One clock for the client: trio time, mapped to wall time at client start."""

from __future__ import annotations

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
