"""Specification of what a ``@cache`` function keeps per call: key hashes, options built lazily.

The memo of calls holds each call shape's key hash, not its options; the
options of a call that is not a fresh hit come from the function's
validated template, and those of calls whose key holds every argument as
given share one ``query_fn`` that reads the arguments back from the key.
These tests pin what that must not change: the options are those the
constructor would make, a refetch calls the function with the arguments
the call had, and the memo stays bounded, dropping keys that left L1.
"""

from __future__ import annotations

import sys
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import stackquery as sq
from stackquery.decorators import _cached_calls
from stackquery.decorators._cached_calls import CachedCalls
from stackquery.decorators._call_options import OptionsTemplate


def state_of(func: Any) -> CachedCalls[Any]:
    """The :class:`CachedCalls` behind a decorated function."""
    state: CachedCalls[Any] = func.invalidate.__self__
    return state


class TestOptionsTemplate:
    @pytest.mark.parametrize("args", [(5,), ("a",), ((1, "b"),), (True,), (2.0,), (None,)])
    def test_built_options_equal_the_constructors(self, args: tuple[Any, ...]) -> None:
        """Every field of a call's options is what QueryOptions(...) makes of the same values."""

        async def is_ok(_failures: int, _error: BaseException) -> bool:
            return False

        @sq.cache(
            30,
            key="item:{}",
            stale=5,
            stale_if_error=7,
            circuit=sq.CircuitBreaker(),
            retry=is_ok,
            jitter=0.1,
            cache_if=bool,
            error_ttl=3,
        )
        async def get(n: Any) -> Any:
            return n

        state = state_of(get)
        built = state.build_options(args, {}, state.parts(args, {}))
        made = sq.QueryOptions(
            query_key=built.query_key,
            query_fn=built.query_fn,
            stale_time=30.0,
            gc_time=42.0,
            stale_if_error=7.0,
            circuit=built.circuit,
            retry=is_ok,
            jitter=0.1,
            cache_if=bool,
            error_ttl=3.0,
            max_stale=5.0,
        )
        for field in attrs.fields(sq.QueryOptions):
            assert getattr(built, field.name) == getattr(made, field.name), field.name

    @pytest.mark.parametrize(
        ("first", "again"),
        [((2,), (2,)), ((2,), (2.0,)), ((2.0,), (2,)), (("a",), ("a",)), ((True,), (True,))],
    )
    def test_options_rebuilt_from_the_memo_have_the_constructors_key(
        self, first: tuple[Any, ...], again: tuple[Any, ...]
    ) -> None:
        """Options built again for a memoized call shape: the key and hash of a new build."""

        @sq.cache(30, key="item:{}")
        async def get(n: Any) -> Any:
            return n

        state = state_of(get)
        state.options_for(first, {})
        state.recent.clear()
        rebuilt = state.options_for(again, {})
        made = sq.QueryOptions(query_key=rebuilt.query_key, query_fn=get)
        assert (repr(rebuilt.key), rebuilt.key_hash) == (repr(made.key), made.key_hash)
        assert rebuilt.query_key == ("fn", get.cache_name, "item:{}", *again)

    def test_a_template_keeps_each_settings_object(self) -> None:
        """The options built share the template's setting objects (stale_time by identity)."""

        @sq.cache(30, key="item:{}")
        async def get(n: int) -> int:
            return n

        state = state_of(get)
        built = state.build_options((1,), {}, state.parts((1,), {}))
        assert built.stale_time is state.stale_time
        assert built.gc_time is state.kept


