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
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import trio

from ._circuit import CircuitOpenError
from ._errors import InvalidOptionError
from ._retry_policy import RetryPredicate, decide_retry

T = TypeVar("T")

RetryDelay = Callable[[int], float] | float
"""Seconds before a retry: a number, or a function of the 0-based retry number."""


def default_retry_delay(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based).

    ``min(2**attempt, 30)`` scaled by a random factor in [0.5, 1) so that
    many clients failing together do not retry in lockstep.
    """
    return min(2.0**attempt, 30.0) * (0.5 + random.random() / 2)


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    should_retry: RetryPredicate,
    delay: Callable[[int, Exception], float],
    on_failed_attempt: Callable[[int, Exception], object] | None = None,
    first_error: Exception | None = None,
) -> tuple[bool, T | Exception]:
    """Call ``attempt`` until it returns or ``should_retry`` says to stop.

    After a failed attempt it asks ``should_retry(failure_count, error)``
    (``failure_count``: failed attempts before this one, 0 at the first);
    to go on it calls ``on_failed_attempt(failures, error)`` and sleeps
    ``delay(failure_count, error)``.  Returns ``(True, value)``, or
    ``(False, error)`` with the last attempt's error, or the error
    ``should_retry`` or ``delay`` raised (then no further attempt is made;
    ``delay``'s error gets the attempt's error as its cause if it has none).
    An attempt refused by an open circuit breaker (:class:`CircuitOpenError`)
    ends the call at once: it is not retried, not counted as a failed attempt,
    and ``should_retry`` is not asked about it.  Cancellation is not an error:
    it propagates at once, and no further attempt is made.  ``first_error``:
    the first attempt was made already (by the caller) and raised it.
    """
    failure_count = 0
    error = first_error
    while True:
        if error is None:
            try:
                return True, await attempt()
            except Exception as exc:
                error = exc
        if isinstance(error, CircuitOpenError):
            return False, error  # an open circuit: no origin call was made, none is retried
        try:
            again = decide_retry(should_retry, failure_count, error)
        except InvalidOptionError as exc:  # the predicate raised: no retry, its error ends the call
            return False, exc
        if not again:
            return False, error
        if on_failed_attempt is not None:
            on_failed_attempt(failure_count + 1, error)
        try:
            seconds = delay(failure_count, error)
        except Exception as exc:  # no delay, no retry: this error ends the call
            if exc.__cause__ is None:
                exc.__cause__ = error
            return False, exc
        await trio.sleep(seconds)
        failure_count += 1
        error = None


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


__all__ = ["Backoff", "RetryDelay", "call_with_retries", "default_retry_delay"]
