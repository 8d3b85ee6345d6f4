"""Cost of the L2 entry envelope and of metrics records, side by side with their baselines.

Run: ``python tests/benchmarks/bench_entry_metrics.py``.  Prints the median of
several rounds per operation, and ratios to the baseline measured in the same run.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from typing import Any

import orjson
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

from stackquery import serializers
from stackquery._entry import pack_entry, unpack_entry
from stackquery.metrics._collector import InMemoryMetrics
from stackquery.metrics._export import OpenTelemetryMetrics, PrometheusMetrics

ROUNDS = 7


def one_kb_dict() -> dict[str, Any]:
    """A user-record-like dict whose JSON is about 1 KB."""
    return {
        "id": 42,
        "name": "Ada Lovelace",
        "email": "ada@example.org",
        "active": True,
        "score": 97.25,
        "tags": [f"tag-{i}" for i in range(20)],
        "address": {"street": "12 St James's Square", "city": "London", "zip": "SW1Y 4JH"},
        "history": [{"ts": 1712345678 + i, "event": "login", "ok": i % 3 != 0} for i in range(12)],
    }


def median_ns(fn: Callable[[], object], number: int) -> float:
    """Median over ROUNDS rounds of the cost of one call, in ns."""
    times = timeit.repeat(fn, number=number, repeat=ROUNDS)
    return statistics.median(times) / number * 1e9


def bench_entries() -> None:
    value = one_kb_dict()
    print(f"value: {len(orjson.dumps(value))} bytes of JSON")
    t = 1712345678.25
    base_dumps = median_ns(lambda: orjson.dumps(value), 20_000)
    raw_json = orjson.dumps(value)
    base_loads = median_ns(lambda: orjson.loads(raw_json), 20_000)
    print(f"  orjson.dumps (baseline)        {base_dumps / 1000:7.2f} us")
    print(f"  orjson.loads (baseline)        {base_loads / 1000:7.2f} us")
    for name, serializer in [
        ("json", serializers.json),
        ("pickle", serializers.pickle(key=b"0123456789abcdef")),
        ("msgpack", serializers.msgpack),
    ]:
        raw = pack_entry(value, data_updated_at=t, serializer=serializer)
        pack = median_ns(
            lambda s=serializer: pack_entry(value, data_updated_at=t, serializer=s), 20_000
        )
        unpack = median_ns(lambda r=raw, s=serializer: unpack_entry(r, s), 20_000)
        print(
            f"  {name:8s} pack_entry {pack / 1000:7.2f} us ({pack / base_dumps:4.2f}x dumps)"
            f"   unpack_entry {unpack / 1000:7.2f} us ({unpack / base_loads:4.2f}x loads)"
            f"   {len(raw)} bytes"
        )


class Noop:
    def record_hit(self, cache_name: str, key: str | None = None) -> None:
        pass


def bench_metrics() -> None:
    noop = Noop()
    memory = InMemoryMetrics()
    prometheus = PrometheusMetrics(registry=CollectorRegistry())
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    otel = OpenTelemetryMetrics(meter=provider.get_meter("bench"))
    base = median_ns(lambda: noop.record_hit("users"), 500_000)
    print(f"  no-op method call (baseline)   {base:7.0f} ns")
    for name, collector in [
        ("InMemoryMetrics", memory),
        ("PrometheusMetrics", prometheus),
        ("OpenTelemetryMetrics", otel),
    ]:
        hit = median_ns(lambda c=collector: c.record_hit("users"), 200_000)
        latency = median_ns(lambda c=collector: c.record_latency("users", "get", 0.00123), 200_000)
        print(
            f"  {name:21s} record_hit {hit:6.0f} ns ({hit / base:4.1f}x)"
            f"   record_latency {latency:6.0f} ns"
        )
    provider.shutdown()


def main() -> None:
    print("L2 entry, 1 KB dict (median of 7 rounds)")
    bench_entries()
    print("metrics (median of 7 rounds)")
    bench_metrics()


if __name__ == "__main__":
    main()
