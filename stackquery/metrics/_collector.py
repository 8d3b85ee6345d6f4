"""Metrics: the collector protocol the cache reports to, and an in-memory collector.

The first seven methods are named and shaped after advanced-caching's
``MetricsCollector``; ``record_stale_hit``, ``record_fetch`` and
``record_dedup_join`` are stackquery's own, so a collector written for
advanced-caching needs those three added.  The client calls a collector only
when one is configured (``metrics=None`` costs nothing on the hot path).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol, final, runtime_checkable

import attrs

from ._histogram import LatencyHistogram

__all__ = ["InMemoryMetrics", "MetricsCollector"]


@runtime_checkable
class MetricsCollector(Protocol):
    """Receives what a cache does.  Every method must be cheap and must not raise on valid input.

    ``cache_name`` names the cache (a decorated function, a query client);
    ``key`` is the cache key when the caller has one; ``metadata`` is free-form
    and may be ignored.
    """

    def record_hit(
        self, cache_name: str, key: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """A read was served fresh from the cache."""
        ...

    def record_miss(
        self, cache_name: str, key: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """A read found nothing usable in the cache."""
        ...

    def record_set(
        self,
        cache_name: str,
        key: str | None = None,
        value_size: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """A value was written; ``value_size`` is its encoded size in bytes when known."""
        ...

    def record_delete(
        self, cache_name: str, key: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """A value was removed."""
        ...

    def record_latency(
        self,
        cache_name: str,
        operation: str,
        duration_seconds: float,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """``operation`` (``"get"``, ``"fetch"``, ``"l2_get"`` ...) took ``duration_seconds``."""
        ...

    def record_error(
        self,
        cache_name: str,
        operation: str,
        error_type: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """``operation`` failed with an error of class ``error_type``."""
        ...

    def record_background_refresh(
        self,
        cache_name: str,
        success: bool,
        duration_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """A background refresh (``@bg``, a refetch interval) finished."""
        ...

    def record_stale_hit(self, cache_name: str, key: str | None = None) -> None:
        """A read was served stale from the cache while a refetch was started."""
        ...

    def record_fetch(self, cache_name: str, key: str | None = None) -> None:
        """The origin (``query_fn``) was called."""
        ...

    def record_dedup_join(self, cache_name: str, key: str | None = None) -> None:
        """A caller joined a fetch already in flight instead of starting one."""
        ...


@attrs.define(eq=False)
class _CacheCounters:
    """Everything counted for one cache name."""

    hits: int = 0
    stale_hits: int = 0
    misses: int = 0
    fetches: int = 0
    dedup_joins: int = 0
    sets: int = 0
    set_bytes: int = 0
    deletes: int = 0
    refreshes_ok: int = 0
    refreshes_failed: int = 0
    errors: dict[tuple[str, str], int] = attrs.field(factory=dict)
    latency: dict[str, LatencyHistogram] = attrs.field(factory=dict)
    stale_if_error: int = 0
    circuit: dict[str, int] = attrs.field(factory=dict)
    """Circuit breaker events (``opened``, ``half_opened``, ``closed``, ``refused``) by name."""


_COUNTER_FIELDS: Final = (
    "hits",
    "stale_hits",
    "misses",
    "fetches",
    "dedup_joins",
    "sets",
    "set_bytes",
    "deletes",
    "stale_if_error",
)


@final
@attrs.define(eq=False)
class InMemoryMetrics:
    """Counts and latency histograms per cache name, in this process.

    Memory is bounded by the number of cache names, operations and error
    types (all fixed by the program), never by the number of keys or calls:
    ``key`` and ``metadata`` are accepted and ignored.  Call it from one
    thread (the trio thread); increments are not atomic across threads.
    """

    _caches: dict[str, _CacheCounters] = attrs.field(init=False, factory=dict)

    def _counters(self, cache_name: str) -> _CacheCounters:
        counters = self._caches.get(cache_name)
        if counters is None:
            counters = self._caches[cache_name] = _CacheCounters()
        return counters

    def record_hit(
        self, cache_name: str, key: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Count a fresh hit."""
        self._counters(cache_name).hits += 1

    def record_miss(
        self, cache_name: str, key: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Count a miss."""
        self._counters(cache_name).misses += 1

    def record_set(
        self,
        cache_name: str,
        key: str | None = None,
        value_size: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Count a write, and its size in ``set_bytes`` when given."""
        counters = self._counters(cache_name)
        counters.sets += 1
        if value_size is not None:
            counters.set_bytes += value_size

    def record_delete(
        self, cache_name: str, key: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Count a delete."""
        self._counters(cache_name).deletes += 1

    def record_latency(
        self,
        cache_name: str,
        operation: str,
        duration_seconds: float,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Add a duration to ``operation``'s histogram.

        Raises:
            ValueError: ``duration_seconds`` is nan.
        """
        latency = self._counters(cache_name).latency
        histogram = latency.get(operation)
        if histogram is None:
            histogram = latency[operation] = LatencyHistogram()
        histogram.add(duration_seconds)

    def record_error(
        self,
        cache_name: str,
        operation: str,
        error_type: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Count an error of ``error_type`` in ``operation``."""
        errors = self._counters(cache_name).errors
        errors[operation, error_type] = errors.get((operation, error_type), 0) + 1

    def record_background_refresh(
        self,
        cache_name: str,
        success: bool,
        duration_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Count a refresh as ok or failed; its duration goes to ``"background_refresh"``.

        Raises:
            ValueError: ``duration_seconds`` is nan.
        """
        counters = self._counters(cache_name)
        if success:
            counters.refreshes_ok += 1
        else:
            counters.refreshes_failed += 1
        if duration_seconds is not None:
            self.record_latency(cache_name, "background_refresh", duration_seconds)

    def record_stale_hit(self, cache_name: str, key: str | None = None) -> None:
        """Count a stale hit."""
        self._counters(cache_name).stale_hits += 1

    def record_fetch(self, cache_name: str, key: str | None = None) -> None:
        """Count a call of the origin."""
        self._counters(cache_name).fetches += 1

    def record_dedup_join(self, cache_name: str, key: str | None = None) -> None:
        """Count a caller that joined a fetch in flight."""
        self._counters(cache_name).dedup_joins += 1

    def record_stale_if_error(self, cache_name: str, key: str | None = None) -> None:
        """Count a read past max age that got the last good value because the refetch failed."""
        self._counters(cache_name).stale_if_error += 1

    def record_circuit(self, circuit_name: str, event: str) -> None:
        """Count a circuit breaker's ``event`` (``opened``, ``half_opened``, ``closed``,
        ``refused``) under the breaker's name."""
        events = self._counters(circuit_name).circuit
        events[event] = events.get(event, 0) + 1

    def get_stats(self) -> dict[str, Any]:
        """Return a snapshot of everything counted so far.

        Returns:
            ``{"caches": {name: stats}, "totals": stats}`` where ``stats`` has
            ``hits``, ``stale_hits``, ``misses``, ``fetches``, ``dedup_joins``,
            ``sets``, ``set_bytes``, ``deletes``, ``stale_if_error`` (reads served
            the last good value past max age because the refetch failed),
            ``circuit`` (``{event: n}`` of a circuit breaker of that name), ``errors`` (total),
            ``errors_by_type`` (``{operation: {error_type: n}}``),
            ``background_refreshes`` (``{"ok": n, "failed": n}``), ``hit_rate``
            (``(hits + stale_hits) / (hits + stale_hits + misses)``, 0.0 before
            any read) and ``latency`` (``{operation: LatencyHistogram.summary()}``).
            The result is a fresh dict: later records do not change it.
        """
        caches = {name: _stats([counters]) for name, counters in self._caches.items()}
        return {"caches": caches, "totals": _stats(self._caches.values())}

    def reset(self) -> None:
        """Forget everything counted so far."""
        self._caches.clear()


def _stats(group: Iterable[_CacheCounters]) -> dict[str, Any]:
    sums = dict.fromkeys(_COUNTER_FIELDS, 0)
    refreshes = {"ok": 0, "failed": 0}
    errors_by_type: dict[str, dict[str, int]] = {}
    latency: dict[str, LatencyHistogram] = {}
    circuit: dict[str, int] = {}
    for counters in group:
        for event, n in counters.circuit.items():
            circuit[event] = circuit.get(event, 0) + n
        for field in _COUNTER_FIELDS:
            sums[field] += getattr(counters, field)
        refreshes["ok"] += counters.refreshes_ok
        refreshes["failed"] += counters.refreshes_failed
        for (operation, error_type), n in counters.errors.items():
            by_type = errors_by_type.setdefault(operation, {})
            by_type[error_type] = by_type.get(error_type, 0) + n
        for operation, histogram in counters.latency.items():
            latency.setdefault(operation, LatencyHistogram()).merge(histogram)
    served = sums["hits"] + sums["stale_hits"]
    reads = served + sums["misses"]
    return {
        **sums,
        "hit_rate": served / reads if reads else 0.0,
        "errors": sum(n for by_type in errors_by_type.values() for n in by_type.values()),
        "errors_by_type": errors_by_type,
        "background_refreshes": refreshes,
        "circuit": circuit,
        "latency": {op: histogram.summary() for op, histogram in latency.items()},
    }
