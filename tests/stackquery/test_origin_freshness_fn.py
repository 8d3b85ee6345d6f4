"""Specification of freshness computed from the data: ``stale_time(data)``,
``refetch_interval(state)`` and ``@cache(ttl=fn)``."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from backends import MemoryStorage
from stackquery import QueryStatus
from tests.stackquery.client_origin import Origin
from tests.stackquery.test_hot_path_guard import _clock_forbidden, _finish_without_yielding

KEY = ("token",)


def token(expires_in: Any) -> dict[str, Any]:
    return {"token": "t", "expires_in": expires_in}


def expires_in(data: dict[str, Any]) -> float:
    return data["expires_in"]  # type: ignore[no-any-return]


def options(origin: Any, **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=KEY, query_fn=origin, **kwargs)


def is_stale(client: sq.QueryClient, key: Any = KEY) -> bool:
    state = client.get_query_state(key)
    assert state is not None
    return state.is_stale


class Counted:
    """A stale_time function that counts its calls."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def __call__(self, _data: Any) -> float:
        self.calls += 1
        return self.seconds


class TestStaleTimeFunction:
    async def test_data_is_fresh_for_what_the_function_computes(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A token with expires_in=60: hits until t=60, stale from then, refetched on read."""
        origin = Origin(token(60.0), token(30.0))
        opts = options(origin, stale_time=expires_in)
        async with sq.open_query_client() as client:
            assert await client.fetch_query(opts) == token(60.0)
            await trio.sleep_until(59.9)
            assert not is_stale(client)
            assert await client.fetch_query(opts) == token(60.0)
            assert origin.calls == 1
            await trio.sleep_until(60.001)
            assert is_stale(client)
            assert await client.fetch_query(opts) == token(60.0)  # stale, served at once
            await wait_all_tasks_blocked()
            assert origin.calls == 2
            # The second token (fetched at t=60.001) says 30 s: fresh until t=90.001.
            await trio.sleep_until(89.9)
            assert not is_stale(client)
            await trio.sleep_until(90.5)
            assert is_stale(client)

    async def test_the_function_runs_once_per_landing_never_on_a_hit(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """1,000 fresh hits: the function ran once, when the data landed."""
        stale_time = Counted(600.0)
        opts = options(Origin(), stale_time=stale_time)
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            for _ in range(1000):
                await client.fetch_query(opts)
        assert stale_time.calls == 1

    async def test_a_fresh_hit_with_a_function_stays_a_lookup_and_a_flag_test(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The hot-path guard holds for a stale_time function: one step, no clock read."""
        stale_time = Counted(600.0)
        opts = options(Origin(), stale_time=stale_time)
        async with sq.open_query_client() as client:
            assert await client.fetch_query(opts) == "v1"
            with _clock_forbidden(monkeypatch):
                assert _finish_without_yielding(lambda: client.fetch_query(opts)) == "v1"
        assert stale_time.calls == 1

    async def test_the_clients_stale_time_function_applies_when_the_query_gives_none(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """QueryClientConfig(stale_time=fn) judges a query that leaves stale_time None."""
        config = sq.QueryClientConfig(stale_time=expires_in)
        async with sq.open_query_client(config) as client:
            await client.fetch_query(options(Origin(token(5.0))))
            await trio.sleep_until(4.9)
            assert not is_stale(client)
            await trio.sleep_until(5.001)
            assert is_stale(client)

    async def test_inf_means_never_stale(self, autojump_clock: trio.testing.MockClock) -> None:
        """A function returning math.inf: the data never goes stale (gc_time=inf keeps it)."""
        async with sq.open_query_client() as client:
            opts = options(Origin(token(math.inf)), stale_time=expires_in, gc_time=math.inf)
            await client.fetch_query(opts)
            await trio.sleep_until(10_000.0)
            assert not is_stale(client)

    async def test_data_from_l2_is_judged_by_the_function(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A second client reading the token from L2 computes its period from the stored value."""
        memory = MemoryStorage()
        config = sq.QueryClientConfig(storage=memory)
        first = Origin(token(50.0))
        async with sq.open_query_client(config) as client:
            await client.fetch_query(options(first, stale_time=expires_in))
        second = Origin(token(1.0))
        async with sq.open_query_client(config) as client:
            assert await client.fetch_query(options(second, stale_time=expires_in)) == token(50.0)
            assert second.calls == 0
            assert not is_stale(client)
            await trio.sleep_until(trio.current_time() + 50.001)
            assert is_stale(client)


class TestStaleTimeFunctionFailures:
    @pytest.mark.parametrize("bad", [-1.0, math.nan, "60", None, True])
    async def test_a_bad_value_is_logged_counted_and_the_data_is_stale_at_once(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, bad: Any
    ) -> None:
        """Negative, NaN, text, None, a bool: data kept (success), stale now, one error counted."""
        origin = Origin(token(bad), token(bad))
        opts = options(origin, stale_time=expires_in)
        async with sq.open_query_client() as client:
            with caplog.at_level(logging.ERROR, logger="stackquery.freshness"):
                assert await client.fetch_query(opts) == token(bad)
            state = client.get_query_state(KEY)
            assert state is not None
            assert (state.status, state.data, state.is_stale) == (
                QueryStatus.SUCCESS,
                token(bad),
                True,
            )
            assert client.statistics().freshness_errors == 1
            assert "stale_time function" in caplog.text
            # Stale: the next read serves it and refetches (one more origin call).
            assert await client.fetch_query(opts) == token(bad)
            await wait_all_tasks_blocked()
            assert origin.calls == 2

    async def test_a_function_that_raises_is_logged_counted_never_raised(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """stale_time raising KeyError: the caller gets the data; it is stale; counted, logged."""
        async with sq.open_query_client() as client:
            with caplog.at_level(logging.ERROR, logger="stackquery.freshness"):
                data = await client.fetch_query(options(Origin({}), stale_time=expires_in))
            assert data == {}
            assert is_stale(client)
            assert client.statistics().freshness_errors == 1
            assert "KeyError" in caplog.text
            assert client.statistics().restarts == 0


class Job:
    """A job's status, read by polling: running, running, done."""

    def __init__(self, *statuses: str) -> None:
        self.origin = Origin(*({"status": s} for s in statuses))


def until_done(state: sq.QueryState[Any]) -> float | None:
    if state.data is not None and state.data["status"] == "done":
        return None
    return 5.0


class TestRefetchIntervalFunction:
    async def test_polls_a_job_until_it_is_done_then_stops(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """running, running, done: polls at t=0, 5, 10, then no origin call up to t=100."""
        job = Job("running", "running", "done")
        async with sq.open_query_client() as client:
            opts = options(job.origin, refetch_interval=until_done)
            unsubscribe = client.watch(opts).subscribe(lambda _state: None)
            await trio.sleep_until(100.0)
            data = client.get_query_data(KEY)
            unsubscribe()
        assert job.origin.started_at == [0.0, 5.0, 10.0]
        assert data == {"status": "done"}

    async def test_polling_resumes_when_the_function_asks_again_after_data_lands(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """None while pending, 5 s while running: the first fetch's data starts polling."""

        def while_running(state: sq.QueryState[Any]) -> float | None:
            running = state.data is not None and state.data["status"] == "running"
            return 5.0 if running else None

        job = Job("running", "done")
        async with sq.open_query_client() as client:
            opts = options(job.origin, refetch_interval=while_running)
            unsubscribe = client.watch(opts).subscribe(lambda _state: None)
            await trio.sleep_until(100.0)
            unsubscribe()
        assert job.origin.started_at == [0.0, 5.0]

    async def test_a_function_that_raises_stops_polling_logged_and_counted(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """refetch_interval raising: no polling (one fetch for the observer), one error counted."""

        def broken(_state: sq.QueryState[Any]) -> float:
            raise RuntimeError("no interval")

        origin = Origin()
        async with sq.open_query_client() as client:
            with caplog.at_level(logging.ERROR, logger="stackquery.freshness"):
                unsubscribe = client.watch(options(origin, refetch_interval=broken)).subscribe(
                    lambda _state: None
                )
                await trio.sleep_until(100.0)
                unsubscribe()
            # Asked when the observer came and again when the first data landed.
            assert client.statistics().freshness_errors == 2
        assert origin.started_at == [0.0]
        assert "refetch_interval function" in caplog.text

    @pytest.mark.parametrize("bad", [0, -5.0, math.nan, "5"])
    async def test_a_bad_interval_stops_polling(
        self, autojump_clock: trio.testing.MockClock, bad: Any
    ) -> None:
        """0, a negative, NaN or text from the function: treated as None (counted)."""
        origin = Origin()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin, refetch_interval=lambda _s: bad)).subscribe(
                lambda _state: None
            )
            await trio.sleep_until(100.0)
            unsubscribe()
            assert client.statistics().freshness_errors == 2
        assert origin.started_at == [0.0]


class TestCacheTtlFunction:
    async def test_each_value_is_fresh_for_its_own_ttl(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """@cache(ttl=lambda v: v['max_age']): key 1 fresh 10 s, key 2 fresh 100 s."""
        calls: list[tuple[int, float]] = []

        @sq.cache(lambda value: value["max_age"], key="doc:{}")
        async def doc(n: int) -> dict[str, float]:
            calls.append((n, trio.current_time()))
            return {"max_age": 10.0 if n == 1 else 100.0}

        async with sq.open_query_client():
            await doc(1)
            await doc(2)
            await trio.sleep_until(50.0)
            await doc(1)  # past its 10 s, stale=0: the caller waits for a new value
            await doc(2)  # fresh until t=100
            await trio.sleep_until(100.5)
            await doc(2)
        assert calls == [(1, 0.0), (2, 0.0), (1, 50.0), (2, 100.5)]

    async def test_a_long_computed_ttl_outlives_the_clients_gc_time(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """ttl(value)=1000 with gc_time=300: still a hit at t=900 (kept while fresh)."""
        calls = 0

        @sq.cache(lambda _value: 1000.0)
        async def config_doc() -> str:
            nonlocal calls
            calls += 1
            return "doc"

        async with sq.open_query_client(sq.QueryClientConfig(gc_time=300.0)):
            await config_doc()
            await trio.sleep_until(900.0)
            assert await config_doc() == "doc"
            assert calls == 1
            await trio.sleep_until(1000.5)
            await config_doc()
            assert calls == 2

    async def test_stale_serves_for_stale_seconds_after_the_computed_ttl(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """ttl(value)=10, stale=5: at t=12 the old value at once (refresh behind); at t=30 wait."""
        values = iter(["a", "b", "c"])
        started: list[float] = []

        @sq.cache(lambda _v: 10.0, stale=5.0)
        async def get() -> str:
            started.append(trio.current_time())
            return next(values)

        async with sq.open_query_client():
            assert await get() == "a"
            await trio.sleep_until(12.0)
            assert await get() == "a"
            await wait_all_tasks_blocked()
            assert await get() == "b"
            await trio.sleep_until(12.0 + 10.0 + 5.0)  # past b's ttl + stale
            assert await get() == "c"
        assert started == [0.0, 12.0, 27.0]


def one_argument(data: Any) -> float:
    return 1.0


class TestBadFreshnessInput:
    @pytest.mark.parametrize(
        ("kwargs", "pattern"),
        [
            ({"stale_time": lambda: 1.0}, r"^stale_time must be a number of seconds or a function"),
            ({"stale_time": lambda a, b: 1.0}, r"which does not take 1 argument$"),
            ({"refetch_interval": lambda: 1.0}, r"^refetch_interval must be a number of seconds"),
        ],
    )
    def test_a_function_of_the_wrong_arity_is_a_type_error(
        self, kwargs: dict[str, Any], pattern: str
    ) -> None:
        """stale_time(data) and refetch_interval(state) take one argument."""
        with pytest.raises(TypeError, match=pattern):
            options(Origin(), **kwargs)

    def test_the_configs_stale_time_function_is_checked_too(self) -> None:
        """QueryClientConfig(stale_time=lambda: 1) is a TypeError."""
        with pytest.raises(TypeError, match=r"^stale_time must be a number of seconds or a"):
            sq.QueryClientConfig(stale_time=lambda: 1.0)

    def test_cache_ttl_function_of_the_wrong_arity_is_a_type_error(self) -> None:
        """@cache(ttl=lambda: 1) fails when the decorator is made."""
        with pytest.raises(TypeError, match=r"^cache\(\): ttl must be a number of seconds or"):
            sq.cache(lambda: 1.0)  # type: ignore[arg-type]

    def test_a_one_argument_function_is_accepted_everywhere(self) -> None:
        """The same function serves as stale_time and refetch_interval."""
        opts = options(Origin(), stale_time=one_argument, refetch_interval=one_argument)
        assert opts.stale_time is one_argument
        assert sq.QueryClientConfig(stale_time=one_argument).stale_time is one_argument
