"""backends.ops: calling any store uniformly, whatever optional operations it has."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from backends import (
    MemoryStorage,
    StorageError,
    StorageUnsupportedError,
    ops,
)
from tests.backends.harness import FailingStore, PlainStore


class TestAsBytes:
    def test_bytes_pass_through(self) -> None:
        """bytes come back as the same object."""
        value = b"abc"
        assert ops.as_bytes(value) is value

    def test_none_stays_none(self) -> None:
        """None (a miss) stays None."""
        assert ops.as_bytes(None) is None

    def test_str_is_encoded_as_utf8(self) -> None:
        """Text from a str-returning store becomes UTF-8 bytes."""
        assert ops.as_bytes('{"name": "Zoë"}') == '{"name": "Zoë"}'.encode()

    def test_buffers_are_copied_to_bytes(self) -> None:
        """bytearray and memoryview become bytes."""
        assert ops.as_bytes(bytearray(b"ab")) == b"ab"  # type: ignore[arg-type]
        assert ops.as_bytes(memoryview(b"cd")) == b"cd"  # type: ignore[arg-type]

    def test_other_types_are_a_storage_error(self) -> None:
        """A store returning anything else misbehaved: StorageError."""
        with pytest.raises(
            StorageError, match=r"^a store returned int; expected bytes, str or None$"
        ):
            ops.as_bytes(42)  # type: ignore[arg-type]


class TestFallbacks:
    async def test_get_many_without_batch_uses_get_in_order(
        self, autojump_clock: MockClock
    ) -> None:
        """A store with only get answers get_many in key order, 16 reads at a time."""
        store = PlainStore()
        store.delay = 1.0
        store.data = {f"k{index}": str(index).encode() for index in range(0, 40, 2)}
        keys = [f"k{index}" for index in range(40)]
        start = trio.current_time()
        values = await ops.get_many(store, keys)
        assert values == [str(index).encode() if index % 2 == 0 else None for index in range(40)]
        assert store.most_in_flight == 16
        assert trio.current_time() - start == 3.0

    async def test_set_many_without_batch_uses_set(self) -> None:
        """A store with only set gets each item with the TTL."""
        store = PlainStore()
        await ops.set_many(store, {"a": b"1", "b": b"2"}, ttl=5)
        assert (store.data, store.ttls) == ({"a": b"1", "b": b"2"}, {"a": 5.0, "b": 5.0})

    async def test_fallback_error_is_unwrapped(self) -> None:
        """The first failing single read raises as itself, not in an ExceptionGroup."""

        class BrokenGets(PlainStore):
            async def get(self, key: str) -> bytes | None:
                await trio.lowlevel.checkpoint()
                raise StorageError(f"cannot read {key}")

        with pytest.raises(StorageError, match=r"^cannot read k\d$"):
            await ops.get_many(BrokenGets(), ["k1", "k2", "k3"])

    async def test_delete_prefix_unsupported(self) -> None:
        """delete_prefix on a store lacking it: StorageUnsupportedError, a NotImplementedError."""
        with pytest.raises(
            StorageUnsupportedError, match=r"^PlainStore has no delete_prefix$"
        ) as caught:
            await ops.delete_prefix(PlainStore(), "p")
        assert isinstance(caught.value, NotImplementedError)
        assert (caught.value.backend, caught.value.operation) == ("PlainStore", "delete_prefix")

    async def test_get_many_with_ttl_fallbacks(self) -> None:
        """Stores with get_with_ttl, or with neither, still answer get_many_with_ttl."""

        class SingleTTL(PlainStore):
            async def get_with_ttl(self, key: str) -> tuple[str | None, float | None]:
                value = await self.get(key)
                return (None, None) if value is None else (value.decode(), 7.0)

        single = SingleTTL()
        await single.set("a", b"1")
        assert await ops.get_many_with_ttl(single, ["a", "b"]) == [(b"1", 7.0), (None, None)]
        assert ops.reports_ttl(single) is True
        plain = PlainStore()
        await plain.set("a", b"1")
        assert await ops.get_many_with_ttl(plain, ["a", "b"]) == [(b"1", None), (None, None)]
        assert ops.reports_ttl(plain) is False

    async def test_aclose_without_aclose(self) -> None:
        """Closing a store that has no aclose does nothing."""
        store = PlainStore()
        await ops.aclose(store)
        await store.set("k", b"v")
        assert await store.get("k") == b"v"


class TestBatchPath:
    async def test_uses_the_stores_batch_operations(self) -> None:
        """A store with get_many / set_many gets one call each, not one per key."""
        store = MemoryStorage()
        await ops.set_many(store, {"a": b"1", "b": b"2"})
        assert await ops.get_many(store, ["a", "b", "c"]) == [b"1", b"2", None]
        stats = store.statistics()
        assert (stats.sets, stats.gets) == (2, 3)

    async def test_wrong_number_of_values_is_a_storage_error(self) -> None:
        """A get_many that answers the wrong number of keys is caught."""

        class ShortAnswers(PlainStore):
            async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
                await trio.lowlevel.checkpoint()
                return [None]

        with pytest.raises(
            StorageError, match=r"^ShortAnswers\.get_many returned 1 values for 2 keys$"
        ):
            await ops.get_many(ShortAnswers(), ["a", "b"])

    async def test_values_come_back_in_a_list_of_their_own(self) -> None:
        """The list returned is not the store's own (a caller may empty it as it reads)."""

        class KeepsItsList(PlainStore):
            def __init__(self) -> None:
                super().__init__()
                self.answer: list[bytes | None] = [b"1", None]

            async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
                await trio.lowlevel.checkpoint()
                return self.answer

        store = KeepsItsList()
        values = await ops.get_many(store, ["a", "b"])
        assert values == [b"1", None]
        values.clear()
        assert store.answer == [b"1", None]

    async def test_store_errors_pass_through(self) -> None:
        """Errors from a store's own batch operations propagate as they are."""
        store = FailingStore()
        with pytest.raises(StorageError, match=r"^down$"):
            await ops.set_many(store, {"a": b"1"})
        assert store.calls == ["set_many"]


