"""A warning logged at most once per interval: a store that is down fails every call."""

from __future__ import annotations

import logging
import math

import trio


class ThrottledWarning:
    """Logs a warning at most once every ``interval`` seconds of trio time.

    Args:
        logger: where the warnings go.
        interval: seconds between two warnings; the ones in between are dropped
            (the caller counts them in its statistics).
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last = -math.inf

    def warning(self, message: str, *args: object) -> None:
        """Log ``message % args`` unless a warning was logged less than ``interval`` ago."""
        now = trio.current_time()
        if now - self._last >= self._interval:
            self._last = now
            self._logger.warning(message, *args)
