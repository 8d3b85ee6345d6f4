"""Metrics: in-memory counts and latency quantiles, Prometheus and OpenTelemetry exporters."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

from stackquery.metrics._collector import InMemoryMetrics, MetricsCollector
from stackquery.metrics._export import LATENCY_BUCKETS, OpenTelemetryMetrics, PrometheusMetrics
from stackquery.metrics._histogram import MAX_BUCKETS, LatencyHistogram

EMPTY_STATS: dict[str, Any] = {
    "hits": 0,
    "stale_hits": 0,
    "misses": 0,
    "fetches": 0,
    "dedup_joins": 0,
    "sets": 0,
    "set_bytes": 0,
    "deletes": 0,
    "stale_if_error": 0,
    "hit_rate": 0.0,
    "errors": 0,
    "errors_by_type": {},
    "background_refreshes": {"ok": 0, "failed": 0},
    "circuit": {},
    "latency": {},
}


def exercise(metrics: MetricsCollector) -> None:
    """Record one known sequence of events on two caches."""
    for _ in range(3):
        metrics.record_hit("users", key="u:1")
    metrics.record_stale_hit("users", key="u:1")
    for _ in range(4):
        metrics.record_miss("users")
    metrics.record_fetch("users")
    metrics.record_fetch("users")
    metrics.record_dedup_join("users", key="u:2")
    metrics.record_set("users", key="u:1", value_size=100)
    metrics.record_set("users", value_size=28)
    metrics.record_delete("users")
    metrics.record_error("users", "l2_get", "StorageError")
    metrics.record_error("users", "l2_get", "StorageError")
    metrics.record_error("users", "fetch", "KeyError", metadata={"attempt": 1})
    metrics.record_latency("users", "get", 0.002)
    metrics.record_latency("users", "get", 0.004)
    metrics.record_background_refresh("flags", success=True, duration_seconds=0.5)
    metrics.record_background_refresh("flags", success=False)
    metrics.record_hit("flags")


class TestInMemoryMetrics:
    def test_is_a_collector(self) -> None:
        """InMemoryMetrics satisfies the MetricsCollector protocol."""
        assert isinstance(InMemoryMetrics(), MetricsCollector)

    def test_empty(self) -> None:
        """Before anything is recorded there are no caches and all totals are zero."""
        assert InMemoryMetrics().get_stats() == {"caches": {}, "totals": EMPTY_STATS}

    def test_counts_per_cache_and_totals(self) -> None:
        """Every event is counted under its cache and in the totals."""
        metrics = InMemoryMetrics()
        exercise(metrics)
        stats = metrics.get_stats()
        users = stats["caches"]["users"]
        assert {k: v for k, v in users.items() if k != "latency"} == {
            "hits": 3,
            "stale_hits": 1,
            "misses": 4,
            "fetches": 2,
            "dedup_joins": 1,
            "sets": 2,
            "set_bytes": 128,
            "deletes": 1,
            "stale_if_error": 0,
            "hit_rate": 0.5,
            "errors": 3,
            "errors_by_type": {"l2_get": {"StorageError": 2}, "fetch": {"KeyError": 1}},
            "background_refreshes": {"ok": 0, "failed": 0},
            "circuit": {},
        }
        assert users["latency"]["get"]["count"] == 2
        flags = stats["caches"]["flags"]
        assert flags["background_refreshes"] == {"ok": 1, "failed": 1}
        assert flags["hit_rate"] == 1.0
        assert flags["latency"]["background_refresh"] == {
            "count": 1,
            "mean": 0.5,
            "min": 0.5,
            "max": 0.5,
            "p50": 0.5,
            "p95": 0.5,
            "p99": 0.5,
        }
        totals = stats["totals"]
        assert (totals["hits"], totals["stale_hits"], totals["misses"]) == (4, 1, 4)
        assert totals["hit_rate"] == 5 / 9
        assert totals["errors"] == 3
        assert totals["background_refreshes"] == {"ok": 1, "failed": 1}
        assert sorted(totals["latency"]) == ["background_refresh", "get"]

    def test_latency_summary(self) -> None:
        """Count, mean, min and max are exact; quantiles are within 1 %."""
        metrics = InMemoryMetrics()
        exercise(metrics)
        get = metrics.get_stats()["caches"]["users"]["latency"]["get"]
        assert (get["count"], get["min"], get["max"]) == (2, 0.002, 0.004)
        assert get["mean"] == pytest.approx(0.003, rel=1e-12)
        assert get["p50"] == pytest.approx(0.002, rel=0.01)
        assert get["p99"] == pytest.approx(0.002, rel=0.01)

    def test_totals_merge_latency_across_caches(self) -> None:
        """The totals' histogram of an operation holds every cache's samples."""
        metrics = InMemoryMetrics()
        metrics.record_latency("a", "get", 0.001)
        metrics.record_latency("b", "get", 0.003)
        total = metrics.get_stats()["totals"]["latency"]["get"]
        assert (total["count"], total["min"], total["max"]) == (2, 0.001, 0.003)

    def test_stats_are_a_snapshot(self) -> None:
        """A stats dict does not change when more is recorded."""
        metrics = InMemoryMetrics()
        metrics.record_hit("c")
        stats = metrics.get_stats()
        metrics.record_hit("c")
        assert stats["caches"]["c"]["hits"] == 1
        assert metrics.get_stats()["caches"]["c"]["hits"] == 2

    def test_reset(self) -> None:
        """reset forgets everything."""
        metrics = InMemoryMetrics()
        exercise(metrics)
        metrics.reset()
        assert metrics.get_stats() == {"caches": {}, "totals": EMPTY_STATS}

    def test_nan_latency_is_refused(self) -> None:
        """A nan duration is a ValueError, and nothing is counted."""
        metrics = InMemoryMetrics()
        with pytest.raises(ValueError, match=r"^a duration must be a number of seconds, got nan$"):
            metrics.record_latency("c", "get", math.nan)
        assert metrics.get_stats()["caches"]["c"]["latency"]["get"]["count"] == 0


class TestLatencyHistogram:
    def test_empty(self) -> None:
        """An empty histogram has no quantiles."""
        assert LatencyHistogram().summary() == {
            "count": 0,
            "mean": None,
            "min": None,
            "max": None,
            "p50": None,
            "p95": None,
            "p99": None,
        }

    def test_quantile_out_of_range(self) -> None:
        """A quantile outside [0, 1] is a ValueError."""
        with pytest.raises(ValueError, match=r"^a quantile must be between 0 and 1, got 1\.5$"):
            LatencyHistogram().quantile(1.5)

    def test_uniform_milliseconds(self) -> None:
        """For 1..1000 ms, p50/p95/p99 are within 1 % of samples 500/950/990 ms."""
        histogram = LatencyHistogram()
        for ms in range(1, 1001):
            histogram.add(ms / 1000)
        assert histogram.quantile(0.50) == pytest.approx(0.500, rel=0.01)
        assert histogram.quantile(0.95) == pytest.approx(0.950, rel=0.01)
        assert histogram.quantile(0.99) == pytest.approx(0.990, rel=0.01)
        assert histogram.quantile(0.0) == 0.001
        assert histogram.quantile(1.0) == 1.0

    def test_zero_and_negative_durations_count_as_zero(self) -> None:
        """Durations <= 0 are exact zeros."""
        histogram = LatencyHistogram()
        for seconds in (0.0, -1.0, 0.0, 2.0):
            histogram.add(seconds)
        assert (histogram.quantile(0.5), histogram.min, histogram.total) == (0.0, 0.0, 2.0)
        assert histogram.quantile(1.0) == 2.0

    def test_clamped_extremes_report_exact_values(self) -> None:
        """Durations outside 1 ns .. 1 day still report min and max exactly."""
        histogram = LatencyHistogram()
        histogram.add(1e-12)
        histogram.add(1e6)
        assert (histogram.quantile(0.0), histogram.quantile(1.0)) == (1e-12, 1e6)

    def test_size_is_bounded(self) -> None:
        """A million distinct durations from 1 ns to 1 day fill at most MAX_BUCKETS buckets."""
        histogram = LatencyHistogram()
        for i in range(1_000_000):
            histogram.add(10 ** (-9 + 14 * i / 1_000_000))
        assert histogram.count == 1_000_000
        assert histogram.bucket_count == MAX_BUCKETS - 1
        histogram.add(0.0)
        assert histogram.bucket_count == MAX_BUCKETS

    @given(
        st.lists(
            st.floats(min_value=1e-9, max_value=86_400.0, allow_nan=False),
            min_size=1,
            max_size=200,
        ),
        st.sampled_from([0.0, 0.25, 0.5, 0.95, 0.99, 1.0]),
    )
    def test_quantiles_within_one_percent(self, samples: list[float], q: float) -> None:
        """Every quantile is within 1 % of the sample of rank floor(q * (n - 1))."""
        histogram = LatencyHistogram()
        for seconds in samples:
            histogram.add(seconds)
        exact = sorted(samples)[math.floor(q * (len(samples) - 1))]
        estimate = histogram.quantile(q)
        assert estimate is not None
        assert abs(estimate - exact) <= 0.01 * exact * (1 + 1e-9)

    def test_merge(self) -> None:
        """Merging adds counts, totals and extremes."""
        a, b = LatencyHistogram(), LatencyHistogram()
        a.add(0.001)
        b.add(0.0)
        b.add(0.003)
        a.merge(b)
        assert (a.count, a.min, a.max, a.total, a.bucket_count) == (3, 0.0, 0.003, 0.004, 3)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """Read one sample from a Prometheus registry."""
    return registry.get_sample_value(name, labels)


class TestPrometheusMetrics:
    def test_counts(self) -> None:
        """Operations, bytes, errors and refreshes land in labelled counters."""
        registry = CollectorRegistry()
        metrics = PrometheusMetrics(registry=registry)
        assert isinstance(metrics, MetricsCollector)
        exercise(metrics)
        ops = "stackquery_cache_operations_total"
        assert sample(registry, ops, cache="users", operation="hit") == 3.0
        assert sample(registry, ops, cache="users", operation="stale_hit") == 1.0
        assert sample(registry, ops, cache="users", operation="miss") == 4.0
        assert sample(registry, ops, cache="users", operation="fetch") == 2.0
        assert sample(registry, ops, cache="users", operation="dedup_join") == 1.0
        assert sample(registry, ops, cache="users", operation="set") == 2.0
        assert sample(registry, ops, cache="users", operation="delete") == 1.0
        assert sample(registry, ops, cache="flags", operation="hit") == 1.0
        assert sample(registry, "stackquery_cache_set_bytes_total", cache="users") == 128.0
        errors = "stackquery_cache_errors_total"
        assert (
            sample(registry, errors, cache="users", operation="l2_get", error_type="StorageError")
            == 2.0
        )
        assert (
            sample(registry, errors, cache="users", operation="fetch", error_type="KeyError") == 1.0
        )
        refreshes = "stackquery_cache_background_refreshes_total"
        assert sample(registry, refreshes, cache="flags", result="ok") == 1.0
        assert sample(registry, refreshes, cache="flags", result="failed") == 1.0

    def test_latency_histogram(self) -> None:
        """Durations land in a histogram by cache and operation, in seconds buckets."""
        registry = CollectorRegistry()
        exercise(PrometheusMetrics(registry=registry))
        duration = "stackquery_cache_operation_duration_seconds"
        get = {"cache": "users", "operation": "get"}
        assert registry.get_sample_value(f"{duration}_count", get) == 2.0
        assert registry.get_sample_value(f"{duration}_sum", get) == pytest.approx(0.006, rel=1e-12)
        assert registry.get_sample_value(f"{duration}_bucket", {**get, "le": "0.001"}) == 0.0
        assert registry.get_sample_value(f"{duration}_bucket", {**get, "le": "0.0025"}) == 1.0
        assert registry.get_sample_value(f"{duration}_bucket", {**get, "le": "0.005"}) == 2.0
        refresh = {"cache": "flags", "operation": "background_refresh"}
        assert registry.get_sample_value(f"{duration}_count", refresh) == 1.0

    def test_namespace(self) -> None:
        """The namespace prefixes every metric name."""
        registry = CollectorRegistry()
        PrometheusMetrics(registry=registry, namespace="myapp").record_miss("c")
        assert sample(registry, "myapp_cache_operations_total", cache="c", operation="miss") == 1.0
        assert (
            sample(registry, "stackquery_cache_operations_total", cache="c", operation="miss")
            is None
        )

    def test_second_instance_on_one_registry(self) -> None:
        """Registering the same metrics twice in one registry is a ValueError."""
        registry = CollectorRegistry()
        PrometheusMetrics(registry=registry)
        with pytest.raises(ValueError, match=r"^Duplicated timeseries in CollectorRegistry: "):
            PrometheusMetrics(registry=registry)

    def test_missing_library_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without prometheus-client, construction raises ImportError naming the extra."""
        monkeypatch.setitem(sys.modules, "prometheus_client", None)
        with pytest.raises(
            ImportError,
            match=r"^PrometheusMetrics needs prometheus_client, which is not installed: "
            r"pip install 'stackquery\[prometheus\]'$",
        ):
            PrometheusMetrics(registry=None)


