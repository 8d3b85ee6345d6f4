"""The storage contract, checked against every backend in ``STORE_FACTORIES``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from trio.testing import MockClock

from backends import StorageBackend, StorageClosedError, ops
from tests.backends.harness import StoreHarness, TextStore

Advance = Callable[[float], Any]
Units = Callable[[float], float]

ODD_KEYS = [
    "with space",
    "a/b/c",
    "..",
    "../escape",
    "/absolute",
    "trailing/",
    "ünï©ødé 🙂",
    "",
    "nul\x00inside",
    "percent%_underscore",
    "x" * 300,
]


class TestRoundTrip:
    async def test_set_get_delete(self, store: Any) -> None:
        """A value set is read back, and is gone after delete."""
        await store.set("k", b"value")
        assert await store.get("k") == b"value"
        await store.delete("k")
        assert await store.get("k") is None

    async def test_absent_key_is_none(self, store: Any) -> None:
        """A key never set reads as None."""
        assert await store.get("never-set") is None

    async def test_delete_absent_key_is_not_an_error(self, store: Any) -> None:
        """Deleting a key that is not there does nothing and raises nothing."""
        await store.delete("never-set")
        assert await store.get("never-set") is None

    async def test_overwrite(self, store: Any) -> None:
        """A second set replaces the first value."""
        await store.set("k", b"first")
        await store.set("k", b"second")
        assert await store.get("k") == b"second"

    async def test_empty_value(self, store: Any) -> None:
        """b"" is a value, not an absence."""
        await store.set("empty", b"")
        assert await store.get("empty") == b""
        assert await store.get_many(["empty"]) == [b""]

    async def test_ten_megabyte_value(self, store: Any) -> None:
        """A 10 MB value round-trips byte for byte."""
        value = bytes(range(256)) * (10 * 1024 * 1024 // 256)
        await store.set("big", value)
        assert await store.get("big") == value

    @pytest.mark.parametrize("key", ODD_KEYS, ids=range(len(ODD_KEYS)))
    async def test_odd_keys(self, store: Any, key: str) -> None:
        """Spaces, slashes, dots, unicode, NUL and the empty key are ordinary keys."""
        await store.set(key, b"odd:" + key.encode("utf-8"))
        assert await store.get(key) == b"odd:" + key.encode("utf-8")
        assert await store.get(key + "-other") is None
        await store.delete(key)
        assert await store.get(key) is None

    async def test_odd_keys_do_not_collide(self, store: Any) -> None:
        """Every odd key holds its own value at the same time."""
        await store.set_many({key: key.encode("utf-8") + b"!" for key in ODD_KEYS})
        assert await store.get_many(ODD_KEYS) == [key.encode("utf-8") + b"!" for key in ODD_KEYS]


class TestTTL:
    """Every test here requests autojump_clock: the memory stores expire on trio's clock."""

    async def test_entry_expires_after_ttl(
        self, store: Any, advance: Advance, units: Units, autojump_clock: MockClock
    ) -> None:
        """An entry is there before its TTL runs out and gone after."""
        await store.set("k", b"v", ttl=units(10))
        await advance(5)
        assert await store.get("k") == b"v"
        await advance(6)
        assert await store.get("k") is None
        assert await store.get_many(["k"]) == [None]

    async def test_no_ttl_persists(
        self, store: Any, advance: Advance, autojump_clock: MockClock
    ) -> None:
        """An entry set with ttl=None is still there long after."""
        await store.set("k", b"v", ttl=None)
        await advance(50)
        assert await store.get("k") == b"v"

    async def test_overwrite_without_ttl_clears_the_old_ttl(
        self, store: Any, advance: Advance, units: Units, autojump_clock: MockClock
    ) -> None:
        """Rewriting an entry without a TTL makes it permanent."""
        await store.set("k", b"old", ttl=units(10))
        await store.set("k", b"new")
        await advance(20)
        assert await store.get("k") == b"new"

    async def test_overwrite_with_ttl_sets_a_new_deadline(
        self, store: Any, advance: Advance, units: Units, autojump_clock: MockClock
    ) -> None:
        """Rewriting an entry with a TTL counts from the rewrite."""
        await store.set("k", b"old", ttl=units(10))
        await advance(6)
        await store.set("k", b"new", ttl=units(10))
        await advance(6)
        assert await store.get("k") == b"new"
        await advance(6)
        assert await store.get("k") is None

    async def test_set_many_ttl(
        self, store: Any, advance: Advance, units: Units, autojump_clock: MockClock
    ) -> None:
        """set_many applies its TTL to every item."""
        await store.set_many({"a": b"1", "b": b"2"}, ttl=units(10))
        await store.set("c", b"3")
        await advance(11)
        assert await store.get_many(["a", "b", "c"]) == [None, None, b"3"]

    async def test_remaining_ttl(
        self,
        store: Any,
        store_harness: StoreHarness,
        advance: Advance,
        units: Units,
        autojump_clock: MockClock,
    ) -> None:
        """A store that reports TTLs reports what is left; one that does not, None."""
        await store.set("ttl", b"v", ttl=units(10))
        await store.set("forever", b"w")
        await advance(4)
        readings = await ops.get_many_with_ttl(store, ["ttl", "forever", "absent"])
        if not ops.reports_ttl(store):
            assert readings == [(b"v", None), (b"w", None), (None, None)]
        elif store_harness.exact_clock:
            assert readings == [(b"v", units(6)), (b"w", None), (None, None)]
        else:
            (value, remaining), *rest = readings
            assert value == b"v"
            assert remaining is not None
            # Redis answers in whole milliseconds: 6 units is 0.8999999999999999 s as a
            # float, and a PTTL of exactly 900 ms must pass.
            assert 0 < remaining <= round(units(6), 3)
            assert rest == [(b"w", None), (None, None)]


