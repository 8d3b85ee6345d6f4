"""ChainStorage: copy-up with the remaining TTL, write-through, failures between levels."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from backends import ChainStorage, MemoryStorage, SQLiteStorage, StorageError, ops
from tests.backends.harness import FailingStore, ManualClock, PlainStore


class TestCopyUp:
    @pytest.mark.parametrize(("cap", "expected"), [(50.0, 50.0), (200.0, 70.0), (None, 70.0)])
    async def test_hit_below_is_copied_up_with_remaining_ttl_capped(
        self, autojump_clock: MockClock, cap: float | None, expected: float
    ) -> None:
        """A lower hit lands above with min(remaining, the upper level's ttl)."""
        top, bottom = MemoryStorage(), MemoryStorage()
        chain = ChainStorage(top, bottom, ttls=[cap, None])
        await bottom.set("k", b"v", ttl=100)
        await trio.sleep(30)
        assert await chain.get_with_ttl("k") == (b"v", 70.0)
        assert await top.get_with_ttl("k") == (b"v", expected)

    @pytest.mark.parametrize(("cap", "expected"), [(50.0, 50.0), (None, None)])
    async def test_entry_without_expiry_is_copied_with_the_cap(
        self, autojump_clock: MockClock, cap: float | None, expected: float | None
    ) -> None:
        """A lower hit that never expires is copied with the upper cap, or none."""
        top, bottom = MemoryStorage(), MemoryStorage()
        chain = ChainStorage(top, bottom, ttls=[cap, None])
        await bottom.set("k", b"v")
        assert await chain.get("k") == b"v"
        assert await top.get_with_ttl("k") == (b"v", expected)

    async def test_middle_hit_fills_every_level_above(self, autojump_clock: MockClock) -> None:
        """A hit at level 1 of 3 is copied to level 0 only; a hit at level 2 to both."""
        levels = [MemoryStorage(), MemoryStorage(), MemoryStorage()]
        chain = ChainStorage(*levels, ttls=[10, 40, None])
        await levels[1].set("mid", b"m", ttl=30)
        await levels[2].set("low", b"l", ttl=60)
        assert await chain.get_many(["mid", "low", "none"]) == [b"m", b"l", None]
        assert await levels[0].get_many_with_ttl(["mid", "low"]) == [(b"m", 10.0), (b"l", 10.0)]
        assert await levels[1].get_many_with_ttl(["mid", "low"]) == [(b"m", 30.0), (b"l", 40.0)]
        assert await levels[2].get("mid") is None

    async def test_wall_clock_level_under_trio_clock_level(
        self, tmp_path: Path, autojump_clock: MockClock
    ) -> None:
        """Remaining TTL carries over between a wall-clock store and a trio-clock store."""
        clock = ManualClock()
        top = MemoryStorage()
        async with SQLiteStorage(tmp_path / "l2.db", clock=clock) as bottom:
            chain = ChainStorage(top, bottom, ttls=[None, None])
            await bottom.set("k", b"v", ttl=100)
            await clock.advance(25)
            assert await chain.get("k") == b"v"
            assert await top.get_with_ttl("k") == (b"v", 75.0)
            await trio.sleep(75)
            assert await top.get("k") is None

    async def test_top_hit_does_not_touch_lower_levels(self) -> None:
        """A hit at the top answers without reading below."""
        top, bottom = MemoryStorage(), MemoryStorage()
        chain = ChainStorage(top, bottom)
        await top.set("k", b"top")
        assert await chain.get("k") == b"top"
        assert bottom.statistics().gets == 0


class TestStoresWithoutTTL:
    async def test_capped_level_gets_the_cap(self, autojump_clock: MockClock) -> None:
        """A hit from a store that cannot report TTLs is copied with the upper cap."""
        top, bottom = MemoryStorage(), PlainStore()
        chain = ChainStorage(top, bottom, ttls=[50, None])
        await bottom.set("k", b"v")
        assert await chain.get_with_ttl("k") == (b"v", None)
        assert await top.get_with_ttl("k") == (b"v", 50.0)

    async def test_uncapped_level_gets_no_copy(self) -> None:
        """Without a cap above, such a hit is not copied (it could outlive its source)."""
        top, bottom = MemoryStorage(), PlainStore()
        chain = ChainStorage(top, bottom, ttls=[None, None])
        await bottom.set("k", b"v")
        assert await chain.get("k") == b"v"
        assert await top.get("k") is None
        assert top.statistics().sets == 0

    def test_reports_ttl_only_if_every_level_does(self) -> None:
        """The chain reports TTLs exactly when all its levels do."""
        assert ops.reports_ttl(ChainStorage(MemoryStorage(), MemoryStorage())) is True
        assert ops.reports_ttl(ChainStorage(MemoryStorage(), PlainStore())) is False

    async def test_str_returning_level(self) -> None:
        """A lower level returning str is read as bytes and copied up as bytes."""

        class TextLevel(PlainStore):
            async def get(self, key: str) -> str | None:  # type: ignore[override]
                value = await super().get(key)
                return None if value is None else value.decode()

        top, bottom = MemoryStorage(), TextLevel()
        chain = ChainStorage(top, bottom, ttls=[5, None])
        await bottom.set("k", b"text")
        assert await chain.get("k") == b"text"
        assert await top.get("k") == b"text"


class TestWrites:
    async def test_set_reaches_every_level_with_capped_ttl(self, autojump_clock: MockClock) -> None:
        """set writes each level with min(ttl, that level's cap)."""
        top, middle, bottom = MemoryStorage(), MemoryStorage(), PlainStore()
        chain = ChainStorage(top, middle, bottom, ttls=[50, None, 500])
        await chain.set("k", b"v", ttl=100)
        assert await top.get_with_ttl("k") == (b"v", 50.0)
        assert await middle.get_with_ttl("k") == (b"v", 100.0)
        assert (bottom.data, bottom.ttls) == ({"k": b"v"}, {"k": 100.0})
        await chain.set("forever", b"f")
        assert await top.get_with_ttl("forever") == (b"f", 50.0)
        assert await middle.get_with_ttl("forever") == (b"f", None)
        assert bottom.ttls["forever"] == 500.0

    async def test_delete_and_delete_prefix_reach_every_level(self) -> None:
        """delete and delete_prefix remove from all levels; delete_prefix counts the most."""
        top, bottom = MemoryStorage(), MemoryStorage()
        chain = ChainStorage(top, bottom)
        await chain.set_many({"a:1": b"1", "a:2": b"2", "b": b"3"})
        await bottom.set("a:3", b"4")
        await chain.delete("b")
        assert await top.get("b") is None
        assert await bottom.get("b") is None
        assert await chain.delete_prefix("a:") == 3
        assert top.statistics().entries == 0
        assert bottom.statistics().entries == 0

    async def test_failed_write_below_clears_the_levels_above(self) -> None:
        """When a lower level refuses a write, upper levels drop their old value."""
        top, bottom = MemoryStorage(), FailingStore()
        chain = ChainStorage(top, bottom)
        await top.set("k", b"old")
        with pytest.raises(StorageError, match=r"^down$"):
            await chain.set("k", b"new")
        assert await top.get("k") is None
        assert bottom.calls == ["set_many"]

    async def test_failed_delete_still_deletes_above(self) -> None:
        """A level that fails a delete does not stop the others; the error is raised."""
        top, bottom = MemoryStorage(), FailingStore()
        chain = ChainStorage(top, bottom)
        await top.set("k", b"v")
        with pytest.raises(StorageError, match=r"^down$"):
            await chain.delete("k")
        assert await top.get("k") is None

    async def test_level_without_delete_prefix(self) -> None:
        """delete_prefix on a chain with a level lacking it raises StorageUnsupportedError."""
        top, bottom = MemoryStorage(), PlainStore()
        chain = ChainStorage(top, bottom)
        await chain.set("p:1", b"v")
        with pytest.raises(NotImplementedError, match=r"^PlainStore has no delete_prefix$"):
            await chain.delete_prefix("p:")
        assert await top.get("p:1") is None

    async def test_read_error_propagates(self) -> None:
        """A level failing a read fails the chain's read with that level's error."""
        bottom = FailingStore()
        chain = ChainStorage(MemoryStorage(), bottom)
        with pytest.raises(StorageError, match=r"^down$") as caught:
            await chain.get("k")
        assert caught.value is bottom.error

    async def test_aclose_closes_every_level(self) -> None:
        """Closing the chain closes each level."""
        top, bottom = MemoryStorage(), MemoryStorage()
        await ChainStorage(top, bottom).aclose()
        assert await _is_closed(top)
        assert await _is_closed(bottom)


class TestConstruction:
    def test_needs_a_store(self) -> None:
        """A chain of nothing is refused."""
        with pytest.raises(ValueError, match=r"^ChainStorage needs at least one store$"):
            ChainStorage()

    def test_ttls_one_per_store(self) -> None:
        """ttls must have as many entries as there are stores."""
        with pytest.raises(ValueError, match=r"^ttls must have one entry per store: 1 for 2$"):
            ChainStorage(MemoryStorage(), MemoryStorage(), ttls=[5])

    def test_bad_cap(self) -> None:
        """A negative cap is refused like a negative ttl."""
        with pytest.raises(ValueError, match=r"^ttl must be None or a positive finite number"):
            ChainStorage(MemoryStorage(), ttls=[-5])

    def test_not_a_store(self) -> None:
        """Something that is not a store is refused, naming its level."""
        with pytest.raises(
            TypeError, match=r"^ChainStorage level 1 must be a storage backend, not dict$"
        ):
            ChainStorage(MemoryStorage(), {})  # type: ignore[arg-type]


async def _is_closed(store: MemoryStorage) -> bool:
    try:
        await store.get("k")
    except StorageError:
        return True
    return False