class TestBadInput:
    async def test_keys_must_be_a_sequence_of_str(self) -> None:
        """ops checks its input before calling the store."""
        store = PlainStore()
        with pytest.raises(TypeError, match=r"^keys must be a sequence of str, not str$"):
            await ops.get_many(store, "ab")
        with pytest.raises(TypeError, match=r"^key must be str, not int$"):
            await ops.get_many(store, [1])  # type: ignore[list-item]
        with pytest.raises(TypeError, match=r"^key must be str, not bytes$"):
            await ops.get_many(store, ["a", b"b"])  # type: ignore[list-item]
        with pytest.raises(ValueError, match=r"^key must be valid unicode text, got 'b\\ud800'$"):
            await ops.get_many(store, ["a", "b\ud800"])
        with pytest.raises(TypeError, match=r"^items must be a mapping of str to bytes, not list$"):
            await ops.set_many(store, [("a", b"1")])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^prefix must be str, not bytes$"):
            await ops.delete_prefix(store, b"p")  # type: ignore[arg-type]
        assert store.data == {}

    @pytest.mark.parametrize("read", [ops.get_many, ops.get_many_with_ttl])
    async def test_a_store_of_this_package_refuses_bad_keys_as_ops_does(self, read: Any) -> None:
        """Keys handed unchecked to a ByteStore (which checks them itself) are refused with
        the same errors, before any read."""
        store = MemoryStorage()
        with pytest.raises(TypeError, match=r"^keys must be a sequence of str, not str$"):
            await read(store, "ab")
        with pytest.raises(TypeError, match=r"^keys must be a sequence of str, not set$"):
            await read(store, {"a"})
        with pytest.raises(TypeError, match=r"^key must be str, not int$"):
            await read(store, ["a", 1])
        with pytest.raises(ValueError, match=r"^key must be valid unicode text, got 'b\\ud800'$"):
            await read(store, ["a", "b\ud800"])
        assert store.statistics().gets == 0
