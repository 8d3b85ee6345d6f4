"""Metrics collectors that export to Prometheus and OpenTelemetry (optional extras).

Both count the same things under the same label names:

* operations — ``hit``, ``stale_hit``, ``miss``, ``set``, ``delete``,
  ``fetch``, ``dedup_join``, ``stale_if_error`` — by ``cache`` and ``operation``;
  a circuit breaker's events as ``circuit_opened``, ``circuit_half_opened``,
  ``circuit_closed``, ``circuit_refused`` with its name as ``cache``;
* bytes written by ``record_set`` by ``cache``;
* errors by ``cache``, ``operation`` and error type;
* background refreshes by ``cache`` and ``result`` (``ok`` / ``failed``);
* durations (seconds) in a histogram by ``cache`` and ``operation``.

Each imports its library when constructed, never when stackquery is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, final

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter as OtelCounter
    from opentelemetry.metrics import Histogram as OtelHistogram
    from opentelemetry.metrics import Meter
    from prometheus_client import CollectorRegistry
    from prometheus_client import Counter as PromCounter
    from prometheus_client import Histogram as PromHistogram

__all__ = ["LATENCY_BUCKETS", "OpenTelemetryMetrics", "PrometheusMetrics"]

#: Histogram bucket bounds in seconds: cache operations take microseconds to seconds.
LATENCY_BUCKETS: Final = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


def _import_extra(module: str, extra: str, user: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{user} needs {module}, which is not installed: pip install 'stackquery[{extra}]'"
        ) from exc


@final
class PrometheusMetrics:
    """A collector that updates prometheus-client metrics (extra ``prometheus``).

    Metrics (``stackquery`` being ``namespace``):

    * ``stackquery_cache_operations_total{cache, operation}``
    * ``stackquery_cache_set_bytes_total{cache}``
    * ``stackquery_cache_errors_total{cache, operation, error_type}``
    * ``stackquery_cache_background_refreshes_total{cache, result}``
    * ``stackquery_cache_operation_duration_seconds{cache, operation}`` (histogram)

    Metrics are registered once per registry and namespace: a second instance
    on the same pair raises ``ValueError`` (prometheus-client's duplicate check).
    Hit rate in PromQL::

        sum(rate(stackquery_cache_operations_total{operation=~"hit|stale_hit"}[5m]))
        / sum(rate(stackquery_cache_operations_total{operation=~"hit|stale_hit|miss"}[5m]))
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        namespace: str = "stackquery",
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        """Register the metrics.

        Args:
            registry: where to register; ``None``: prometheus-client's default ``REGISTRY``.
            namespace: the metric name prefix.
            buckets: histogram bucket upper bounds in seconds.

        Raises:
            ImportError: prometheus-client is not installed; the message names the extra.
            ValueError: these metrics are already registered in ``registry``.
        """
        prom = _import_extra("prometheus_client", "prometheus", "PrometheusMetrics")
        if registry is None:
            registry = prom.REGISTRY
        common: dict[str, Any] = {"namespace": namespace, "registry": registry}
        self._operations = prom.Counter(
            "cache_operations",
            "Cache reads, writes and origin calls, by outcome.",
            ["cache", "operation"],
            **common,
        )
        self._set_bytes = prom.Counter(
            "cache_set_bytes", "Bytes of encoded values written.", ["cache"], **common
        )
        self._errors = prom.Counter(
            "cache_errors",
            "Failed cache operations, by error type.",
            ["cache", "operation", "error_type"],
            **common,
        )
        self._refreshes = prom.Counter(
            "cache_background_refreshes",
            "Finished background refreshes, by result.",
            ["cache", "result"],
            **common,
        )
        self._latency = prom.Histogram(
            "cache_operation_duration_seconds",
            "Duration of cache operations.",
            ["cache", "operation"],
            buckets=tuple(buckets),
            **common,
        )
        # labels() takes a lock and builds a key on every call; children are stable.
        self._children: dict[tuple[str, str], PromCounter] = {}
        self._latency_children: dict[tuple[str, str], PromHistogram] = {}

    def _count(self, cache_name: str, operation: str) -> None:
        child = self._children.get((cache_name, operation))
        if child is None:
            child = self._children[cache_name, operation] = self._operations.labels(
                cache_name, operation
            )
        child.inc()

    def record_hit(
        self, cache_name: str, key: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Count ``operation="hit"``."""
        self._count(cache_name, "hit")

    def record_miss(
        self, cache_name: str, key: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Count ``operation="miss"``."""
        self._count(cache_name, "miss")

    def record_set(
        self,
        cache_name: str,
        key: str | None = None,
        value_size: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Count ``operation="set"`` and add ``value_size`` to the bytes written."""
        self._count(cache_name, "set")
        if value_size is not None:
            self._set_bytes.labels(cache_name).inc(value_size)

    def record_delete(
        self, cache_name: str, key: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Count ``operation="delete"``."""
        self._count(cache_name, "delete")

    def record_latency(
        self,
        cache_name: str,
        operation: str,
        duration_seconds: float,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Observe ``duration_seconds`` in the histogram of ``operation``."""
        child = self._latency_children.get((cache_name, operation))
        if child is None:
            child = self._latency_children[cache_name, operation] = self._latency.labels(
                cache_name, operation
            )
        child.observe(duration_seconds)

    def record_error(
        self,
        cache_name: str,
        operation: str,
        error_type: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Count an error of ``error_type`` in ``operation``."""
        self._errors.labels(cache_name, operation, error_type).inc()

    def record_background_refresh(
        self,
        cache_name: str,
        success: bool,
        duration_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Count a refresh by result; observe its duration as ``"background_refresh"``."""
        self._refreshes.labels(cache_name, "ok" if success else "failed").inc()
        if duration_seconds is not None:
            self.record_latency(cache_name, "background_refresh", duration_seconds)

    def record_stale_hit(self, cache_name: str, key: str | None = None) -> None:
        """Count ``operation="stale_hit"``."""
        self._count(cache_name, "stale_hit")

    def record_fetch(self, cache_name: str, key: str | None = None) -> None:
        """Count ``operation="fetch"``."""
        self._count(cache_name, "fetch")

    def record_dedup_join(self, cache_name: str, key: str | None = None) -> None:
        """Count ``operation="dedup_join"``."""
        self._count(cache_name, "dedup_join")

    def record_stale_if_error(self, cache_name: str, key: str | None = None) -> None:
        """Count ``operation="stale_if_error"``."""
        self._count(cache_name, "stale_if_error")

    def record_circuit(self, circuit_name: str, event: str) -> None:
        """Count ``operation="circuit_<event>"`` with the breaker's name as ``cache``."""
        self._count(circuit_name, "circuit_" + event)


@final
class OpenTelemetryMetrics:
    """A collector that records to OpenTelemetry instruments (extra ``otel``).

    Instruments (attributes in braces):

    * ``stackquery.cache.operations`` counter ``{cache, operation}``
    * ``stackquery.cache.set.size`` counter, unit ``By`` ``{cache}``
    * ``stackquery.cache.errors`` counter ``{cache, operation, error.type}``
    * ``stackquery.cache.background_refreshes`` counter ``{cache, result}``
    * ``stackquery.cache.operation.duration`` histogram, unit ``s``
      ``{cache, operation}``, bucket bounds :data:`LATENCY_BUCKETS` (advisory)
    """

    def __init__(self, meter: Meter | None = None) -> None:
        """Create the instruments.

        Args:
            meter: the meter to create them on; ``None``: the global meter
                provider's meter named ``"stackquery"``.

        Raises:
            ImportError: opentelemetry-api is not installed; the message names the extra.
        """
        otel = _import_extra("opentelemetry.metrics", "otel", "OpenTelemetryMetrics")
        if meter is None:
            meter = otel.get_meter("stackquery")
        self._operations: OtelCounter = meter.create_counter(
            "stackquery.cache.operations",
            unit="{operation}",
            description="Cache reads, writes and origin calls, by outcome.",
        )
        self._set_bytes: OtelCounter = meter.create_counter(
            "stackquery.cache.set.size", unit="By", description="Bytes of encoded values written."
        )
        self._errors: OtelCounter = meter.create_counter(
            "stackquery.cache.errors",
            unit="{error}",
            description="Failed cache operations, by error type.",
        )
        self._refreshes: OtelCounter = meter.create_counter(
            "stackquery.cache.background_refreshes",
            unit="{refresh}",
            description="Finished background refreshes, by result.",
        )
        self._latency: OtelHistogram = meter.create_histogram(
            "stackquery.cache.operation.duration",
            unit="s",
            description="Duration of cache operations.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        # One attributes dict per (cache, operation), built once: no allocation per record.
        self._attributes: dict[tuple[str, str], dict[str, str]] = {}

    def _pair(self, cache_name: str, operation: str) -> dict[str, str]:
        attributes = self._attributes.get((cache_name, operation))
        if attributes is None:
            attributes = self._attributes[cache_name, operation] = {
                "cache": cache_name,
                "operation": operation,
            }
        return attributes

    def record_hit(
        self, cache_name: str, key: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Count ``operation="hit"``."""
        self._operations.add(1, self._pair(cache_name, "hit"))

    def record_miss(
        self, cache_name: str, key: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Count ``operation="miss"``."""
        self._operations.add(1, self._pair(cache_name, "miss"))

    def record_set(
        self,
        cache_name: str,
        key: str | None = None,
        value_size: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Count ``operation="set"`` and add ``value_size`` to the bytes written."""
        self._operations.add(1, self._pair(cache_name, "set"))
        if value_size is not None:
            self._set_bytes.add(value_size, {"cache": cache_name})

    def record_delete(
        self, cache_name: str, key: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Count ``operation="delete"``."""
        self._operations.add(1, self._pair(cache_name, "delete"))

    def record_latency(
        self,
        cache_name: str,
        operation: str,
        duration_seconds: float,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Record ``duration_seconds`` in the duration histogram of ``operation``."""
        self._latency.record(duration_seconds, self._pair(cache_name, operation))

    def record_error(
        self,
        cache_name: str,
        operation: str,
        error_type: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Count an error of ``error_type`` in ``operation``."""
        self._errors.add(1, {"cache": cache_name, "operation": operation, "error.type": error_type})

    def record_background_refresh(
        self,
        cache_name: str,
        success: bool,
        duration_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Count a refresh by result; record its duration as ``"background_refresh"``."""
        result = "ok" if success else "failed"
        self._refreshes.add(1, {"cache": cache_name, "result": result})
        if duration_seconds is not None:
            self.record_latency(cache_name, "background_refresh", duration_seconds)

    def record_stale_hit(self, cache_name: str, key: str | None = None) -> None:
        """Count ``operation="stale_hit"``."""
        self._operations.add(1, self._pair(cache_name, "stale_hit"))

    def record_fetch(self, cache_name: str, key: str | None = None) -> None:
        """Count ``operation="fetch"``."""
        self._operations.add(1, self._pair(cache_name, "fetch"))

    def record_dedup_join(self, cache_name: str, key: str | None = None) -> None:
        """Count ``operation="dedup_join"``."""
        self._operations.add(1, self._pair(cache_name, "dedup_join"))

    def record_stale_if_error(self, cache_name: str, key: str | None = None) -> None:
        """Count ``operation="stale_if_error"``."""
        self._operations.add(1, self._pair(cache_name, "stale_if_error"))

    def record_circuit(self, circuit_name: str, event: str) -> None:
        """Count ``operation="circuit_<event>"`` with the breaker's name as ``cache``."""
        self._operations.add(1, self._pair(circuit_name, "circuit_" + event))
