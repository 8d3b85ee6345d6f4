"""Specification of ``@cache.batch``: merged origin calls, per-id caching, missing ids, L2."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import trio
import trio.testing

import stackquery as sq
from backends import MemoryStorage
from stackquery._keys import canonical_key
from tests.stackquery.l2_store import ControlledStorage


class Origin:
    """A batch origin: records each call's ids; each call takes ``delay`` seconds of trio time."""

    def __init__(self, delay: float = 1.0) -> None:
        self.delay = delay
        self.calls: list[list[Any]] = []
        self.omit: set[Any] = set()
        self.extra: dict[Any, Any] = {}
        self.error: Exception | None = None

    async def __call__(self, ids: list[Any]) -> dict[Any, Any]:
        self.calls.append(list(ids))
        call = len(self.calls)
        await trio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return {i: f"u{i}#{call}" for i in ids if i not in self.omit} | self.extra

    @property
    def sorted_calls(self) -> list[list[Any]]:
        """Each call's ids, sorted (trio may run tasks of one batch in either order)."""
        return [sorted(ids) for ids in self.calls]


def loader(origin: Origin, ttl: float = 60, **kwargs: Any) -> sq.BatchedFunction[int, str]:
    """A batch function on ``origin`` with the key template ``user:{}``."""

    @sq.cache.batch(ttl, key="user:{}", **kwargs)
    async def get_users(ids: list[int]) -> dict[int, str]:
        return await origin(ids)

    return get_users


def no_retry() -> sq.QueryClientConfig:
    return sq.QueryClientConfig(retry=0)


async def call_each(func: sq.BatchedFunction[int, str], ids: list[int]) -> dict[int, Any]:
    """Call ``func(id)`` for each id concurrently (tasks started together); return the values."""
    results: dict[int, Any] = {}

    async def one(item_id: int) -> None:
        results[item_id] = await func(item_id)

    async with trio.open_nursery() as nursery:
        for item_id in ids:
            nursery.start_soon(one, item_id)
    return results


