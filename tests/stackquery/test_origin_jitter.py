"""Specification of jitter: fresh periods (and ``@bg`` intervals) spread by ±jitter, seedable."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest
import trio
import trio.testing

import stackquery as sq
from tests.stackquery.client_origin import Origin

KEYS = 50


def expected_periods(seed: int, seconds: float, jitter: float, count: int) -> list[float]:
    """The periods a client seeded with ``seed`` draws, in order (the documented formula)."""
    rng = random.Random(seed)
    return [seconds * (1.0 + jitter * (2.0 * rng.random() - 1.0)) for _ in range(count)]


def options(n: int, **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=("item", n), query_fn=Origin(), **kwargs)


async def stale_ats(client: sq.QueryClient, opts: list[sq.QueryOptions[Any]]) -> list[float]:
    for o in opts:
        await client.fetch_query(o)
    return [client.snapshots[o.key_hash].stale_at for o in opts]


class TestQueryJitter:
    async def test_keys_filled_together_go_stale_spread_over_plus_minus_ten_percent(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """50 keys fetched at t=0, stale_time=100, jitter=0.1: stale at the seeded draws."""
        opts = [options(n, stale_time=100.0, jitter=0.1) for n in range(KEYS)]
        async with sq.open_query_client(sq.QueryClientConfig(seed=7)) as client:
            got = await stale_ats(client, opts)
        assert got == expected_periods(7, 100.0, 0.1, KEYS)
        assert all(90.0 <= t <= 110.0 for t in got)
        assert len(set(got)) == KEYS

    async def test_the_spread_shows_in_origin_calls(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """At t=100 exactly the keys whose draw was below 100 are stale and refetched."""
        opts = [options(n, stale_time=100.0, jitter=0.1) for n in range(KEYS)]
        async with sq.open_query_client(sq.QueryClientConfig(seed=11)) as client:
            await stale_ats(client, opts)
            await trio.sleep_until(100.0)
            for o in opts:
                await client.fetch_query(o)
            await trio.testing.wait_all_tasks_blocked()
            calls = sum(o.query_fn.calls for o in opts)  # type: ignore[attr-defined]
        early = sum(1 for p in expected_periods(11, 100.0, 0.1, KEYS) if p <= 100.0)
        assert 0 < early < KEYS
        assert calls == KEYS + early

    async def test_the_clients_jitter_applies_when_the_query_gives_none(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """QueryClientConfig(jitter=0.2): queries without jitter are spread by ±20%."""
        opts = [options(n, stale_time=10.0) for n in range(KEYS)]
        async with sq.open_query_client(sq.QueryClientConfig(jitter=0.2, seed=3)) as client:
            got = await stale_ats(client, opts)
        assert got == expected_periods(3, 10.0, 0.2, KEYS)

    async def test_a_query_jitter_of_zero_overrides_the_clients(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """jitter=0 on the query: exactly stale_time, whatever the client's jitter."""
        opts = [options(n, stale_time=10.0, jitter=0.0) for n in range(5)]
        async with sq.open_query_client(sq.QueryClientConfig(jitter=0.5)) as client:
            assert await stale_ats(client, opts) == [10.0] * 5

    async def test_no_jitter_by_default(self, autojump_clock: trio.testing.MockClock) -> None:
        """Without jitter anywhere, stale_at is fetch time + stale_time exactly."""
        opts = [options(n, stale_time=10.0) for n in range(5)]
        async with sq.open_query_client() as client:
            assert await stale_ats(client, opts) == [10.0] * 5

    async def test_a_computed_stale_time_is_jittered_too(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """stale_time(data) and jitter together: the computed period is spread."""
        opts = [options(n, stale_time=lambda _d: 40.0, jitter=0.1) for n in range(KEYS)]
        async with sq.open_query_client(sq.QueryClientConfig(seed=5)) as client:
            assert await stale_ats(client, opts) == expected_periods(5, 40.0, 0.1, KEYS)

    async def test_zero_and_infinite_stale_times_are_not_jittered_and_draw_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """stale_time 0 and inf stay as they are; the next draw is the seed's first."""
        async with sq.open_query_client(sq.QueryClientConfig(seed=9, jitter=0.1)) as client:
            await client.fetch_query(options(0, stale_time=0.0))
            await client.fetch_query(options(1, stale_time=math.inf))
            got = await stale_ats(client, [options(2, stale_time=10.0)])
            assert client.snapshots[options(1).key_hash].stale_at == math.inf
        assert got == expected_periods(9, 10.0, 0.1, 1)

    async def test_same_seed_same_spread_and_the_global_random_is_untouched(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Two clients seeded alike draw alike; random's global state is never used."""
        random.seed(1234)
        before = random.getstate()
        runs = []
        for _ in range(2):
            opts = [options(n, stale_time=100.0, jitter=0.1) for n in range(10)]
            async with sq.open_query_client(sq.QueryClientConfig(seed=42)) as client:
                runs.append(await stale_ats(client, opts))
        assert runs[0] == runs[1]
        assert random.getstate() == before


class TestDecoratorJitter:
    async def test_cache_jitter_spreads_each_entrys_ttl(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """@cache(100, jitter=0.1): 50 entries filled at t=0 go stale at the seeded draws."""

        @sq.cache(100.0, jitter=0.1, key="row:{}")
        async def row(n: int) -> int:
            return n

        async with sq.open_query_client(sq.QueryClientConfig(seed=21)) as client:
            for n in range(KEYS):
                await row(n)
            got = [snap.stale_at for snap in client.snapshots.values()]
        assert got == expected_periods(21, 100.0, 0.1, KEYS)

    async def test_a_jittered_cache_entry_is_kept_while_fresh(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An entry drawn above its ttl is still a hit past ttl (gc covers the drawn period)."""
        calls = 0

        @sq.cache(100.0, jitter=0.5)
        async def value() -> int:
            nonlocal calls
            calls += 1
            return 1

        seed = next(s for s in range(100) if expected_periods(s, 100.0, 0.5, 1)[0] > 140.0)
        period = expected_periods(seed, 100.0, 0.5, 1)[0]
        async with sq.open_query_client(sq.QueryClientConfig(seed=seed)):
            await value()
            await trio.sleep_until(period - 1.0)
            await value()
            assert calls == 1
            await trio.sleep_until(period + 0.5)
            await value()
            assert calls == 2

    async def test_bg_jitter_spreads_each_interval(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """@bg(10, jitter=0.1): refreshes at the seeded, spread times."""
        started: list[float] = []

        @sq.bg(10.0, key="flags-jitter", jitter=0.1)
        async def flags() -> float:
            started.append(trio.current_time())
            return trio.current_time()

        async with sq.open_query_client(sq.QueryClientConfig(seed=4)):
            await flags()
            await trio.sleep_until(55.0)
        expected = [0.0]
        for pause in expected_periods(4, 10.0, 0.1, 10):
            if expected[-1] + pause > 55.0:
                break
            expected.append(expected[-1] + pause)
        assert started == expected
        assert len({round(b - a, 9) for a, b in itertools.pairwise(started)}) > 1

    async def test_bg_without_jitter_keeps_its_exact_interval(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """No jitter: refreshes at exactly 0, 10, 20, ..."""
        started: list[float] = []

        @sq.bg(10.0, key="flags-exact")
        async def flags() -> int:
            started.append(trio.current_time())
            return 1

        async with sq.open_query_client():
            await flags()
            await trio.sleep_until(35.0)
        assert started == [0.0, 10.0, 20.0, 30.0]


class TestBadJitterInput:
    @pytest.mark.parametrize("jitter", [-0.1, 1.0, 1.5, math.nan, math.inf])
    @pytest.mark.parametrize(
        "make",
        [
            lambda j: options(0, jitter=j),
            lambda j: sq.QueryClientConfig(jitter=j),
        ],
        ids=["QueryOptions", "QueryClientConfig"],
    )
    def test_jitter_outside_zero_to_one_is_refused(self, make: Any, jitter: float) -> None:
        """jitter must be in [0, 1): InvalidOptionError naming it."""
        with pytest.raises(sq.InvalidOptionError, match=r"^jitter must be in \[0, 1\), got "):
            make(jitter)

    @pytest.mark.parametrize("jitter", ["0.1", True, [0.1]])
    def test_jitter_that_is_not_a_number_is_refused(self, jitter: Any) -> None:
        """A str, bool or list: InvalidOptionError naming its type."""
        with pytest.raises(sq.InvalidOptionError, match=r"^jitter must be a number in \[0, 1\)"):
            options(0, jitter=jitter)

    def test_the_decorators_refuse_a_bad_jitter_when_made(self) -> None:
        """@cache and @bg name themselves in the message."""
        with pytest.raises(sq.InvalidOptionError, match=r"^cache\(\): jitter must be in \[0, 1\)"):
            sq.cache(10, jitter=1.0)
        with pytest.raises(sq.InvalidOptionError, match=r"^bg\(\): jitter must be in \[0, 1\)"):
            sq.bg(10, key="k", jitter=-0.5)

    @pytest.mark.parametrize("seed", ["42", 1.5, True])
    def test_a_seed_that_is_not_an_int_is_refused(self, seed: Any) -> None:
        """seed is None or an int."""
        with pytest.raises(sq.InvalidOptionError, match=r"^seed must be None or an int, got "):
            sq.QueryClientConfig(seed=seed)
