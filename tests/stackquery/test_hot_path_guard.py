"""Guards on what the benchmarks won: a regression here fails CI, not just a benchmark.

A fresh hit must stay a dict lookup and a flag test: it never yields to the
scheduler (so it cannot checkpoint), never reads the clock, and keeps no new
object.  Each is checked by driving the coroutine by hand: ``send(None)``
must finish it at once.  Memory per cached key is pinned at under 2x
today's, so that a regression to twice as much is caught.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing

import stackquery as sq

HITS = 2000


async def seven() -> int:
    return 7


def _finish_without_yielding(make_call: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``make_call()``'s coroutine by hand; fail if it yields to the scheduler."""
    coro = make_call()
    try:
        coro.send(None)  # type: ignore[attr-defined]
    except StopIteration as done:
        return done.value
    coro.close()  # type: ignore[attr-defined]
    pytest.fail("a fresh hit yielded to the scheduler (a checkpoint or a wait)")


def _no_clock(*_args: Any) -> float:
    raise AssertionError("a fresh hit read the clock")


@contextlib.contextmanager
def _clock_forbidden(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any read of trio's clock inside the block fails the test."""
    with monkeypatch.context() as patch:
        patch.setattr(trio, "current_time", _no_clock)
        patch.setattr(trio.lowlevel, "current_clock", _no_clock)
        yield


def _retained_blocks(make_call: Callable[[], Awaitable[Any]]) -> int:
    """Blocks still allocated after ``HITS`` hits beyond those after a warm-up."""
    for _ in range(50):
        _finish_without_yielding(make_call)
    before = sys.getallocatedblocks()
    for _ in range(HITS):
        _finish_without_yielding(make_call)
    return sys.getallocatedblocks() - before


class TestFreshHit:
    async def test_fetch_query_fresh_hit_never_yields_reads_no_clock_keeps_nothing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """fetch_query on fresh data: done in one step, no clock read, no object kept."""
        options = sq.QueryOptions(query_key=("guard", 1), query_fn=seven, stale_time=600.0)
        async with sq.open_query_client() as client:
            assert await client.fetch_query(options) == 7
            with _clock_forbidden(monkeypatch):  # no await inside: nothing else runs
                assert _finish_without_yielding(lambda: client.fetch_query(options)) == 7
                assert _retained_blocks(lambda: client.fetch_query(options)) <= 10

    @pytest.mark.parametrize("args", [(42,), (0,), (1,), (True,), (False,), (0.0,)])
    async def test_cache_hit_never_yields_reads_no_clock_keeps_nothing(
        self, monkeypatch: pytest.MonkeyPatch, args: tuple[Any, ...]
    ) -> None:
        """A @cache hit, whatever the argument (0, 1 and bools included): one step, nothing kept."""

        @sq.cache(600, key="guard:{}")
        async def get(n: Any) -> Any:
            return n

        async with sq.open_query_client():
            assert await get(*args) == args[0]
            with _clock_forbidden(monkeypatch):
                assert _finish_without_yielding(lambda: get(*args)) == args[0]
                assert _retained_blocks(lambda: get(*args)) <= 10

    @pytest.mark.parametrize("item_id", [42, 1, True, 0.0, "a"])
    async def test_cache_batch_hit_never_yields_reads_no_clock_keeps_nothing(
        self, monkeypatch: pytest.MonkeyPatch, item_id: Any
    ) -> None:
        """A @cache.batch hit of one id: one step, no clock read, nothing kept."""

        @sq.cache.batch(600, key="guard:{}")
        async def get(ids: list[Any]) -> dict[Any, Any]:
            return {i: i for i in ids}

        async with sq.open_query_client():
            assert await get(item_id) == item_id
            with _clock_forbidden(monkeypatch):
                assert _finish_without_yielding(lambda: get(item_id)) == item_id
                assert _retained_blocks(lambda: get(item_id)) <= 10

    @pytest.mark.parametrize(
        ("args", "kwargs"),
        [((42, 1), {}), ((0, 1), {}), ((True, 0.0), {}), ((42,), {"n": 1}), ((0,), {"n": False})],
    )
    async def test_two_argument_cache_hit_keeps_nothing(
        self, monkeypatch: pytest.MonkeyPatch, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """page(42, 1), page(0, 1), page(True, 0.0), by keyword too: one step, nothing kept."""

        @sq.cache(600, key="guard:{}:{}")
        async def page(user: Any, n: Any) -> Any:
            return (user, n)

        expected = (*args, *kwargs.values())
        async with sq.open_query_client():
            assert await page(*args, **kwargs) == expected
            with _clock_forbidden(monkeypatch):
                assert _finish_without_yielding(lambda: page(*args, **kwargs)) == expected
                assert _retained_blocks(lambda: page(*args, **kwargs)) <= 10

    @pytest.mark.parametrize("mode", ["client=", "no client open"])
    async def test_cache_hit_on_a_given_or_default_client_keeps_nothing(
        self, monkeypatch: pytest.MonkeyPatch, mode: str
    ) -> None:
        """With client= and on the run's default client: static, positional, keyword hits too."""
        async with contextlib.AsyncExitStack() as stack:
            client = None
            if mode == "client=":
                client = await stack.enter_async_context(sq.open_query_client())

            @sq.cache(600, key="flags", client=client)
            async def flags() -> str:
                return "on"

            @sq.cache(600, key="guard:{n}", client=client)
            async def get(n: Any) -> Any:
                return n

            calls: list[Callable[[], Awaitable[Any]]] = [
                flags,
                lambda: get(1),
                lambda: get(n=True),
                lambda: get(42),
            ]
            for call in calls:
                expected = await call()
                with _clock_forbidden(monkeypatch):
                    assert _finish_without_yielding(call) == expected
                    assert _retained_blocks(call) <= 10

    async def test_the_guard_catches_a_hit_that_checkpoints(self) -> None:
        """The check above can fail: a coroutine that checkpoints is caught."""

        async def checkpointing() -> int:
            await trio.lowlevel.checkpoint()
            return 1

        with pytest.raises(pytest.fail.Exception, match="yielded to the scheduler"):
            _finish_without_yielding(checkpointing)


class TestMemoryPerKey:
    async def test_a_cached_key_costs_under_340_bytes(self) -> None:
        """2,000 small values through fetch_query: under 340 B each (174 today, the stale and
        gc deadlines counted from the data through objects the keys share; 222 before; 314
        before the snapshot's shared fields moved to an interned shape and the hit record
        into it; a regression of 2x is caught)."""
        options = [sq.QueryOptions(query_key=("item", n), query_fn=seven) for n in range(2000)]
        config = sq.QueryClientConfig(stale_time=600.0)
        async with sq.open_query_client(config) as client:
            await client.fetch_query(sq.QueryOptions(query_key=("warm",), query_fn=seven))
            per_key = await _traced_per_key(lambda n: client.fetch_query(options[n]), len(options))
        assert per_key < 340

    async def test_a_key_read_with_options_built_per_read_costs_under_400_bytes(self) -> None:
        """2,000 keys read with new options each time (as applications build them): under
        400 B each, their key hash included (about 310 today: a key keeps its query_fn and
        shares the rest; 680 when each kept its options)."""
        config = sq.QueryClientConfig(stale_time=600.0)
        async with sq.open_query_client(config) as client:
            await client.fetch_query(sq.QueryOptions(query_key=("warm",), query_fn=seven))

            def read(n: int) -> Awaitable[int]:
                return client.fetch_query(sq.QueryOptions(query_key=("item", n), query_fn=seven))

            per_key = await _traced_per_key(read, 2000)
        assert per_key < 400

    async def test_a_cache_decorated_key_costs_under_700_bytes(self) -> None:
        """2,000 @cache entries: under 700 B each with their memo (351 today, 375 before the
        deadlines were counted from the data: the memo keeps key hashes, not options, and the
        client keeps no options of its own for a key whose calls share one query_fn; a
        regression of 2x is caught)."""

        @sq.cache(600, key="item:{}")
        async def get(n: int) -> int:
            return 7

        async with sq.open_query_client():
            await get(-1)
            per_key = await _traced_per_key(get, 2000)
        assert per_key < 700


async def _traced_per_key(fill: Callable[[int], Awaitable[Any]], keys: int) -> float:
    """Bytes still allocated per key after ``fill(n)`` for each of ``keys`` new keys."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(keys):
            await fill(n)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / keys
    finally:
        tracemalloc.stop()
