"""The origin guards of a decorator (``stale_if_error=``, ``circuit=``): checked when decorating."""

from __future__ import annotations

import math
from typing import Any

from .._circuit import CircuitBreaker
from .._client import QueryClient
from .._errors import InvalidOptionError
from .._options import QueryOptions
from .._state import QueryStatus


def checked_guards(
    who: str, stale_if_error: object, circuit: object
) -> tuple[float, CircuitBreaker | None]:
    """Return ``(stale_if_error, circuit)`` once valid; ``who`` names the decorator in errors.

    A decorator's ``stale_if_error`` is its own (``None`` counts as 0), not the
    client's: it also decides how long the value is kept past its max age.

    Raises:
        InvalidOptionError: ``stale_if_error`` is not ``None`` or a number of seconds >= 0.
        TypeError: ``circuit`` is not ``None`` or a :class:`CircuitBreaker`.
    """
    if stale_if_error is not None and (
        isinstance(stale_if_error, bool)
        or not isinstance(stale_if_error, int | float)
        or math.isnan(stale_if_error)
        or stale_if_error < 0
    ):
        raise InvalidOptionError(
            f"{who}(): stale_if_error must be None or >= 0 seconds, "
            f"got {type(stale_if_error).__name__}: {stale_if_error!r}"
        )
    if circuit is not None and not isinstance(circuit, CircuitBreaker):
        raise TypeError(
            f"{who}(): circuit must be a stackquery.CircuitBreaker or None, "
            f"got {type(circuit).__name__}: {circuit!r}"
        )
    return (0.0 if stale_if_error is None else float(stale_if_error)), circuit


def record_stale_if_error(
    metrics: object, name: str, client: QueryClient, options: QueryOptions[Any]
) -> None:
    """Tell ``metrics`` of a call that waited past max age and got the last good value
    because the refetch failed (the key holds data, an error, and is past max age)."""
    snap = client.snapshots.get(options.key_hash)
    if (
        snap is not None
        and snap.status is QueryStatus.ERROR
        and snap.has_data
        and client.cache.too_old(snap, options)
    ):
        record = getattr(metrics, "record_stale_if_error", None)
        if record is not None:
            record(name)


__all__ = ["checked_guards", "record_stale_if_error"]
