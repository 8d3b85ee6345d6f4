"""Expiry arithmetic shared by the stores: deadlines, remaining TTLs, metadata text."""

from __future__ import annotations

import math


def expiry_deadline(now: float, ttl: float | None) -> float | None:
    """Return the time at which an entry written at ``now`` with ``ttl`` expires."""
    return None if ttl is None else now + ttl


def is_expired(deadline: float | None, now: float) -> bool:
    """Return whether an entry with ``deadline`` is expired at ``now``."""
    return deadline is not None and now >= deadline


def remaining_ttl(deadline: float | None, now: float) -> float | None:
    """Return the seconds left before ``deadline`` (``None``: the entry never expires)."""
    return None if deadline is None else deadline - now


def cap_ttl(ttl: float | None, cap: float | None) -> float | None:
    """Return the shorter of ``ttl`` and ``cap``, where ``None`` means unbounded."""
    if ttl is None:
        return cap
    if cap is None:
        return ttl
    return min(ttl, cap)


def format_deadline(deadline: float) -> str:
    """Return ``deadline`` as text for object metadata (round-trips exactly)."""
    return repr(deadline)


def parse_deadline(text: str | None) -> float | None:
    """Return the deadline written by :func:`format_deadline` (``None`` if absent).

    Raises:
        ValueError: ``text`` is not a finite number.
    """
    if text is None:
        return None
    deadline = float(text)
    if not math.isfinite(deadline):
        raise ValueError(f"expiry must be a finite number, got {text!r}")
    return deadline