class TestBatch:
    async def test_get_many_order_and_misses(self, store: Any) -> None:
        """get_many answers each key in order, None for misses, repeats included."""
        await store.set_many({"a": b"1", "c": b"3"})
        assert await store.get_many(["c", "b", "a", "c"]) == [b"3", None, b"1", b"3"]

    async def test_empty_batches(self, store: Any) -> None:
        """An empty get_many returns [] and an empty set_many stores nothing."""
        assert await store.get_many([]) == []
        await store.set_many({})
        assert await store.get_many(["a"]) == [None]

    async def test_set_many_overwrites(self, store: Any) -> None:
        """set_many replaces existing values."""
        await store.set("a", b"old")
        await store.set_many({"a": b"new", "b": b"2"})
        assert await store.get_many(["a", "b"]) == [b"new", b"2"]

    async def test_ops_batch_functions(self, store: Any) -> None:
        """backends.ops reads and writes the store in batches, in order."""
        await ops.set_many(store, {"x": b"1", "y": b"2"})
        assert await ops.get_many(store, ["y", "z", "x"]) == [b"2", None, b"1"]


class TestDeletePrefix:
    KEYS = ["a:1", "a:1x", "a:10", "a:2", "a", "b:1", "A:1"]

    async def test_removes_exactly_the_prefix(self, store: Any) -> None:
        """Only keys starting with the prefix go; siblings and shorter keys stay."""
        await store.set_many({key: key.encode() for key in self.KEYS})
        assert await store.delete_prefix("a:1x") == 1
        assert await store.get_many(self.KEYS) == [
            b"a:1",
            None,
            b"a:10",
            b"a:2",
            b"a",
            b"b:1",
            b"A:1",
        ]
        assert await store.delete_prefix("a:1") == 2
        assert await store.get_many(self.KEYS) == [None, None, None, b"a:2", b"a", b"b:1", b"A:1"]

    async def test_no_match_removes_nothing(self, store: Any) -> None:
        """A prefix that matches no key removes nothing and returns 0."""
        await store.set("a:1", b"1")
        assert await store.delete_prefix("zzz") == 0
        assert await store.get("a:1") == b"1"

    async def test_wildcard_characters_are_literal(self, store: Any) -> None:
        """% and _ in a prefix match themselves only."""
        keys = ["p%_1", "pX_1", "p%X1", "p_1"]
        await store.set_many({key: b"v" for key in keys})
        assert await store.delete_prefix("p%_") == 1
        assert await store.get_many(keys) == [None, b"v", b"v", b"v"]

    async def test_unicode_prefix(self, store: Any) -> None:
        """A non-ASCII prefix removes its own keys, not the next code point's."""
        keys = ["é", "é1", "ê", "e", "\U0010ffff", "\U0010ffffz", "z"]
        await store.set_many({key: b"v" for key in keys})
        assert await store.delete_prefix("é") == 2
        assert await store.delete_prefix("\U0010ffff") == 2
        assert await store.get_many(keys) == [None, None, b"v", b"v", None, None, b"v"]

    async def test_empty_prefix_removes_everything(self, store: Any) -> None:
        """The empty prefix matches every key."""
        await store.set_many({"a": b"1", "b": b"2", "": b"3"})
        assert await store.delete_prefix("") == 3
        assert await store.get_many(["a", "b", ""]) == [None, None, None]

    async def test_through_ops(self, store: Any) -> None:
        """ops.delete_prefix reaches the store's delete_prefix."""
        await store.set_many({"n:1": b"1", "n:2": b"2", "m:1": b"3"})
        assert await ops.delete_prefix(store, "n:") == 2
        assert await store.get_many(["n:1", "n:2", "m:1"]) == [None, None, b"3"]


