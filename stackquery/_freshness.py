"""Times computed from the data, and jitter: validated when options are built, run when data lands.

``stale_time`` may be ``stale_time(data) -> float`` (a token valid until its
``expires_in``), ``refetch_interval`` may be ``refetch_interval(state) ->
float | None`` (poll a job until it is done), and ``jitter`` spreads each
fresh period by up to ``±jitter`` of it, so that keys filled together do not
go stale together.  All of it is computed when data lands, never on a fresh
hit: the hit stays a dict lookup and a flag test.

A function that raises or returns something else than a number of seconds
>= 0 (a negative, NaN, a string) is logged and counted
(``ClientStatistics.freshness_errors``), never raised: the data is kept and
is stale at once (``stale_time``), or the key stops polling (``refetch_interval``).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from typing import Any

from ._errors import InvalidOptionError
from ._retry_policy import accepts

logger = logging.getLogger("stackquery.freshness")

Validator = Callable[[object, object, Any], None]


def _got(value: object) -> str:
    return f"{type(value).__name__}: {value!r:.100}"


def number_or_function(name: str, numbers: Validator, argument: str) -> Validator:
    """An attrs validator: what ``numbers`` accepts, or a function of one ``argument``.

    Raises (from the validator):
        TypeError: a callable that cannot be called with one argument.
        InvalidOptionError: whatever ``numbers`` refuses.
    """

    def check(instance: object, attribute: object, value: Any) -> None:
        if callable(value):
            if accepts(value, 1) is False:
                raise TypeError(
                    f"{name} must be a number of seconds or a function {name}({argument}), "
                    f"got {_got(value)} which does not take 1 argument"
                )
            return
        numbers(instance, attribute, value)

    return check


def check_jitter(*, allow_none: bool) -> Validator:
    """An attrs validator of ``jitter``: a fraction in [0, 1) (or ``None``).

    Raises (from the validator):
        InvalidOptionError: not a number, or outside [0, 1).
    """

    def check(_instance: object, _attribute: object, value: Any) -> None:
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidOptionError(f"jitter must be a number in [0, 1), got {_got(value)}")
        if not 0 <= value < 1:  # NaN fails too
            raise InvalidOptionError(f"jitter must be in [0, 1), got {value!r}")

    return check


def check_seed(_instance: object, _attribute: object, value: Any) -> None:
    """An attrs validator of ``seed``: ``None`` or an int.

    Raises (from the validator):
        InvalidOptionError: anything else (a bool included).
    """
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidOptionError(f"seed must be None or an int, got {_got(value)}")


def computed_seconds(
    name: str, fn: Callable[[Any], Any], argument: Any, consequence: str
) -> float | None:
    """``fn(argument)`` as seconds >= 0 (``inf`` allowed), or ``None`` if it raised or
    returned anything else (a negative, NaN, text, ``None``, a bool).

    Logged here; the caller counts.  Never raises.
    """
    try:
        seconds = fn(argument)
    except Exception:
        logger.exception("%s function %r raised; %s", name, fn, consequence)
        return None
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or math.isnan(seconds)
        or seconds < 0
    ):
        logger.error(
            "%s function %r returned %r, not a number of seconds >= 0; %s",
            name,
            fn,
            seconds,
            consequence,
        )
        return None
    return float(seconds)


class Freshness:
    """Fresh periods and polling intervals computed when data lands, for one client.

    Owns the client's random source (``random.Random(seed)``: the global one is never
    touched) and counts the functions that raised or answered no valid time.

    Args:
        stale_time: the client's ``stale_time`` (seconds or a function of the data).
        jitter: the client's ``jitter``.
        seed: seed of the random source (``None``: from the OS).
    """

    def __init__(self, stale_time: Any, jitter: float, seed: int | None) -> None:
        self.stale_time = stale_time
        self.jitter = jitter
        self.random = random.Random(seed)
        self.errors = 0
        """Calls of a ``stale_time`` / ``refetch_interval`` / ``ttl`` function that raised
        or returned no valid number of seconds."""

    def fresh_period(self, stale_time: Any, data: Any, jitter: float | None) -> float:
        """Seconds ``data`` stays fresh: ``stale_time`` (``None``: the client's), computed
        from ``data`` if it is a function, spread by ``jitter`` (``None``: the client's).

        A function that raises or returns no number of seconds >= 0 is logged and
        counted: the data is stale at once (0 s).  Never raises.
        """
        seconds = self.stale_time if stale_time is None else stale_time
        if callable(seconds):
            seconds = self.computed("stale_time", seconds, data, "the data is stale at once")
            if seconds is None:
                return 0.0
        spread = self.jitter if jitter is None else jitter
        return jittered(seconds, spread, self.random) if spread else seconds

    def fixed_period(self, stale_time: Any, jitter: float | None = None) -> float | None:
        """:meth:`fresh_period` of any data judged by ``stale_time`` and ``jitter``
        (``None``: the client's), if it is the same for all data (seconds, no jitter),
        else ``None``.  Never raises."""
        seconds = self.stale_time if stale_time is None else stale_time
        spread = self.jitter if jitter is None else jitter
        if callable(seconds) or spread:
            return None
        return seconds  # type: ignore[no-any-return]

    def refetch_interval(self, interval: Callable[[Any], Any], state: Any) -> float | None:
        """``interval(state)``: seconds to the next refetch, or ``None`` (stop polling).

        A function that raises or returns neither ``None`` nor a number of seconds
        > 0 is logged and counted, and means ``None``.  Never raises.
        """
        seconds = self.computed(
            "refetch_interval", lambda s: _none_as_inf(interval(s)), state, "polling stops"
        )
        if seconds == 0:
            self.errors += 1
            logger.error("refetch_interval function %r returned 0; it must be > 0", interval)
            return None
        return None if seconds is None or seconds == math.inf else seconds

    def computed(
        self, name: str, fn: Callable[[Any], Any], argument: Any, consequence: str
    ) -> float | None:
        """``fn(argument)`` as seconds >= 0, or ``None`` (logged, counted)."""
        seconds = computed_seconds(name, fn, argument, consequence)
        if seconds is None:
            self.errors += 1
        return seconds


def _none_as_inf(seconds: Any) -> Any:
    """A ``refetch_interval`` function's ``None`` (stop polling) as ``inf`` (never due)."""
    return math.inf if seconds is None else seconds


def jittered(seconds: float, jitter: float, rng: random.Random) -> float:
    """``seconds`` spread uniformly over ``±jitter`` of itself (0 and ``inf`` stay as they are)."""
    if not jitter or not 0 < seconds < math.inf:
        return seconds
    return seconds * (1.0 + jitter * (2.0 * rng.random() - 1.0))


__all__ = [
    "Freshness",
    "check_jitter",
    "check_seed",
    "computed_seconds",
    "jittered",
    "number_or_function",
]
