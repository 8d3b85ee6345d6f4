"""Specification of ``@cache``: freshness, stale-while-revalidate, keys, invalidation, clients."""

from __future__ import annotations

import inspect
import math
import threading
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from backends import MemoryStorage, SQLiteStorage, ops
from stackquery._entry import unpack_entry
from stackquery._keys import canonical_key
from stackquery.serializers import json as json_serializer


class Calls:
    """Records each origin call's arguments; each call takes ``delay`` seconds of trio time."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.args: list[Any] = []

    @property
    def count(self) -> int:
        return len(self.args)

    async def __call__(self, *args: Any) -> str:
        self.args.append(args)
        await trio.sleep(self.delay)
        return f"v{self.count}"


def cached_under_k(calls: Calls) -> sq.CachedFunction[[], str]:
    """``calls()`` cached 60 s under the one key ``"k"``, on whichever client a call finds."""

    @sq.cache(60, key="k")
    async def load() -> str:
        return await calls()

    return load


def store_key(func: sq.CachedFunction[Any, Any], *parts: Any) -> str:
    """The L2 key of one of ``func``'s entries in a store client (default key prefix)."""
    return "sq:" + canonical_key(("fn", func.cache_name, *parts))[1]


class TestFreshness:
    async def test_value_is_fresh_for_ttl(self, autojump_clock: trio.testing.MockClock) -> None:
        """Within ttl a call is served from the cache; at ttl with stale=0 the caller waits."""
        calls = Calls(delay=1.0)

        @sq.cache(10, key="user:{}")
        async def get_user(user_id: int) -> str:
            return await calls(user_id)

        async with sq.open_query_client():
            assert await get_user(1) == "v1"
            assert trio.current_time() == 1.0
            await trio.sleep(9.0)
            assert await get_user(1) == "v1"
            assert calls.count == 1
            await trio.sleep(1.5)  # fetched at 1.0: stale from 11.0, and with stale=0, gone
            assert await get_user(1) == "v2"
            assert trio.current_time() == 12.5
            assert calls.args == [(1,), (1,)]

    async def test_fresh_hit_does_not_checkpoint(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A fresh hit is a lookup: no checkpoint, no origin call."""
        calls = Calls()

        @sq.cache(60, key="user:{}")
        async def get_user(user_id: int) -> str:
            return await calls(user_id)

        @sq.cache(60, key="flags")
        async def flags() -> str:
            return await calls()

        async with sq.open_query_client():
            await get_user(1)
            await get_user(user_id=1)
            await flags()
            with trio.testing.assert_no_checkpoints():
                assert await get_user(1) == "v1"
                assert await get_user(user_id=1) == "v1"
                assert await flags() == "v2"
            assert calls.count == 2

    async def test_none_is_cached(self, autojump_clock: trio.testing.MockClock) -> None:
        """A function returning None is called once; None is served from the cache after."""
        count = 0

        @sq.cache(60)
        async def nothing() -> Any:
            nonlocal count
            count += 1
            return None

        async with sq.open_query_client():
            assert await nothing() is None
            assert await nothing() is None
            assert count == 1

    async def test_concurrent_misses_call_the_function_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """100 concurrent callers of one cold key share one call and get the same value."""
        calls = Calls(delay=2.0)
        results: list[str] = []

        @sq.cache(60, key="user:{}")
        async def get_user(user_id: int) -> str:
            return await calls(user_id)

        async def caller() -> None:
            results.append(await get_user(7))

        async with sq.open_query_client(), trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(caller)
        assert calls.count == 1
        assert results == ["v1"] * 100

    async def test_cancelled_caller_leaves_the_fetch_to_the_others(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A caller cancelled while waiting stops waiting; the one fetch still lands."""
        calls = Calls(delay=5.0)
        got: list[str] = []

        @sq.cache(60, key="k")
        async def load() -> str:
            return await calls()

        async def patient() -> None:
            got.append(await load())

        async with sq.open_query_client(), trio.open_nursery() as nursery:
            nursery.start_soon(patient)
            with trio.move_on_after(1.0) as scope:
                await load()
            assert scope.cancelled_caught
        assert got == ["v1"]
        assert trio.current_time() == 5.0
        assert calls.count == 1

    async def test_method_with_a_template(self, autojump_clock: trio.testing.MockClock) -> None:
        """On a method, a template that leaves out self keys on the other arguments."""
        calls = Calls()

        class Users:
            @sq.cache(60, key="user:{user_id}")
            async def get(self, user_id: int) -> str:
                return await calls(user_id)

        async with sq.open_query_client():
            assert await Users().get(1) == "v1"
            assert await Users().get(user_id=1) == "v1"
            assert calls.count == 1

    async def test_sync_function_runs_in_a_worker_thread(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A plain def is called in a worker thread, awaited, and cached like an async one."""
        threads: list[threading.Thread] = []

        @sq.cache(60)
        def add(a: int, b: int = 2) -> int:
            threads.append(threading.current_thread())
            return a + b

        async with sq.open_query_client():
            assert await add(1) == 3
            assert await add(1, 2) == 3
            assert await add(a=1) == 3
            assert await add(1, b=5) == 6
        assert len(threads) == 2
        assert threading.main_thread() not in threads

    async def test_wraps_keeps_name_doc_and_signature(self) -> None:
        """The decorated function has the original's name, docstring and signature."""

        @sq.cache(60, key="user:{user_id}")
        async def get_user(user_id: int, verbose: bool = False) -> dict[str, int]:
            """Load a user."""
            return {"id": user_id}

        @sq.cache(60)
        def plain(x: int) -> int:
            """Plain."""
            return x

        assert get_user.__name__ == "get_user"
        assert get_user.__doc__ == "Load a user."
        assert str(inspect.signature(get_user)) == (
            "(user_id: 'int', verbose: 'bool' = False) -> 'dict[str, int]'"
        )
        assert plain.__name__ == "plain"
        assert str(inspect.signature(plain)) == "(x: 'int') -> 'int'"
        assert inspect.iscoroutinefunction(get_user)
        assert inspect.iscoroutinefunction(plain)
        assert get_user.cache_name == f"{__name__}.{get_user.__qualname__}"


class TestStaleWhileRevalidate:
    async def test_stale_value_is_served_at_once_while_one_refresh_runs(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Between ttl and ttl + stale, callers get the old value at once; one refresh runs."""
        calls = Calls(delay=1.0)

        @sq.cache(10, key="user:{}", stale=20)
        async def get_user(user_id: int) -> str:
            return await calls(user_id)

        async with sq.open_query_client():
            assert await get_user(1) == "v1"  # fetched at 1.0
            await trio.sleep(14.0)
            # At once: no waiting for the refresh (a stale read checkpoints, so
            # the refresh it starts can run, but no time passes).
            for _ in range(10):
                assert await get_user(1) == "v1"
                assert trio.current_time() == 15.0
            await wait_all_tasks_blocked()
            assert calls.count == 2
            await trio.sleep(1.5)  # the refresh takes 1.0
            assert await get_user(1) == "v2"
            assert calls.count == 2

    async def test_past_ttl_plus_stale_the_caller_waits(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After ttl + stale the old value is not served: the caller waits for a new one."""
        calls = Calls(delay=1.0)

        @sq.cache(10, key="user:{}", stale=20)
        async def get_user(user_id: int) -> str:
            return await calls(user_id)

        async with sq.open_query_client():
            assert await get_user(1) == "v1"  # fetched at 1.0: served until 31.0
            await trio.sleep(30.0)
            assert trio.current_time() == 31.0
            assert await get_user(1) == "v2"
            assert trio.current_time() == 32.0

    async def test_infinite_stale_always_serves_the_old_value(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With stale=inf the old value is served however old, while it is refreshed."""
        calls = Calls(delay=1.0)

        @sq.cache(10, key="k", stale=math.inf)
        async def load() -> str:
            return await calls()

        async with sq.open_query_client():
            assert await load() == "v1"
            await trio.sleep(10_000.0)
            assert await load() == "v1"
            await trio.sleep(1.5)
            assert await load() == "v2"

    async def test_failed_refresh_keeps_serving_the_stale_value(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A refresh that fails leaves the stale value served until ttl + stale."""
        outcomes: list[Any] = ["v1", RuntimeError("down"), RuntimeError("down")]

        @sq.cache(10, key="k", stale=20)
        async def load() -> str:
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return str(outcome)

        async with sq.open_query_client(sq.QueryClientConfig(retry=0)):
            assert await load() == "v1"
            await trio.sleep(15.0)
            assert await load() == "v1"  # the refresh it starts fails
            await wait_all_tasks_blocked()
            assert len(outcomes) == 1
            assert await load() == "v1"  # so does this one's
            await wait_all_tasks_blocked()
            assert outcomes == []
            await trio.sleep(20.0)  # past ttl + stale: the caller waits for the origin
            with pytest.raises(IndexError, match=r"^pop from empty list$"):
                await load()


class TestKeys:
    async def test_arguments_differing_by_name_never_share_a_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """f(a=1) and f(b=1) are two keys with the default key."""
        calls = Calls()

        @sq.cache(60)
        async def f(a: Any = None, b: Any = None) -> str:
            return await calls(a, b)

        async with sq.open_query_client():
            assert await f(a=1) == "v1"
            assert await f(b=1) == "v2"
            assert await f(a=1) == "v1"
            assert calls.args == [(1, None), (None, 1)]

    async def test_equal_but_distinct_values_are_two_keys(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """f(1) and f(True) are two keys even though 1 == True; f(1) and f(1.0) are one."""
        calls = Calls()

        @sq.cache(60, key="x:{}")
        async def f(x: Any) -> str:
            return await calls(x)

        async with sq.open_query_client():
            assert await f(1) == "v1"
            assert await f(True) == "v2"
            assert await f(1) == "v1"
            assert await f(True) == "v2"
            assert await f(1.0) == "v1"
            assert await f((0, False)) == "v3"
            assert await f((0, 0)) == "v4"
            assert calls.count == 4

    async def test_several_zero_one_or_bool_arguments_keep_their_keys_apart(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """page(0, 1), page(False, True), page(0, True), page(0.0, 1.0): three keys."""
        calls = Calls()

        @sq.cache(60, key="page:{}:{}")
        async def page(a: Any, b: Any) -> str:
            return await calls(a, b)

        async with sq.open_query_client():
            for _ in range(2):
                assert await page(0, 1) == "v1"
                assert await page(False, True) == "v2"
                assert await page(0, True) == "v3"
                assert await page(0.0, 1.0) == "v1"
                assert await page(0, b=1) == "v1"
                assert await page(False, b=True) == "v2"
            assert calls.count == 3

    async def test_hits_with_zero_one_or_bool_arguments_take_the_fast_path(
        self, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Once cached, page(42, 1), page(42, True), flag=False hits skip the slow path."""
        from stackquery.decorators._cached_calls import CachedCalls

        slow_calls: list[tuple[Any, ...]] = []
        original = CachedCalls.call

        async def counting(self: Any, client: Any, args: Any, kwargs: Any) -> Any:
            slow_calls.append(args)
            return await original(self, client, args, kwargs)

        monkeypatch.setattr(CachedCalls, "call", counting)

        @sq.cache(60, key="page:{}:{}:{flag}")
        async def page(user: int, n: Any, flag: bool = True) -> tuple[int, Any, bool]:
            return (user, n, flag)

        async with sq.open_query_client():
            for _ in range(3):
                assert await page(42, 1) == (42, 1, True)
                assert await page(42, True) == (42, True, True)
                assert await page(42, 0, flag=False) == (42, 0, False)
            # The slow path gets every parameter, defaults filled in.
            assert slow_calls == [(42, 1, True), (42, True, True), (42, 0, False)]

    async def test_positional_and_keyword_calls_share_a_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A named template resolves through the signature: however passed, one key."""
        calls = Calls()

        @sq.cache(60, key="order:{user_id}:{order_id}")
        async def get_order(user_id: int, order_id: int, verbose: bool = False) -> str:
            return await calls(user_id, order_id)

        async with sq.open_query_client():
            assert await get_order(1, 2) == "v1"
            assert await get_order(1, order_id=2) == "v1"
            assert await get_order(order_id=2, user_id=1) == "v1"
            assert await get_order(1, 2, verbose=True) == "v1"
            assert await get_order(2, 1) == "v2"
            assert calls.count == 2

    async def test_callable_key(self, autojump_clock: trio.testing.MockClock) -> None:
        """A callable key maps calls to keys; the origin gets the call's own arguments."""
        calls = Calls()

        @sq.cache(60, key=lambda user, region="eu": f"{region}:{user['id']}")
        async def profile(user: dict[str, Any], region: str = "eu") -> str:
            return await calls(user["name"], region)

        async with sq.open_query_client():
            assert await profile({"id": 1, "name": "a"}) == "v1"
            assert await profile({"id": 1, "name": "b"}) == "v1"
            assert await profile({"id": 1, "name": "c"}, region="us") == "v2"
            assert calls.args == [("a", "eu"), ("c", "us")]

    async def test_arguments_that_do_not_fit_raise_even_on_a_hit(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A call the function would refuse is refused, cached value or not."""

        @sq.cache(60, key="flags")
        async def flags() -> str:
            return "on"

        @sq.cache(60, key="user:{}")
        async def get_user(user_id: int) -> str:
            return "u"

        async with sq.open_query_client():
            assert await flags() == "on"
            # Python's own refusal, naming the function: its wrapper has its parameters.
            refused = r"<locals>\.flags\(\) takes 0 positional arguments but 1 was given$"
            with pytest.raises(TypeError, match=refused):
                await flags(1)  # type: ignore[call-arg]
            assert await get_user(1) == "u"
            with pytest.raises(TypeError, match=r"unexpected keyword argument 'nope'"):
                await get_user(1, nope=2)  # type: ignore[call-arg]

    async def test_argument_that_cannot_be_a_key_is_refused(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A list argument is an InvalidKeyError naming the list."""

        @sq.cache(60)
        async def f(items: Any) -> int:
            return len(items)

        async with sq.open_query_client():
            with pytest.raises(sq.InvalidKeyError, match=r"holds a list; use a tuple"):
                await f([1, 2])
            assert await f((1, 2)) == 2

    async def test_dict_argument_is_a_key(self, autojump_clock: trio.testing.MockClock) -> None:
        """A dict argument (unhashable, but valid in a key) is keyed canonically."""
        calls = Calls()

        @sq.cache(60)
        async def f(filters: dict[str, Any]) -> str:
            return await calls(filters)

        async with sq.open_query_client():
            assert await f({"a": 1, "b": 2}) == "v1"
            assert await f({"b": 2, "a": 1}) == "v1"
            assert await f({"a": 2}) == "v2"
            assert calls.count == 2

    def test_functions_with_one_qualified_name_get_their_own_namespace(self) -> None:
        """A function decorated twice under one name gets a second namespace."""
        made = []
        for _ in range(2):

            @sq.cache(60)
            async def local() -> None: ...

            made.append(local)
        base, _, number = made[0].cache_name.partition("#")
        assert made[1].cache_name == f"{base}#{int(number or 1) + 1}"


class TestInvalidateAndClear:
    async def test_invalidate_removes_exactly_one_entry(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """invalidate(1) makes the next f(1) call the function; f(2) stays cached."""
        calls = Calls()

        @sq.cache(60, key="user:{}")
        async def get_user(user_id: int) -> str:
            return await calls(user_id)

        async with sq.open_query_client() as client:
            await get_user(1)
            await get_user(2)
            await get_user.invalidate(user_id=1)
            assert client.get_query_state(("fn", get_user.cache_name, "user:{}", 1)) is None
            assert await get_user(1) == "v3"
            assert await get_user(2) == "v2"
            assert calls.args == [(1,), (2,), (1,)]

    async def test_invalidate_during_a_fetch_gives_waiters_a_new_value(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A caller waiting when its key is invalidated gets a value fetched after that."""
        calls = Calls(delay=5.0)
        got: list[str] = []

        @sq.cache(60, key="k")
        async def load() -> str:
            return await calls()

        async def caller() -> None:
            got.append(await load())

        async with sq.open_query_client(), trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            await trio.sleep(1.0)
            await load.invalidate()
        assert got == ["v2"]
        assert calls.count == 2

    async def test_clear_removes_this_functions_entries_only(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """clear() empties this function's entries; another function's stay cached."""
        calls = Calls()

        @sq.cache(60, key="user:{}")
        async def get_user(user_id: int) -> str:
            return await calls("user", user_id)

        @sq.cache(60, key="user:{}")
        async def get_user_too(user_id: int) -> str:
            return await calls("other", user_id)

        async with sq.open_query_client() as client:
            for i in (1, 2):
                await get_user(i)
                await get_user_too(i)
            await get_user.clear()
            assert client.statistics().queries == 2
            assert await get_user_too(1) == "v2"
            assert await get_user(1) == "v5"
            assert calls.count == 5

    async def test_invalidate_and_clear_reach_the_store(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With store=, entries land in the store; invalidate and clear delete exactly theirs."""
        store = MemoryStorage()

        @sq.cache(60, key="user:{}", store=store)
        async def get_user(user_id: int) -> dict[str, int]:
            return {"id": user_id}

        @sq.cache(60, key="user:{}", store=store)
        async def neighbour(user_id: int) -> int:
            return user_id

        await store.set("app2:" + store_key(get_user, "user:{}", 1)[3:], b"theirs")
        for i in (1, 2, 3):
            await get_user(i)
        await neighbour(1)
        await trio.sleep(1.0)  # write-behind
        raw = await store.get(store_key(get_user, "user:{}", 1))
        assert raw is not None
        assert unpack_entry(raw, json_serializer).value == {"id": 1}

        await get_user.invalidate(1)
        assert await store.get(store_key(get_user, "user:{}", 1)) is None
        assert await store.get(store_key(get_user, "user:{}", 2)) is not None

        await get_user.clear()
        assert await ops.get_many(store, [store_key(get_user, "user:{}", i) for i in (2, 3)]) == [
            None,
            None,
        ]
        assert await store.get(store_key(neighbour, "user:{}", 1)) is not None
        assert await store.get("app2:" + store_key(get_user, "user:{}", 1)[3:]) == b"theirs"

    async def test_invalidate_reaches_the_store_without_an_l1_entry(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An entry only in the store (another process wrote it) is deleted by invalidate."""
        store = MemoryStorage()

        @sq.cache(60, key="k", store=store)
        async def load() -> str:
            return "mine"

        key = store_key(load, "k")
        await store.set(key, b"written elsewhere")
        await load.invalidate()
        assert await store.get(key) is None


class TestClients:
    async def test_innermost_open_client_is_used(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A call runs on the innermost client open in its context."""

        @sq.cache(60, key="k")
        async def load() -> str:
            return "v"

        async with sq.open_query_client() as outer:
            async with sq.open_query_client() as inner:
                await load()
                assert inner.statistics().queries == 1
            assert outer.statistics().queries == 0
            await load()
            assert outer.statistics().queries == 1

    async def test_explicit_client_wins(self, autojump_clock: trio.testing.MockClock) -> None:
        """client= is used even inside another client's block."""
        async with sq.open_query_client() as chosen:

            @sq.cache(60, key="k", client=chosen)
            async def load() -> str:
                return "v"

            async with sq.open_query_client() as other:
                assert await load() == "v"
                assert other.statistics().queries == 0
            assert chosen.statistics().queries == 1

    async def test_default_client_lives_for_the_run(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Without an open client, calls share a default client that outlives any block."""
        calls = Calls()
        load = cached_under_k(calls)

        async def in_a_task() -> None:
            assert await load() == "v1"

        assert await load() == "v1"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_a_task)
        assert await load() == "v1"
        assert calls.count == 1
        assert sq.current_client() is None

    async def test_a_client_opened_after_a_default_hit_is_the_innermost(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A task whose calls found the run's default client still runs on a client it opens."""
        calls = Calls()
        load = cached_under_k(calls)

        assert await load() == "v1"
        assert await load() == "v1"  # a hit on the default client
        async with sq.open_query_client() as inner:
            assert await load() == "v2"
            assert inner.statistics().queries == 1
        assert await load() == "v1"  # the default client again
        assert calls.count == 2
        assert sq.current_client() is None

    def test_each_run_finds_its_own_default_client(self) -> None:
        """Two runs in one thread: the second never runs on the first's closed client."""
        calls = Calls()
        load = cached_under_k(calls)

        async def twice() -> list[str]:
            return [await load(), await load()]

        assert trio.run(twice) == ["v1", "v1"]
        assert trio.run(twice) == ["v2", "v2"]
        assert calls.count == 2

    def test_default_and_store_clients_close_with_the_run(self, tmp_path: Any) -> None:
        """Each trio.run gets its own default client; a store client's writes land by its end."""
        path = tmp_path / "cache.sqlite"
        calls = Calls()

        @sq.cache(60, key="k", store=SQLiteStorage(path))
        async def load() -> str:
            return await calls()

        assert trio.run(load) == "v1"
        assert trio.run(load) == "v1"  # a new run: its client hydrates from the store
        assert calls.count == 1

        async def stored() -> bytes | None:
            store = SQLiteStorage(path)
            try:
                return await store.get(store_key(load, "k"))
            finally:
                await store.aclose()

        raw = trio.run(stored)
        assert raw is not None
        assert unpack_entry(raw, json_serializer).value == "v1"


class TestBadInput:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"ttl": -1}, r"^cache\(\): ttl must be >= 0 seconds, got -1$"),
            ({"ttl": math.nan}, r"^cache\(\): ttl must be >= 0 seconds, got nan$"),
            ({"ttl": True}, r"^cache\(\): ttl must be a number of seconds, got bool: True$"),
            ({"ttl": 1, "stale": -0.5}, r"^cache\(\): stale must be >= 0 seconds, got -0.5$"),
            (
                {"ttl": 1, "store": MemoryStorage(), "client": sq.QueryClient()},
                r"^cache\(\): give client= or store=, not both",
            ),
        ],
    )
    def test_bad_option_is_refused(self, kwargs: dict[str, Any], message: str) -> None:
        """A bad time or conflicting options is an InvalidOptionError at cache()."""
        with pytest.raises(sq.InvalidOptionError, match=message):
            sq.cache(**kwargs)

    def test_bad_types_are_refused(self) -> None:
        """A non-callable, an async generator, a non-collector, a non-client: TypeError."""
        with pytest.raises(TypeError, match=r"^cache\(\) decorates a function, got int: 3$"):
            sq.cache(1)(3)  # type: ignore[call-overload]

        async def agen() -> Any:
            yield 1

        with pytest.raises(TypeError, match=r"^cache\(\) cannot decorate an async generator"):
            sq.cache(1)(agen)
        with pytest.raises(TypeError, match=r"^cache\(\): metrics must be a MetricsCollector"):
            sq.cache(1, metrics=object())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^cache\(\): client must be a QueryClient"):
            sq.cache(1, client=object())  # type: ignore[arg-type]


class TestMetrics:
    async def test_every_outcome_is_recorded(self, autojump_clock: trio.testing.MockClock) -> None:
        """Hits, stale hits, misses, dedup joins, fetches, errors and refreshes, exactly."""
        metrics = sq.InMemoryMetrics()
        outcomes: list[Any] = ["v1", "v2", ValueError("bad")]

        @sq.cache(10, key="user:{}", stale=20, metrics=metrics)
        async def get_user(user_id: int) -> str:
            await trio.sleep(1.0)
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return str(outcome)

        async with sq.open_query_client(sq.QueryClientConfig(retry=0)):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(get_user, 1)  # 1 miss that fetches, 2 that join
            assert await get_user(1) == "v1"  # hit
            await trio.sleep(15.0)
            assert await get_user(1) == "v1"  # stale hit, refresh to v2
            await trio.sleep(1.5)
            assert await get_user(1) == "v2"  # hit
            await trio.sleep(40.0)
            with pytest.raises(ValueError, match=r"^bad$"):
                await get_user(1)  # miss, the fetch fails

        stats = metrics.get_stats()["caches"][get_user.cache_name]
        assert stats["hits"] == 2
        assert stats["stale_hits"] == 1
        assert stats["misses"] == 4
        assert stats["dedup_joins"] == 2
        assert stats["fetches"] == 3
        assert stats["errors_by_type"] == {"fetch": {"ValueError": 1}}
        assert stats["background_refreshes"] == {"ok": 1, "failed": 0}
        assert stats["latency"]["get"]["count"] == 7
        assert stats["latency"]["fetch"]["count"] == 3
        assert stats["latency"]["fetch"]["max"] == 1.0


class TestSignatureExactWrapper:
    """A function with plain parameters gets a wrapper with those parameters."""

    async def test_positional_keyword_and_default_calls_are_one_hit(
        self, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """get(1), get(1, 2), get(a=1), get(b=2, a=1): one origin call, one slow-path call."""
        from stackquery.decorators._cached_calls import CachedCalls

        slow_calls: list[tuple[Any, ...]] = []
        original = CachedCalls.call

        async def counting(self: Any, client: Any, args: Any, kwargs: Any) -> Any:
            slow_calls.append(args)
            return await original(self, client, args, kwargs)

        monkeypatch.setattr(CachedCalls, "call", counting)
        calls = Calls()

        @sq.cache(60)
        async def get(a: int, b: int = 2) -> str:
            return await calls(a, b)

        async with sq.open_query_client():
            assert [await get(1), await get(1, 2), await get(a=1), await get(b=2, a=1)] == [
                "v1"
            ] * 4
            assert calls.args == [(1, 2)]
            assert slow_calls == [(1, 2)]

    async def test_parameters_named_like_the_wrappers_locals_work(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Parameters called client, args, memo, snap, kwargs or slow are ordinary arguments."""

        @sq.cache(60, key="x:{client}:{args}:{memo}:{snap}:{kwargs}:{slow}")
        async def f(client: int, args: int, memo: int, snap: int, kwargs: int, slow: int) -> int:
            return client + args + memo + snap + kwargs + slow

        async with sq.open_query_client():
            assert await f(1, 2, 3, 4, 5, 6) == 21
            assert await f(1, 2, 3, 4, 5, slow=6) == 21

    async def test_positional_only_parameters_stay_positional_only(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """def f(a, /, b): f(1, b=2) works, f(a=1, b=2) is refused as the function refuses it."""

        @sq.cache(60)
        async def f(a: int, /, b: int) -> int:
            return a * 10 + b

        async with sq.open_query_client():
            assert await f(1, b=2) == 12
            assert await f(1, 2) == 12
            with pytest.raises(
                TypeError, match=r"<locals>\.f\(\) got some positional-only arguments"
            ):
                await f(a=1, b=2)  # type: ignore[call-arg]

    async def test_arguments_that_do_not_fit_name_the_function(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A missing argument is the TypeError Python raises for the function itself."""

        @sq.cache(60, key="user:{}")
        async def get_user(user_id: int) -> str:
            return "u"

        async with sq.open_query_client():
            with pytest.raises(
                TypeError, match=r"<locals>\.get_user\(\) missing 1 required positional"
            ):
                await get_user()  # type: ignore[call-arg]
