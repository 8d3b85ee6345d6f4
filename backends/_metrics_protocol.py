"""What :class:`~backends.InstrumentedStorage` needs from a metrics collector.

The method names are those of advanced-caching's ``MetricsCollector``, so a
collector written for it (or stackquery's own) plugs in without this package
importing either.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class StorageMetrics(Protocol):
    """Receives one call per storage event; must not block (it runs on the event loop)."""

    def record_hit(self, cache_name: str, key: str | None = None) -> None:
        """A read found a value."""
        ...

    def record_miss(self, cache_name: str, key: str | None = None) -> None:
        """A read found nothing."""
        ...

    def record_set(
        self, cache_name: str, key: str | None = None, value_size: int | None = None
    ) -> None:
        """A value of ``value_size`` bytes was written."""
        ...

    def record_delete(self, cache_name: str, key: str | None = None) -> None:
        """A key (or, for ``delete_prefix``, a prefix) was deleted."""
        ...

    def record_latency(self, cache_name: str, operation: str, duration_seconds: float) -> None:
        """``operation`` took ``duration_seconds``, whether it succeeded or failed."""
        ...

    def record_error(self, cache_name: str, operation: str, error_type: str) -> None:
        """``operation`` raised an exception of the class named ``error_type``."""
        ...
