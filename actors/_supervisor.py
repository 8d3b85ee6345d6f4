"""Run child tasks, restart the ones that crash, escalate when crashes pile up."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import final

import attrs
import trio

logger = logging.getLogger("actors.supervisor")


@attrs.frozen
class RestartIntensity:
    """How many crashes a supervisor absorbs before it gives up.

    More than ``max_restarts`` crashes within ``within`` seconds (of
    ``trio.current_time()``) escalate: the crash is re-raised into the
    supervisor's nursery, which fails, as structured concurrency expects.
    """

    max_restarts: int = attrs.field(default=5)
    """Crashes tolerated inside the window."""
    within: float = attrs.field(default=10.0)
    """Length of the window, in seconds."""

    @max_restarts.validator
    def _check_restarts(self, _attribute: object, value: int) -> None:
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"max_restarts must be an int >= 0, got {value!r}")

    @within.validator
    def _check_within(self, _attribute: object, value: float) -> None:
        # `not value > 0` rather than `value <= 0`: NaN compares false both ways.
        if not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"within must be a number of seconds > 0, got {value!r}")


@attrs.frozen
class SupervisorStatistics:
    """A point-in-time view of a supervisor."""

    running: int
    """Children whose task is alive."""
    started: int
    """Children started since the supervisor was made."""
    restarts: int
    """Crashes absorbed by restarting the child."""


@final
class Supervisor:
    """Runs children in a nursery and restarts those that crash.

    A child is an async callable with no arguments.  When it returns, it is
    done.  When it raises (anything but cancellation), the supervisor logs the
    crash and calls it again: a child keeps its state outside the call (an
    actor re-reads its last published snapshot), so the new call resumes from
    that state.  Past the :class:`RestartIntensity`, the crash escalates: the
    original exception propagates into the nursery and fails it.

    Args:
        nursery: where children run; the supervisor lives as long as it does.
        intensity: when restarting stops and escalation begins.
    """

    def __init__(self, nursery: trio.Nursery, intensity: RestartIntensity | None = None) -> None:
        self._nursery = nursery
        self.intensity = intensity if intensity is not None else RestartIntensity()
        self._crash_times: deque[float] = deque()
        self._running = 0
        self._started = 0
        self._restarts = 0

    def start_soon(self, child: Callable[[], Awaitable[None]], *, name: object = None) -> None:
        """Start ``child`` in the supervisor's nursery, supervised.

        Synchronous: the child begins at the next scheduling point.

        Raises:
            RuntimeError: the nursery is closed.
        """
        self._nursery.start_soon(self._supervise, child, name=name)
        self._running += 1
        self._started += 1

    async def _supervise(self, child: Callable[[], Awaitable[None]]) -> None:
        try:
            while True:
                try:
                    await child()
                    return
                except Exception as exc:
                    if self._must_escalate():
                        logger.error(
                            "child %r crashed %d times within %ss: escalating",
                            child,
                            len(self._crash_times),
                            self.intensity.within,
                            exc_info=exc,
                        )
                        raise
                    self._restarts += 1
                    logger.warning("child %r crashed; restarting it", child, exc_info=exc)
        finally:
            self._running -= 1

    def _must_escalate(self) -> bool:
        now = trio.current_time()
        window_start = now - self.intensity.within
        crashes = self._crash_times
        crashes.append(now)
        while crashes and crashes[0] < window_start:
            crashes.popleft()
        return len(crashes) > self.intensity.max_restarts

    def statistics(self) -> SupervisorStatistics:
        """Return the supervisor's current :class:`SupervisorStatistics`."""
        return SupervisorStatistics(
            running=self._running, started=self._started, restarts=self._restarts
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<Supervisor running={s.running} restarts={s.restarts}>"