class TestTextStores:
    async def test_str_returning_store_is_read_as_bytes(self, store: Any) -> None:
        """A store whose get returns str is accepted: ops hands back UTF-8 bytes."""
        text_store = TextStore(store)
        await text_store.set("k", "héllo".encode())
        assert await text_store.get("k") == "héllo"
        assert await ops.get(text_store, "k") == "héllo".encode()
        assert await ops.get_many(text_store, ["k", "absent"]) == ["héllo".encode(), None]
        assert ops.as_bytes(await text_store.get("k")) == "héllo".encode()


class TestBadInput:
    async def test_non_str_key(self, store: Any) -> None:
        """A key that is not str is a TypeError naming the type."""
        with pytest.raises(TypeError, match=r"^key must be str, not int$"):
            await store.get(42)
        with pytest.raises(TypeError, match=r"^key must be str, not bytes$"):
            await store.set(b"k", b"v")
        with pytest.raises(TypeError, match=r"^key must be str, not NoneType$"):
            await store.delete(None)

    async def test_non_bytes_value(self, store: Any) -> None:
        """A value that is not bytes is a TypeError, and nothing is stored."""
        with pytest.raises(TypeError, match=r"^value must be bytes, not str$"):
            await store.set("k", "text")
        with pytest.raises(TypeError, match=r"^value must be bytes, not str$"):
            await store.set_many({"k": "text"})
        assert await store.get("k") is None

    @pytest.mark.parametrize("ttl", [-1, 0, float("nan"), float("inf")])
    async def test_bad_ttl_value(self, store: Any, ttl: float) -> None:
        """A TTL that is not positive and finite is a ValueError, and nothing is stored."""
        with pytest.raises(
            ValueError, match=r"^ttl must be None or a positive finite number of seconds, got "
        ):
            await store.set("k", b"v", ttl=ttl)
        assert await store.get("k") is None

    async def test_bad_ttl_type(self, store: Any) -> None:
        """A TTL that is not a number is a TypeError."""
        with pytest.raises(TypeError, match=r"^ttl must be None or a number of seconds, not str$"):
            await store.set("k", b"v", ttl="10")

    async def test_keys_as_a_string(self, store: Any) -> None:
        """get_many of a str (not a list) is a TypeError."""
        with pytest.raises(TypeError, match=r"^keys must be a sequence of str, not str$"):
            await store.get_many("abc")

    async def test_lone_surrogate_key(self, store: Any) -> None:
        """A key that is not valid unicode is a ValueError."""
        with pytest.raises(ValueError, match=r"^key must be valid unicode text, got "):
            await store.set("bad\ud800", b"v")


class TestLifecycle:
    async def test_is_a_storage_backend(self, store: Any) -> None:
        """Every store satisfies the StorageBackend protocol."""
        assert isinstance(store, StorageBackend)

    async def test_use_after_close(self, store: Any) -> None:
        """After aclose, operations raise StorageClosedError; closing twice is fine."""
        await store.aclose()
        await store.aclose()
        with pytest.raises(StorageClosedError, match=r"^\w+ is closed$"):
            await store.get("k")
        with pytest.raises(StorageClosedError):
            await store.set("k", b"v")
