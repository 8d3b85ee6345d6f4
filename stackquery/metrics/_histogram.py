"""A bounded latency histogram with a fixed relative error (the layout of DDSketch)."""

from __future__ import annotations

import math
from typing import Final, final

import attrs

__all__ = ["MAX_BUCKETS", "RELATIVE_ACCURACY", "LatencyHistogram"]

#: Relative accuracy of :class:`LatencyHistogram` quantiles.
RELATIVE_ACCURACY: Final = 0.01
_GAMMA: Final = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_INV_LOG_GAMMA: Final = 1 / math.log(_GAMMA)
# Durations are clamped to [1 ns, 1 day]: at most ~2,000 buckets per histogram.
_MIN_SECONDS: Final = 1e-9
_MAX_SECONDS: Final = 86_400.0
_MIN_INDEX: Final = math.ceil(math.log(_MIN_SECONDS) * _INV_LOG_GAMMA)
_MAX_INDEX: Final = math.ceil(math.log(_MAX_SECONDS) * _INV_LOG_GAMMA)
#: The most buckets a :class:`LatencyHistogram` can hold (the zero bucket included).
MAX_BUCKETS: Final = _MAX_INDEX - _MIN_INDEX + 2
_log: Final = math.log
_ceil: Final = math.ceil


@final
@attrs.define(eq=False)
class LatencyHistogram:
    """A log-bucketed histogram of durations with bounded size and relative error.

    Bucket ``i`` holds durations in ``(g^(i-1), g^i]`` with
    ``g = (1 + 0.01) / (1 - 0.01)`` and reports ``2g^i / (g + 1)``, so a
    quantile is within 1 % (relative) of the true order statistic for
    durations between 1 ns and 1 day; shorter ones count as 1 ns, longer as
    1 day, and durations <= 0 as exactly 0.  There are at most ~2,000 buckets
    whatever the number of samples (the layout of DDSketch).  ``count``,
    ``total``, ``min`` and ``max`` are exact.
    """

    _buckets: dict[int, int] = attrs.field(init=False, factory=dict)
    _zeros: int = attrs.field(init=False, default=0)
    count: int = attrs.field(init=False, default=0)
    total: float = attrs.field(init=False, default=0.0)
    min: float = attrs.field(init=False, default=math.inf)
    max: float = attrs.field(init=False, default=-math.inf)

    def add(self, seconds: float) -> None:
        """Record one duration.

        Raises:
            ValueError: ``seconds`` is nan.
        """
        if seconds > 0.0:
            if seconds < _MIN_SECONDS:
                index = _MIN_INDEX
            elif seconds > _MAX_SECONDS:
                index = _MAX_INDEX
            else:
                index = _ceil(_log(seconds) * _INV_LOG_GAMMA)
            buckets = self._buckets
            buckets[index] = buckets.get(index, 0) + 1
        elif seconds <= 0.0:
            seconds = 0.0
            self._zeros += 1
        else:
            raise ValueError("a duration must be a number of seconds, got nan")
        self.count += 1
        self.total += seconds
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    @property
    def bucket_count(self) -> int:
        """How many buckets hold samples; never more than :data:`MAX_BUCKETS`."""
        return len(self._buckets) + (1 if self._zeros else 0)

    def merge(self, other: LatencyHistogram) -> None:
        """Add every sample of ``other`` to this histogram."""
        for index, n in other._buckets.items():
            self._buckets[index] = self._buckets.get(index, 0) + n
        self._zeros += other._zeros
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """Return the ``q``-quantile: the sample of rank ``floor(q * (count - 1))``, within 1 %.

        The smallest and largest samples (rank 0 and ``count - 1``) are exact.
        Returns ``None`` for an empty histogram.

        Raises:
            ValueError: ``q`` is not between 0 and 1.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"a quantile must be between 0 and 1, got {q!r}")
        if self.count == 0:
            return None
        rank = math.floor(q * (self.count - 1))
        # The extremes are kept exactly.
        if rank == 0:
            return self.min
        if rank == self.count - 1:
            return self.max
        if rank < self._zeros:
            return 0.0
        seen = self._zeros
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen > rank:
                estimate = 2 * _GAMMA**index / (_GAMMA + 1)
                # Clamping to the exact extremes never makes the estimate worse.
                return min(max(estimate, self.min), self.max)
        raise AssertionError("bucket counts do not add up to count")  # pragma: no cover

    def summary(self) -> dict[str, float | int | None]:
        """Return count, mean, min, max, p50, p95 and p99 (seconds; ``None`` when empty)."""
        empty = self.count == 0
        return {
            "count": self.count,
            "mean": None if empty else self.total / self.count,
            "min": None if empty else self.min,
            "max": None if empty else self.max,
            "p50": self.quantile(0.50),
            "p95": self.quantile(0.95),
            "p99": self.quantile(0.99),
        }
