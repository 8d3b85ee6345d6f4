"""origin-retry's protections hold on perf-core's cold path (a cold key's first fetch runs
without its actor's task): error_ttl, cache_if, stale_time(data), and the gc deadline
(``collect_at``) that error_ttl and max_stale push back."""

from __future__ import annotations

import contextlib

import pytest
import trio
import trio.testing

import stackquery as sq
from tests.stackquery.client_origin import Failure, Origin

KEY = ("cold-origin", 1)


def options(origin: Origin, **kwargs: object) -> sq.QueryOptions[object]:
    return sq.QueryOptions(query_key=KEY, query_fn=origin, **kwargs)  # type: ignore[arg-type]


async def test_a_cold_failure_is_remembered_and_answered_without_an_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    origin = Origin(Failure("down"), "ok")
    opts = options(origin, retry=0, error_ttl=10.0)
    async with sq.open_query_client() as client:
        with pytest.raises(Failure) as first:
            await client.fetch_query(opts)
        stats = client.statistics()
        # The fetch ran without the actor's task, which was never started nor left behind.
        assert (stats.active_actors, stats.activations, stats.passivations) == (0, 1, 1)
        with pytest.raises(Failure) as second:
            await client.fetch_query(opts)
        assert second.value is first.value
        assert origin.calls == 1
        assert client.statistics().activations == 1  # answered with no actor at all
        await trio.sleep_until(10.0)
        assert await client.fetch_query(opts) == "ok"
        assert origin.calls == 2


async def test_error_ttl_keeps_the_key_past_gc_time_then_gc_collects_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    origin = Origin(Failure("down"))
    opts = options(origin, retry=0, gc_time=1.0, error_ttl=100.0)
    async with sq.open_query_client() as client:
        with pytest.raises(Failure):
            await client.fetch_query(opts)
        snap = client.snapshots[opts.key_hash]
        assert snap.collect_at == 100.0
        assert snap.error_count == 1
        await trio.sleep_until(99.0)
        assert opts.key_hash in client.snapshots
        await trio.sleep_until(120.0)  # window over, unused since t=0: collected
        assert opts.key_hash not in client.snapshots


async def test_cache_if_refuses_a_cold_value(autojump_clock: trio.testing.MockClock) -> None:
    origin = Origin(None, "ok")
    opts = options(origin, cache_if=lambda value: value is not None, stale_time=60.0)
    async with sq.open_query_client() as client:
        assert await client.fetch_query(opts) is None
        assert await client.fetch_query(opts) == "ok"
        assert await client.fetch_query(opts) == "ok"
        assert origin.calls == 2


async def test_stale_time_from_the_data_on_a_cold_fetch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    origin = Origin({"ttl": 5.0})
    opts = options(origin, stale_time=lambda data: data["ttl"])
    async with sq.open_query_client() as client:
        await client.fetch_query(opts)
        snap = client.snapshots[opts.key_hash]
        assert (snap.stale_at, snap.fresh) == (5.0, True)
        await client.fetch_query(opts)
        assert origin.calls == 1
        await trio.sleep_until(6.0)
        assert not client.snapshots[opts.key_hash].fresh


async def test_max_stale_keeps_the_key_for_its_period_plus_max_stale(
    autojump_clock: trio.testing.MockClock,
) -> None:
    origin = Origin("a")
    opts = options(origin, stale_time=10.0, gc_time=1.0, max_stale=50.0)
    async with sq.open_query_client() as client:
        await client.fetch_query(opts)
        assert client.snapshots[opts.key_hash].collect_at == 60.0
        await trio.sleep_until(59.0)
        assert opts.key_hash in client.snapshots
        await trio.sleep_until(80.0)
        assert opts.key_hash not in client.snapshots


async def test_keys_landing_one_after_another_each_land_with_their_own_settings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A landing reuses what the last one with the same settings computed: a key with
    another stale_time, gc_time or max_stale, or one that failed before, lands with its own
    (periods from trio time 0, where a wall stamp maps back exactly)."""
    async with sq.open_query_client(sq.QueryClientConfig(retry=0)) as client:

        async def land(n: int, origin: Origin, **kwargs: object) -> sq.QueryOptions[object]:
            opts = sq.QueryOptions(query_key=("alike", n), query_fn=origin, **kwargs)  # type: ignore[arg-type]
            with contextlib.suppress(Failure):
                await client.fetch_query(opts)
            return opts

        def landed(opts: sq.QueryOptions[object]) -> tuple[object, ...]:
            snap = client.snapshots[opts.key_hash]
            return (snap.data, snap.fresh, snap.stale_at, snap.collect_at, snap.state.status.value)

        ten, twenty, five, one, hundred = 10.0, 20.0, 5.0, 1.0, 100.0
        first = await land(1, Origin(1), stale_time=ten)
        alike = await land(2, Origin(2), stale_time=ten)
        other_stale = await land(3, Origin(3), stale_time=twenty)
        other_gc = await land(4, Origin(4), stale_time=ten, gc_time=five)
        max_stale = await land(5, Origin(5), stale_time=ten, gc_time=one, max_stale=hundred)
        failed = await land(6, Origin(Failure("down"), 6), stale_time=ten)
        assert await client.refetch_queries(failed.query_key) == 1
        last = await land(7, Origin(7), stale_time=ten)
        assert trio.current_time() == 0.0
        assert landed(first) == (1, True, 10.0, 300.0, "success")
        assert landed(alike) == (2, True, 10.0, 300.0, "success")
        assert landed(other_stale) == (3, True, 20.0, 300.0, "success")
        assert landed(other_gc) == (4, True, 10.0, 5.0, "success")
        assert landed(max_stale) == (5, True, 10.0, 110.0, "success")
        assert landed(failed) == (6, True, 10.0, 300.0, "success")
        assert client.get_query_state(failed.query_key).error_updated_at is not None  # type: ignore[union-attr]
        assert landed(last) == (7, True, 10.0, 300.0, "success")
        assert client.get_query_state(last.query_key).error_updated_at is None  # type: ignore[union-attr]