class TestArgumentsOfARefetch:
    @pytest.mark.parametrize(
        "args",
        [(7, "x"), (True, None), (0, False), ((1, (2, "z")), "y"), ("a", 1.5)],
    )
    async def test_a_refetch_calls_the_function_with_the_calls_arguments(
        self, autojump_clock: trio.testing.MockClock, args: tuple[Any, ...]
    ) -> None:
        """refetch_queries calls the function again with the very arguments (types too)."""
        seen: list[tuple[Any, ...]] = []

        @sq.cache(600)
        async def get(a: Any, b: Any) -> str:
            seen.append((a, b))
            return "v"

        async with sq.open_query_client() as client:
            await get(*args)
            await client.refetch_queries(("fn", get.cache_name), wait=True)
        assert seen == [args, args]
        assert [tuple(map(type, call)) for call in seen] == [tuple(map(type, args))] * 2

    async def test_a_sync_function_is_refetched_with_its_arguments(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A plain def reads its arguments back from the key too, in a worker thread."""
        seen: list[Any] = []

        @sq.cache(600, key="user:{}")
        def get(user_id: Any) -> str:
            seen.append(user_id)
            return "v"

        async with sq.open_query_client() as client:
            assert await get("ada") == "v"
            await client.refetch_queries(("fn", get.cache_name), wait=True)
        assert seen == ["ada", "ada"]

    async def test_an_integral_float_reaches_the_function_as_a_float(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """f(2.0) is the key of f(2), but the function is called with 2.0, refetched too."""
        seen: list[Any] = []

        @sq.cache(600, key="n:{}")
        async def get(n: Any) -> str:
            seen.append(n)
            return "v"

        async with sq.open_query_client() as client:
            await get(2.0)
            await client.refetch_queries(("fn", get.cache_name), wait=True)
        assert seen == [2.0, 2.0]
        assert [type(n) for n in seen] == [float, float]

    async def test_a_parameter_left_out_of_the_key_is_passed_again(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With key="user:{user_id}", a refetch passes the other parameter the call had."""
        seen: list[tuple[int, bool]] = []

        @sq.cache(600, key="user:{user_id}")
        async def get(user_id: int, verbose: bool = False) -> str:
            seen.append((user_id, verbose))
            return "v"

        async with sq.open_query_client() as client:
            await get(4, True)
            await client.refetch_queries(("fn", get.cache_name), wait=True)
        assert seen == [(4, True), (4, True)]

    async def test_an_argument_left_out_passes_its_own_type(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """f(4, 2.0) and f(4, 2) share a key leaving the second out; each miss passes its own."""
        seen: list[Any] = []

        @sq.cache(600, key="user:{user_id}")
        async def get(user_id: int, scale: Any) -> str:
            seen.append(scale)
            return "v"

        async with sq.open_query_client() as client:
            await get(4, 2.0)
            await client.remove_queries(("fn", get.cache_name))
            await get(4, 2)
        assert [(scale, type(scale)) for scale in seen] == [(2.0, float), (2, int)]


class TestMemo:
    async def test_the_memo_keeps_key_hashes_shared_with_the_table(self) -> None:
        """A call's memo entry is the very key-hash string the L1 table holds the key by."""

        @sq.cache(600, key="item:{}")
        async def get(n: int) -> int:
            return n

        async with sq.open_query_client() as client:
            await get(12345)
            memo = state_of(get).by_args[12345]
            table_key = next(k for k in client.snapshots if k == memo)
        assert type(memo) is str
        assert table_key is memo

    async def test_a_full_memo_drops_the_keys_gone_from_l1_then_the_oldest(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Full: the memos of removed keys go first; if too few, the oldest, to 3/4 full."""
        monkeypatch.setattr(_cached_calls, "MEMO_SIZE", 8)

        @sq.cache(600, key="item:{}")
        async def get(n: int) -> int:
            return n

        memo = state_of(get).by_args
        async with sq.open_query_client():
            for n in range(8):
                await get(n)
            for n in (1, 3, 5):
                await get.invalidate(n)
            await get(8)
            assert list(memo) == [0, 2, 4, 6, 7, 8]
            for n in (9, 10, 11):
                await get(n)  # 11: full again, every key live: the oldest two go
            assert list(memo) == [4, 6, 7, 8, 9, 10, 11]

    async def test_a_memo_swept_many_times_stays_in_the_smallest_table_for_it(self) -> None:
        """10,000 calls of new arguments, every key live: the memo holds at most MEMO_SIZE
        entries, in a dict no larger than one of MEMO_SIZE entries built afresh."""

        @sq.cache(600, key="item:{}")
        async def get(n: int) -> int:
            return n

        memo = state_of(get).by_args
        fresh = dict.fromkeys(range(_cached_calls.MEMO_SIZE))
        async with sq.open_query_client():
            for n in range(10_000):
                await get(n)
                assert len(memo) <= _cached_calls.MEMO_SIZE
                if n % 1000 == 999:
                    assert sys.getsizeof(memo) <= sys.getsizeof(fresh)
            assert await get(9_999) == 9_999 and 9_999 in memo

    async def test_stale_reads_of_a_key_reuse_its_options(
        self, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Stale hits while the refresh is out build no options: the first call's serve."""
        built = 0
        build = OptionsTemplate.build

        def counting(self: OptionsTemplate, *args: Any, **kwargs: Any) -> Any:
            nonlocal built
            built += 1
            return build(self, *args, **kwargs)

        release = trio.Event()
        calls = 0

        @sq.cache(1, key="item:{}", stale=600)
        async def get(n: int) -> int:
            nonlocal calls
            calls += 1
            if calls > 1:
                await release.wait()
            return calls

        async with sq.open_query_client():
            assert await get(1) == 1
            await trio.sleep(2)
            monkeypatch.setattr(OptionsTemplate, "build", counting)
            for _ in range(50):
                assert await get(1) == 1
            release.set()
        assert (built, calls) == (0, 2)
