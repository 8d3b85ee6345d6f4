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


def jittered(seconds: float, jitter: float, rng: random.Random) -> float:
    """``seconds`` spread uniformly over ``±jitter`` of itself (0 and ``inf`` stay as they are)."""
    if not jitter or not 0 < seconds < math.inf:
        return seconds
    return seconds * (1.0 + jitter * (2.0 * rng.random() - 1.0))


__all__ = [
    "check_jitter",
    "check_seed",
    "computed_seconds",
    "jittered",
    "number_or_function",
]