class TestMerging:
    async def test_single_calls_started_together_make_one_origin_call(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Three concurrent ``f(id)`` of cold ids: one origin call with the three ids."""
        origin = Origin()
        get_user = loader(origin)
        async with sq.open_query_client(no_retry()):
            results = await call_each(get_user, [1, 2, 3])
            assert results == {1: "u1#1", 2: "u2#1", 3: "u3#1"}
            assert origin.sorted_calls == [[1, 2, 3]]
            assert trio.current_time() == 1.0
            assert await get_user(2) == "u2#1"  # cached per id
            assert len(origin.calls) == 1
            assert get_user.statistics() == sq.BatchStatistics(
                origin_calls=1,
                ids_requested=3,
                largest_batch=3,
                missing_ids=0,
                unrequested_ids=0,
                failed_calls=0,
            )

    async def test_many_returns_values_in_order_with_one_origin_call(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """``many`` keeps the order asked and its duplicates, and asks the origin once per id."""
        origin = Origin()
        get_user = loader(origin)
        async with sq.open_query_client(no_retry()):
            assert await get_user.many([3, 1, 2, 1]) == ["u3#1", "u1#1", "u2#1", "u1#1"]
            assert origin.sorted_calls == [[1, 2, 3]]
            assert await get_user.many(iter([2, 3])) == ["u2#1", "u3#1"]
            assert await get_user.many([]) == []
            assert len(origin.calls) == 1

    async def test_each_id_is_its_own_query(self, autojump_clock: trio.testing.MockClock) -> None:
        """An id's value sits under its own key, visible to the client's readers."""
        get_user = loader(Origin())
        async with sq.open_query_client(no_retry()) as client:
            await get_user.many([1, 2])
            key = ("fn", get_user.cache_name, "user:{}", 1)
            assert client.get_query_data(key) == "u1#1"
            state = client.get_query_state(("fn", get_user.cache_name, "user:{}", 2))
            assert state is not None and state.data == "u2#1"

    async def test_batches_above_max_batch_are_split_and_run_concurrently(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Five ids with max_batch=2: three origin calls of 2, 2 and 1 ids, all at once."""
        origin = Origin()
        get_user = loader(origin, max_batch=2)
        async with sq.open_query_client(no_retry()):
            values = await get_user.many([1, 2, 3, 4, 5])
            assert sorted(len(ids) for ids in origin.calls) == [1, 2, 2]
            call_of = {i: n for n, ids in enumerate(origin.calls, 1) for i in ids}
            assert values == [f"u{i}#{call_of[i]}" for i in [1, 2, 3, 4, 5]]
            assert sorted(i for ids in origin.calls for i in ids) == [1, 2, 3, 4, 5]
            assert trio.current_time() == 1.0
            assert get_user.statistics().largest_batch == 2

    async def test_ids_in_flight_are_joined_not_fetched_again(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An id whose origin call is out is joined; only the other ids go to the origin."""
        origin = Origin(delay=1.0)
        get_user = loader(origin)
        async with sq.open_query_client(no_retry()), trio.open_nursery() as nursery:
            first: list[str | None] = []

            async def first_caller() -> None:
                first.append(await get_user(1))

            nursery.start_soon(first_caller)
            await trio.sleep(0.5)
            assert await get_user.many([1, 2]) == ["u1#1", "u2#2"]
            assert origin.calls == [[1], [2]]
            assert first == ["u1#1"]
            assert trio.current_time() == 1.5

    async def test_calls_in_later_ticks_make_separate_origin_calls(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The window is one run-loop batch: an id asked for after a checkpoint goes alone."""
        origin = Origin()
        get_user = loader(origin)
        async with sq.open_query_client(no_retry()), trio.open_nursery() as nursery:
            nursery.start_soon(get_user, 1)
            await trio.sleep(0.25)
            nursery.start_soon(get_user, 2)
        assert origin.calls == [[1], [2]]


class TestFreshAndStale:
    async def test_fresh_and_stale_per_id(self, autojump_clock: trio.testing.MockClock) -> None:
        """Stale ids are served at once and refreshed in one call; fresh ids are not asked for."""
        origin = Origin()
        get_user = loader(origin, ttl=10, stale=5)
        async with sq.open_query_client(no_retry()):
            assert await get_user.many([1, 2]) == ["u1#1", "u2#1"]  # fetched at 1.0
            await trio.sleep(5.0)
            assert await get_user(3) == "u3#2"  # fetched at 7.0
            await trio.sleep(5.0)  # t=12: 1 and 2 stale, 3 fresh
            assert await get_user.many([1, 2, 3]) == ["u1#1", "u2#1", "u3#2"]
            assert trio.current_time() == 12.0  # served at once
            await trio.sleep(1.5)
            assert origin.sorted_calls == [[1, 2], [3], [1, 2]]
            assert await get_user.many([1, 2, 3]) == ["u1#3", "u2#3", "u3#2"]
            await trio.sleep(20.0)  # past ttl + stale: callers wait for a new value
            assert await get_user(1) == "u1#4"
            assert trio.current_time() == 34.5

    async def test_a_fresh_hit_does_not_checkpoint(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """``f(id)`` of a fresh id is a lookup: no checkpoint, like ``@cache``'s hit."""
        get_user = loader(Origin())
        async with sq.open_query_client(no_retry()):
            await get_user.many([1, 2])
            with trio.testing.assert_no_checkpoints():
                assert await get_user(1) == "u1#1"
                assert await get_user.many([2, 1]) == ["u2#1", "u1#1"]

    async def test_f_1_and_f_true_are_two_keys(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An id equal to another of another type (1, True) is not served the other's entry."""
        origin = Origin()

        @sq.cache.batch(60)
        async def get_values(ids: list[Any]) -> dict[Any, Any]:
            origin.calls.append(list(ids))
            return {i: repr(i) for i in ids}

        async with sq.open_query_client(no_retry()):
            assert await get_values(1) == "1"
            assert await get_values(True) == "True"
            assert await get_values(1) == "1"


class TestMissingIds:
    async def test_missing_none_caches_none(self, autojump_clock: trio.testing.MockClock) -> None:
        """An id the mapping leaves out is cached as None (the default)."""
        origin = Origin()
        origin.omit = {2}
        get_user = loader(origin)
        async with sq.open_query_client(no_retry()):
            assert await get_user.many([1, 2]) == ["u1#1", None]
            assert await get_user(2) is None
            assert len(origin.calls) == 1
            assert get_user.statistics().missing_ids == 1

    async def test_missing_error_raises_for_that_id_only(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """missing="error": MissingIdError (a KeyError) for that id only, values for the others."""
        origin = Origin()
        origin.omit = {2}
        get_user = loader(origin, missing="error")
        async with sq.open_query_client(no_retry()):
            results: dict[int, Any] = {}

            async def one(item_id: int) -> None:
                try:
                    results[item_id] = await get_user(item_id)
                except sq.MissingIdError as exc:
                    results[item_id] = exc

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, 1)
                nursery.start_soon(one, 2)
            assert results[1] == "u1#1"
            error = results[2]
            assert isinstance(error, sq.MissingIdError) and isinstance(error, KeyError)
            assert (error.id, error.function) == (2, get_user.cache_name)
            assert str(error) == f"{get_user.cache_name}() returned no value for id 2"
            with pytest.raises(sq.MissingIdError):
                await get_user.many([1, 2])  # not cached: asked again, and raised after all settle
            assert origin.calls[1:] == [[2]]

    async def test_missing_skip_returns_none_and_caches_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """missing="skip": the caller gets None, and the next call asks the origin again."""
        origin = Origin()
        origin.omit = {2}
        get_user = loader(origin, missing="skip")
        async with sq.open_query_client(no_retry()) as client:
            assert await get_user.many([1, 2]) == ["u1#1", None]
            assert await get_user(2) is None
            assert origin.sorted_calls == [[1, 2], [2]]
            assert client.get_query_data(("fn", get_user.cache_name, "user:{}", 2)) is None
            origin.omit = set()
            assert await get_user(2) == "u2#3"

    async def test_ids_not_asked_for_are_ignored_and_counted(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A mapping with extra ids: those are never cached, only counted."""
        origin = Origin()
        origin.extra = {99: "intruder"}
        get_user = loader(origin)
        async with sq.open_query_client(no_retry()) as client:
            assert await get_user(1) == "u1#1"
            assert get_user.statistics().unrequested_ids == 1
            assert client.get_query_state(("fn", get_user.cache_name, "user:{}", 99)) is None
            origin.extra = {}
            assert await get_user(99) == "u99#2"


class TestErrors:
    async def test_an_origin_error_fails_every_id_of_the_call(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Every caller of the batch gets the origin's error; nothing is cached."""
        origin = Origin()
        origin.error = RuntimeError("database down")
        get_user = loader(origin)
        async with sq.open_query_client(no_retry()):
            errors: list[BaseException] = []

            async def one(item_id: int) -> None:
                try:
                    await get_user(item_id)
                except RuntimeError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, 1)
                nursery.start_soon(one, 2)
            assert [str(e) for e in errors] == ["database down"] * 2
            assert len(origin.calls) == 1
            with pytest.raises(RuntimeError, match="database down"):
                await get_user.many([1, 2])
            assert get_user.statistics().failed_calls == 2
            origin.error = None
            assert await get_user.many([1, 2]) == ["u1#3", "u2#3"]

    async def test_retries_are_per_origin_call_not_per_id(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With retry=2, a failing call of three ids is made three times, not nine."""
        origin = Origin(delay=0.0)
        origin.error = RuntimeError("flaky")
        get_user = loader(origin)
        config = sq.QueryClientConfig(retry=2, retry_delay=1.0)
        async with sq.open_query_client(config):
            with pytest.raises(RuntimeError, match="flaky"):
                await get_user.many([1, 2, 3])
            assert origin.sorted_calls == [[1, 2, 3]] * 3
            assert trio.current_time() == 2.0

    async def test_stale_values_stay_served_when_the_refresh_fails(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A failing refresh keeps the stale value served."""
        origin = Origin()
        get_user = loader(origin, ttl=10, stale=100)
        async with sq.open_query_client(no_retry()):
            assert await get_user(1) == "u1#1"
            await trio.sleep(20)
            origin.error = RuntimeError("down")
            assert await get_user(1) == "u1#1"
            await trio.sleep(2)
            assert await get_user(1) == "u1#1"
            await trio.sleep(0.5)
            assert len(origin.calls) == 3  # the failed refresh, then one more per stale read

    async def test_a_result_that_is_not_a_mapping_is_an_error_for_every_id(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Returning a list instead of a mapping: a TypeError naming the function."""

        @sq.cache.batch(60)
        async def get_users(ids: list[int]) -> Any:
            return [f"u{i}" for i in ids]

        async with sq.open_query_client(no_retry()):
            with pytest.raises(TypeError, match=r"get_users\(\) must return a mapping .*got list"):
                await get_users.many([1, 2])

    async def test_a_mapping_that_fails_to_be_read_fails_its_ids_not_the_client(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A mapping whose lookups raise: its callers get the error, the client goes on."""

        class Broken(dict[int, str]):
            def __getitem__(self, key: int) -> str:
                raise RuntimeError("broken mapping")

        @sq.cache.batch(60)
        async def get_users(ids: list[int]) -> dict[int, str]:
            return Broken({i: "x" for i in ids})

        async with sq.open_query_client(no_retry()):
            with pytest.raises(RuntimeError, match="broken mapping"):
                await get_users.many([1, 2])
            with pytest.raises(RuntimeError, match="broken mapping"):
                await get_users(3)

    async def test_a_cancelled_caller_does_not_cancel_the_batch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """One caller cancelled mid-call: the others get their values; its id lands in the cache."""
        origin = Origin(delay=1.0)
        get_user = loader(origin)
        async with sq.open_query_client(no_retry()):
            results: dict[int, str | None] = {}

            async def impatient() -> None:
                with trio.move_on_after(0.5):
                    await get_user(1)

            async def patient() -> None:
                results[2] = await get_user(2)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(impatient)
                nursery.start_soon(patient)
            assert results == {2: "u2#1"}
            assert origin.sorted_calls == [[1, 2]]
            assert await get_user(1) == "u1#1"
            assert len(origin.calls) == 1


class TestClients:
    async def test_closing_the_client_mid_call_does_not_wait_for_the_origin(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The window's call runs in the client's nursery: closing the client cancels it."""
        origin = Origin(delay=100.0)
        get_user = loader(origin)
        async with sq.open_query_client(no_retry()) as client:
            client.start_soon(get_user, 1, name="caller")
            await trio.sleep(0.5)
        assert trio.current_time() == 0.5
        assert origin.calls == [[1]]

    async def test_each_client_has_its_own_windows_and_entries(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Two clients: each caches its ids; a window never mixes them."""
        origin = Origin()
        get_user = loader(origin)
        async with sq.open_query_client(no_retry()) as first:
            async with sq.open_query_client(no_retry()):
                assert await get_user(1) == "u1#1"  # the innermost client
            assert await get_user(1) == "u1#2"  # the outer one had not cached it
            assert first.get_query_data(("fn", get_user.cache_name, "user:{}", 1)) == "u1#2"


class TestL2:
    async def test_cold_ids_are_read_from_l2_in_one_get_many(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A restarted client reads every cold id in one get_many; only ids L2 lacks go out."""
        store = ControlledStorage()
        origin = Origin()
        get_user = loader(origin, store=store)  # on the run's client for the store
        assert await get_user.many([1, 2, 3]) == ["u1#1", "u2#1", "u3#1"]
        assert [sorted(keys) for keys in store.get_many_calls] == [
            sorted(_store_key(get_user, i) for i in (1, 2, 3))
        ]
        assert origin.sorted_calls == [[1, 2, 3]]

    async def test_a_second_client_on_the_store_calls_the_origin_only_for_what_it_lacks(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Ids 1 and 2 in L2: ``many([1, 2, 3, 4])`` reads four keys at once, fetches 3 and 4."""
        store = ControlledStorage()
        origin = Origin()
        get_user = loader(origin)
        config = sq.QueryClientConfig(storage=store, retry=0)
        async with sq.open_query_client(config):
            assert await get_user.many([1, 2]) == ["u1#1", "u2#1"]
        store.get_many_calls.clear()
        async with sq.open_query_client(config):
            assert await get_user.many([1, 2, 3, 4]) == ["u1#1", "u2#1", "u3#2", "u4#2"]
            assert [sorted(keys) for keys in store.get_many_calls] == [
                sorted(_store_key(get_user, i) for i in (1, 2, 3, 4))
            ]
            assert origin.sorted_calls == [[1, 2], [3, 4]]

    async def test_with_a_store_cold_ids_go_out_after_their_read(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A stale id's refresh and cold ids read from L2 first: two calls, as documented."""
        origin = Origin()
        get_user = loader(origin, ttl=10, stale=100)
        async with sq.open_query_client(sq.QueryClientConfig(storage=MemoryStorage(), retry=0)):
            await get_user(1)
            await trio.sleep(20)
            assert await get_user.many([1, 2, 3]) == ["u1#1", "u2#3", "u3#3"]
            await trio.sleep(5)
        assert origin.sorted_calls == [[1], [1], [2, 3]]


class TestInvalidateAndClear:
    async def test_invalidate_removes_one_id(self, autojump_clock: trio.testing.MockClock) -> None:
        """``invalidate(id)`` drops that id (L1 and L2); the next call fetches it alone."""
        store = MemoryStorage()
        origin = Origin()
        get_user = loader(origin)
        async with sq.open_query_client(sq.QueryClientConfig(storage=store, retry=0)):
            await get_user.many([1, 2])
            await get_user.invalidate(1)
            assert await store.get(_store_key(get_user, 1)) is None
            assert await store.get(_store_key(get_user, 2)) is not None
            assert await get_user.many([1, 2]) == ["u1#2", "u2#1"]
            assert origin.calls[1:] == [[1]]

    async def test_invalidate_during_the_origin_call_fetches_the_id_again(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A caller waiting on an id that is invalidated gets a value fetched after that."""
        origin = Origin()
        get_user = loader(origin)
        async with sq.open_query_client(no_retry()), trio.open_nursery() as nursery:
            got: list[str | None] = []

            async def caller() -> None:
                got.append(await get_user(1))

            nursery.start_soon(caller)
            await trio.sleep(0.5)
            await get_user.invalidate(1)
        assert got == ["u1#2"]
        assert origin.calls == [[1], [1]]
        assert trio.current_time() == 1.5

    async def test_clear_removes_every_id_of_this_function_only(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """``clear()`` drops every id of the function, not another function's entries."""
        store = MemoryStorage()
        origin, other_origin = Origin(), Origin()
        get_user = loader(origin)
        get_other = loader(other_origin)
        async with sq.open_query_client(sq.QueryClientConfig(storage=store, retry=0)):
            await get_user.many([1, 2])
            await get_other.many([1])
            await get_user.clear()
            assert await store.get(_store_key(get_user, 1)) is None
            assert await store.get(_store_key(get_other, 1)) is not None
            assert await get_user.many([1, 2]) == ["u1#2", "u2#2"]
            assert await get_other(1) == "u1#1"
            assert len(other_origin.calls) == 1


class TestMetrics:
    async def test_reads_and_origin_calls_are_recorded(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Per id: hits, stale hits and misses; per origin call: a fetch and its latency."""
        metrics = sq.InMemoryMetrics()
        origin = Origin()
        get_user = loader(origin, ttl=10, stale=20, metrics=metrics)
        async with sq.open_query_client(no_retry()):
            await get_user.many([1, 2])  # two misses, one fetch
            assert await get_user(1) == "u1#1"  # a hit
            await trio.sleep(15)
            assert await get_user.many([1, 3]) == ["u1#1", "u3#2"]  # a stale hit and a miss
            await get_user.invalidate(2)
        stats = metrics.get_stats()["caches"][get_user.cache_name]
        assert (stats["hits"], stats["stale_hits"], stats["misses"]) == (1, 1, 3)
        assert (stats["fetches"], stats["deletes"]) == (len(origin.calls), 1)
        assert origin.sorted_calls == [[1, 2], [1, 3]]  # 1's refresh and 3's miss: one call
        assert stats["latency"]["fetch"]["count"] == 2


class TestDecorating:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"ttl": -1}, r"ttl must be >= 0 seconds, got -1"),
            ({"ttl": "60"}, r"ttl must be a number of seconds, got str"),
            ({"ttl": 60, "stale": math.nan}, r"stale must be >= 0 seconds"),
            ({"ttl": 60, "max_batch": 0}, r"max_batch must be an int >= 1, got 0"),
            ({"ttl": 60, "max_batch": True}, r"max_batch must be an int >= 1, got True"),
            ({"ttl": 60, "max_batch": 2.5}, r"max_batch must be an int >= 1, got 2.5"),
            ({"ttl": 60, "missing": "raise"}, r"missing must be 'none', 'error' or 'skip'"),
            (
                {"ttl": 60, "store": MemoryStorage(), "client": sq.QueryClient()},
                "give client= or store=, not both",
            ),
        ],
    )
    def test_bad_options_are_refused_when_decorating(
        self, kwargs: dict[str, Any], message: str
    ) -> None:
        """Each bad option raises InvalidOptionError naming it."""
        with pytest.raises(sq.InvalidOptionError, match=r"^cache\.batch\(\): " + message):
            sq.cache.batch(**kwargs)

    @pytest.mark.parametrize(
        ("key", "message"),
        [
            ("users", "must have exactly one placeholder for the id .* it has 0"),
            ("user:{}:{}", "must have exactly one placeholder for the id .* it has 2"),
            ("user:{!r}", "the placeholder must be"),
            ("user:{id:>5}", "the placeholder must be"),
            ("user:{u.name}", "the placeholder must be"),
            ("user:{", "is malformed"),
        ],
    )
    def test_bad_key_templates_are_refused(self, key: str, message: str) -> None:
        """A template needs exactly one plain placeholder, for the id."""
        with pytest.raises(sq.KeyTemplateError, match=message):
            sq.cache.batch(60, key=key)

    def test_good_key_templates(self) -> None:
        """``{}``, ``{0}`` and ``{name}`` are accepted."""
        for key in ("user:{}", "user:{0}", "user:{user_id}", "{}"):
            sq.cache.batch(60, key=key)

    def test_a_key_that_is_not_a_string_is_refused(self) -> None:
        with pytest.raises(TypeError, match="key must be a template string or None, got int"):
            sq.cache.batch(60, key=1)  # type: ignore[arg-type]

    def test_a_sync_function_is_refused(self) -> None:
        """A sync loader is refused with the way to wrap it."""

        def load(ids: list[int]) -> dict[int, int]:
            return {}

        with pytest.raises(TypeError, match=r"decorates an async def .*trio\.to_thread\.run_sync"):
            sq.cache.batch(60)(load)  # type: ignore[arg-type]

    def test_a_function_that_cannot_take_a_list_is_refused(self) -> None:
        async def load() -> dict[int, int]:
            return {}

        with pytest.raises(TypeError, match="cannot be called with a list of ids"):
            sq.cache.batch(60)(load)  # type: ignore[arg-type]

    async def test_an_id_that_cannot_be_a_key_is_refused(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        get_user = loader(Origin())
        async with sq.open_query_client(no_retry()):
            with pytest.raises(sq.InvalidKeyError):
                await get_user([1])  # type: ignore[arg-type]
            with pytest.raises(sq.InvalidKeyError, match=r"an id must be hashable .*got dict"):
                await get_user({"a": 1})  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="many\\(\\) takes a list of ids, got str"):
                await get_user.many("123")  # type: ignore[arg-type]

    def test_cache_is_still_the_cache_decorator(self) -> None:
        """``sq.cache`` keeps ``@cache``'s name, docstring and signature beside ``.batch``."""
        assert sq.cache.__name__ == "cache"
        assert sq.cache.__doc__ is not None and sq.cache.__doc__.startswith("Cache an")
        assert sq.cache.batch.__name__ == "batch"

    async def test_the_decorated_function_keeps_its_name(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        get_user = loader(Origin())
        assert get_user.__name__ == "get_users"
        (one,) = inspect.signature(get_user).parameters.values()
        assert (one.name, one.kind) == ("item_id", inspect.Parameter.POSITIONAL_ONLY)
        assert list(inspect.signature(get_user.__wrapped__).parameters) == ["ids"]
        assert get_user.cache_name.endswith("loader.<locals>.get_users") or "#" in (
            get_user.cache_name
        )


def _store_key(func: sq.BatchedFunction[Any, Any], item_id: Any) -> str:
    return "sq:" + canonical_key(("fn", func.cache_name, "user:{}", item_id))[1]