@pytest.fixture
def otel() -> Iterator[tuple[OpenTelemetryMetrics, InMemoryMetricReader]]:
    """An OpenTelemetryMetrics on a private meter provider with an in-memory reader."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield OpenTelemetryMetrics(meter=provider.get_meter("test")), reader
    provider.shutdown()


def otel_points(reader: InMemoryMetricReader) -> dict[str, dict[frozenset[tuple[str, Any]], Any]]:
    """Collect every data point by metric name and attribute set."""
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, dict[frozenset[tuple[str, Any]], Any]] = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    attributes = frozenset((point.attributes or {}).items())
                    points.setdefault(metric.name, {})[attributes] = point
    return points


def labels(**attributes: str) -> frozenset[tuple[str, str]]:
    """An attribute set as the points dict keys it."""
    return frozenset(attributes.items())


class TestOpenTelemetryMetrics:
    def test_counts(self, otel: tuple[OpenTelemetryMetrics, InMemoryMetricReader]) -> None:
        """Operations, bytes, errors and refreshes land in counters with attributes."""
        metrics, reader = otel
        assert isinstance(metrics, MetricsCollector)
        exercise(metrics)
        points = otel_points(reader)
        ops = {k: p.value for k, p in points["stackquery.cache.operations"].items()}
        assert ops == {
            labels(cache="users", operation="hit"): 3,
            labels(cache="users", operation="stale_hit"): 1,
            labels(cache="users", operation="miss"): 4,
            labels(cache="users", operation="fetch"): 2,
            labels(cache="users", operation="dedup_join"): 1,
            labels(cache="users", operation="set"): 2,
            labels(cache="users", operation="delete"): 1,
            labels(cache="flags", operation="hit"): 1,
        }
        sizes = {k: p.value for k, p in points["stackquery.cache.set.size"].items()}
        assert sizes == {labels(cache="users"): 128}
        errors = {k: p.value for k, p in points["stackquery.cache.errors"].items()}
        assert errors == {
            labels(cache="users", operation="l2_get", **{"error.type": "StorageError"}): 2,
            labels(cache="users", operation="fetch", **{"error.type": "KeyError"}): 1,
        }
        refreshes = {k: p.value for k, p in points["stackquery.cache.background_refreshes"].items()}
        assert refreshes == {
            labels(cache="flags", result="ok"): 1,
            labels(cache="flags", result="failed"): 1,
        }

    def test_latency_histogram(
        self, otel: tuple[OpenTelemetryMetrics, InMemoryMetricReader]
    ) -> None:
        """Durations land in a seconds histogram with stackquery's bucket bounds."""
        metrics, reader = otel
        exercise(metrics)
        durations = otel_points(reader)["stackquery.cache.operation.duration"]
        get = durations[labels(cache="users", operation="get")]
        assert (get.count, get.min, get.max) == (2, 0.002, 0.004)
        assert get.sum == pytest.approx(0.006, rel=1e-12)
        assert tuple(get.explicit_bounds) == LATENCY_BUCKETS
        assert sum(get.bucket_counts) == 2
        refresh = durations[labels(cache="flags", operation="background_refresh")]
        assert (refresh.count, refresh.sum) == (1, 0.5)

    def test_missing_library_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without opentelemetry-api, construction raises ImportError naming the extra."""
        monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)
        with pytest.raises(
            ImportError,
            match=r"^OpenTelemetryMetrics needs opentelemetry\.metrics, which is not installed: "
            r"pip install 'stackquery\[otel\]'$",
        ):
            OpenTelemetryMetrics()
