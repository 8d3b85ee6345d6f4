"""InstrumentedStorage: one record per event, latency and errors, a broken collector."""

from __future__ import annotations

import logging

import pytest
import trio

from backends import (
    InstrumentedStorage,
    MemoryStorage,
    StorageError,
    StorageMetrics,
    StorageUnsupportedError,
)
from tests.backends.harness import FailingStore, PlainStore, RecordingMetrics, StepTimer, TextStore


def instrument(store: object) -> tuple[InstrumentedStorage, RecordingMetrics]:
    metrics = RecordingMetrics()
    wrapped = InstrumentedStorage(store, metrics, name="users", timer=StepTimer())  # type: ignore[arg-type]
    return wrapped, metrics


class TestRecords:
    async def test_each_operation(self) -> None:
        """Every operation records its events and a latency of exactly one timer step."""
        store, metrics = instrument(MemoryStorage())
        await store.set("a", b"123", ttl=10)
        assert await store.get("a") == b"123"
        assert await store.get("b") is None
        assert await store.get_many(["a", "b"]) == [b"123", None]
        await store.set_many({"c": b"1", "d": b""})
        await store.delete("a")
        assert await store.delete_prefix("c") == 1
        assert metrics.calls == [
            ("latency", "users", "set", 1.0),
            ("set", "users", "a", 3),
            ("latency", "users", "get", 1.0),
            ("hit", "users", "a"),
            ("latency", "users", "get", 1.0),
            ("miss", "users", "b"),
            ("latency", "users", "get_many", 1.0),
            ("hit", "users", "a"),
            ("miss", "users", "b"),
            ("latency", "users", "set_many", 1.0),
            ("set", "users", "c", 1),
            ("set", "users", "d", 0),
            ("latency", "users", "delete", 1.0),
            ("delete", "users", "a"),
            ("latency", "users", "delete_prefix", 1.0),
            ("delete", "users", "c"),
        ]

    async def test_reads_with_ttl(self) -> None:
        """get_with_ttl and get_many_with_ttl record as get and get_many."""
        store, metrics = instrument(MemoryStorage())
        await store.set("a", b"1")
        metrics.calls.clear()
        assert await store.get_with_ttl("a") == (b"1", None)
        assert await store.get_many_with_ttl(["a", "zz"]) == [(b"1", None), (None, None)]
        assert metrics.calls == [
            ("latency", "users", "get", 1.0),
            ("hit", "users", "a"),
            ("latency", "users", "get_many", 1.0),
            ("hit", "users", "a"),
            ("miss", "users", "zz"),
        ]

    async def test_failure_records_latency_and_error(self) -> None:
        """A failing operation records latency and its error type, then raises it unchanged."""
        inner = FailingStore()
        store, metrics = instrument(inner)
        with pytest.raises(StorageError) as caught:
            await store.get("k")
        assert caught.value is inner.error
        with pytest.raises(StorageError):
            await store.delete_prefix("p")
        assert metrics.calls == [
            ("latency", "users", "get", 1.0),
            ("error", "users", "get", "StorageError"),
            ("latency", "users", "delete_prefix", 1.0),
            ("error", "users", "delete_prefix", "StorageError"),
        ]

    async def test_missing_delete_prefix_is_recorded(self) -> None:
        """delete_prefix on a store without it raises StorageUnsupportedError, recorded."""
        store, metrics = instrument(PlainStore())
        with pytest.raises(StorageUnsupportedError, match=r"^PlainStore has no delete_prefix$"):
            await store.delete_prefix("p")
        assert metrics.calls == [
            ("latency", "users", "delete_prefix", 1.0),
            ("error", "users", "delete_prefix", "StorageUnsupportedError"),
        ]

    async def test_bad_input_records_nothing(self) -> None:
        """A call rejected for bad input records no event."""
        store, metrics = instrument(MemoryStorage())
        with pytest.raises(TypeError, match=r"^value must be bytes, not str$"):
            await store.set("k", "v")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^ttl must be None or a positive finite number"):
            await store.set_many({"k": b"v"}, ttl=-1)
        assert metrics.calls == []

    async def test_cancelled_operation_records_nothing(self) -> None:
        """An operation cancelled before it completes records no event."""
        store, metrics = instrument(MemoryStorage())
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.get("k")
        assert scope.cancelled_caught
        assert metrics.calls == []


class TestWrapping:
    async def test_text_store_values_come_back_as_bytes(self) -> None:
        """A wrapped store that returns str is read as UTF-8 bytes."""
        inner = TextStore(MemoryStorage())
        store, _ = instrument(inner)
        await store.set("k", "é".encode())
        assert await store.get("k") == "é".encode()
        assert await store.get_many(["k"]) == ["é".encode()]

    async def test_reports_ttl_follows_the_wrapped_store(self) -> None:
        """The wrapper reports TTLs exactly when the wrapped store does."""
        assert instrument(MemoryStorage())[0].reports_ttl is True
        plain, _ = instrument(PlainStore())
        assert plain.reports_ttl is False
        await plain.set("k", b"v")
        assert await plain.get_with_ttl("k") == (b"v", None)

    async def test_broken_collector_is_logged_not_raised(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A collector that raises is logged; the storage operation still succeeds."""

        class BrokenMetrics(RecordingMetrics):
            def record_hit(self, cache_name: str, key: str | None = None) -> None:
                raise RuntimeError("collector bug")

        inner = MemoryStorage()
        store = InstrumentedStorage(inner, BrokenMetrics(), name="users")
        await inner.set("k", b"v")
        with caplog.at_level(logging.ERROR, logger="backends._instrumented"):
            assert await store.get("k") == b"v"
        assert [record.getMessage() for record in caplog.records] == [
            "metrics collector failed in record_hit"
        ]

    async def test_aclose_closes_the_wrapped_store(self) -> None:
        """Closing the wrapper closes the store inside."""
        inner = MemoryStorage()
        async with InstrumentedStorage(inner, RecordingMetrics()):
            pass
        with pytest.raises(StorageError, match=r"^MemoryStorage is closed$"):
            await inner.get("k")

    def test_recording_metrics_satisfies_the_protocol(self) -> None:
        """The test collector has the StorageMetrics methods."""
        assert isinstance(RecordingMetrics(), StorageMetrics)

    def test_not_a_store(self) -> None:
        """Wrapping something that is not a store is a TypeError."""
        with pytest.raises(TypeError, match=r"^store must be a storage backend, not int$"):
            InstrumentedStorage(3, RecordingMetrics())  # type: ignore[arg-type]

    def test_default_name(self) -> None:
        """Without name=, events are recorded under "default"."""
        assert InstrumentedStorage(MemoryStorage(), RecordingMetrics()).name == "default"
