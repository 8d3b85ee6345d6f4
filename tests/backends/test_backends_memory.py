"""MemoryStorage: trio-clock expiry, the LRU bound and statistics."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from backends import MemoryStorage, MemoryStorageStatistics


class TestExpiry:
    async def test_expires_exactly_at_the_deadline(self, autojump_clock: MockClock) -> None:
        """An entry with ttl=10 is there at 9.5 s and gone at 10 s on the mock clock."""
        store = MemoryStorage()
        await store.set("k", b"v", ttl=10)
        await trio.sleep(9.5)
        assert await store.get_with_ttl("k") == (b"v", 0.5)
        await trio.sleep(0.5)
        assert await store.get_with_ttl("k") == (None, None)

    async def test_purge_expired(self, autojump_clock: MockClock) -> None:
        """purge_expired drops expired entries only and says how many."""
        store = MemoryStorage()
        await store.set_many({"a": b"1", "b": b"2"}, ttl=5)
        await store.set("c", b"3", ttl=50)
        await trio.sleep(6)
        assert store.statistics().entries == 3
        assert await store.purge_expired() == 2
        assert store.statistics().entries == 1


class TestLRU:
    async def test_least_recently_used_is_evicted(self) -> None:
        """Past max_entries, the entry least recently read or written goes."""
        store = MemoryStorage(max_entries=2)
        await store.set("a", b"1")
        await store.set("b", b"2")
        assert await store.get("a") == b"1"
        await store.set("c", b"3")
        assert await store.get_many(["a", "b", "c"]) == [b"1", None, b"3"]
        assert store.statistics().evictions == 1

    async def test_overwrite_does_not_evict(self) -> None:
        """Rewriting a held key at the bound evicts nothing."""
        store = MemoryStorage(max_entries=2)
        await store.set_many({"a": b"1", "b": b"2"})
        await store.set("a", b"again")
        assert await store.get_many(["a", "b"]) == [b"again", b"2"]
        assert store.statistics().evictions == 0

    @pytest.mark.parametrize(
        ("max_entries", "error", "message"),
        [
            (0, ValueError, r"^max_entries must be None or at least 1, got 0$"),
            (-3, ValueError, r"^max_entries must be None or at least 1, got -3$"),
            (2.5, TypeError, r"^max_entries must be None or an int, not float$"),
            (True, TypeError, r"^max_entries must be None or an int, not bool$"),
        ],
    )
    def test_bad_max_entries(
        self, max_entries: object, error: type[Exception], message: str
    ) -> None:
        """A max_entries that is not a positive int is refused at construction."""
        with pytest.raises(error, match=message):
            MemoryStorage(max_entries=max_entries)  # type: ignore[arg-type]


class TestStatistics:
    async def test_counts_every_operation(self, autojump_clock: MockClock) -> None:
        """statistics() counts keys read, hits, misses, keys written and deletes."""
        store = MemoryStorage()
        assert store.statistics() == MemoryStorageStatistics(
            gets=0, hits=0, misses=0, sets=0, deletes=0, prefix_deletes=0, evictions=0, entries=0
        )
        await store.set("a", b"1")
        await store.set_many({"b": b"2", "c": b"3"}, ttl=1)
        await store.get("a")
        await store.get_many(["a", "b", "zz"])
        await trio.sleep(2)
        await store.get("b")
        await store.delete("a")
        await store.delete("never")
        await store.delete_prefix("c")
        assert store.statistics() == MemoryStorageStatistics(
            gets=5, hits=3, misses=2, sets=3, deletes=2, prefix_deletes=1, evictions=0, entries=0
        )

    async def test_statistics_is_frozen(self) -> None:
        """A statistics record cannot be changed."""
        stats = MemoryStorage().statistics()
        with pytest.raises(AttributeError):
            stats.gets = 3  # type: ignore[misc]


class TestCheckpoints:
    async def test_every_operation_is_a_checkpoint(self) -> None:
        """Each operation yields to the scheduler, like any trio async function."""
        store = MemoryStorage()
        with trio.testing.assert_checkpoints():
            await store.set("k", b"v")
        with trio.testing.assert_checkpoints():
            await store.get("k")
        with trio.testing.assert_checkpoints():
            await store.get_many(["k"])
        with trio.testing.assert_checkpoints():
            await store.delete("k")
        with trio.testing.assert_checkpoints():
            await store.delete_prefix("")

    async def test_cancelled_set_has_no_effect(self) -> None:
        """A set cancelled at its checkpoint stores nothing."""
        store = MemoryStorage()
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.set("k", b"v")
        assert scope.cancelled_caught
        assert await store.get("k") is None
