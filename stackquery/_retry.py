"""Retry and backoff: the one place that decides how long to wait before trying again.

Two kinds of waiting live here.  A *retry* is an origin call tried again
after it failed (a query's fetch, a mutation): how many times and how long
between tries is the user's ``retry`` / ``retry_delay``.  A *backoff* is a
background loop waiting out an outage (the L2 writer while the store is down,
a pub/sub subscription that dropped): doubling waits up to a cap, back to the
first wait once a try succeeds.  The key's actor, mutations, the L2 writer,
the fleet and ``bg.read`` all take their waits from here.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import trio

from ._circuit import CircuitOpenError
from ._errors import InvalidOptionError

T = TypeVar("T")

RetryDelay = Callable[[int], float] | float
"""Seconds before a retry: a number, or a function of the 0-based retry number."""


def default_retry_delay(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based).

    ``min(2**attempt, 30)`` scaled by a random factor in [0.5, 1) so that
    many clients failing together do not retry in lockstep.
    """
    return min(2.0**attempt, 30.0) * (0.5 + random.random() / 2)


def retry_delay(delay: RetryDelay | None, default: RetryDelay, attempt: int) -> float:
    """Seconds before retry number ``attempt``: ``delay`` if given, else ``default``.

    Raises:
        InvalidOptionError: the ``retry_delay`` function raised, or returned
            something else than a finite number of seconds >= 0.
    """
    chosen = default if delay is None else delay
    if not callable(chosen):
        return float(chosen)  # a number, checked when the options were made
    try:
        seconds = chosen(attempt)
    except Exception as exc:
        raise InvalidOptionError(
            f"retry_delay({attempt}) raised {type(exc).__name__}: {exc}"
        ) from exc
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds < math.inf  # NaN fails too
    ):
        raise InvalidOptionError(
            f"retry_delay({attempt}) returned {seconds!r}: must be a finite number of seconds >= 0"
        )
    return float(seconds)


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    retries: int,
    delay: Callable[[int], float],
    on_failed_attempt: Callable[[int, Exception], object] | None = None,
) -> tuple[bool, T | Exception]:
    """Call ``attempt`` until it returns, at most ``retries`` + 1 times.

    Between two attempts it calls ``on_failed_attempt(failures, error)`` and
    sleeps ``delay(retry_number)``.  Returns ``(True, value)``, or
    ``(False, error)`` with the last attempt's error (or the error ``delay``
    raised: then no further attempt is made).  An attempt refused by an open
    circuit breaker (:class:`CircuitOpenError`) is not retried.  Cancellation is not
    an error: it propagates at once, and no further attempt is made.
    """
    retry_number = 0
    while True:
        try:
            return True, await attempt()
        except Exception as exc:
            error: Exception = exc
        if retry_number >= retries or isinstance(error, CircuitOpenError):
            return False, error  # an open circuit: no origin call was made, none is retried
        if on_failed_attempt is not None:
            on_failed_attempt(retry_number + 1, error)
        try:
            seconds = delay(retry_number)
        except Exception as exc:  # no delay, no retry: this error ends the call
            if exc.__cause__ is None:
                exc.__cause__ = error
            return False, exc
        await trio.sleep(seconds)
        retry_number += 1


@attrs.define
class Backoff:
    """Doubling waits for a loop riding out an outage: ``first``, ``2*first`` ... up to ``cap``.

    ``await backoff.wait()`` after a failed try; ``backoff.reset()`` after a
    good one, so the next outage starts from ``first`` again.
    """

    first: float = 0.1
    cap: float = 30.0
    _failures: int = attrs.field(default=0, init=False)

    @property
    def failures(self) -> int:
        """Failed tries since the last :meth:`reset`."""
        return self._failures

    def next_delay(self) -> float:
        """Count a failed try; return the seconds to wait before the next one."""
        delay = min(self.first * 2.0**self._failures, self.cap)
        self._failures += 1
        return delay

    async def wait(self, wake: Callable[[], Awaitable[object]] | None = None) -> None:
        """Count a failed try and sleep the next delay, or until ``wake()`` returns.

        ``wake`` is a sign that the next try may now succeed (a connection was
        made again); one that raises is ignored, and the full delay is slept.
        """
        with trio.move_on_after(self.next_delay()):
            if wake is not None:
                with contextlib.suppress(Exception):
                    await wake()
                    return
            await trio.sleep_forever()

    def reset(self) -> None:
        """A try succeeded: the next outage starts from ``first``."""
        self._failures = 0


__all__ = ["Backoff", "RetryDelay", "call_with_retries", "default_retry_delay", "retry_delay"]
