"""A cold key's first fetch runs in one task of its own: the key's actor starts no task for it.

The actor is only reserved in the registry (the key counts as busy, callers
join its fetch); it starts its own task when something needs it (an
observer, a message such as ``invalidate_queries``), and leaves the registry
when the fetch ends and nothing else is left.
"""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from stackquery import QueryCancelledError
from tests.stackquery.client_origin import Origin

KEY = ("cold", 1)


def options(origin: Origin, **kwargs: object) -> sq.QueryOptions[object]:
    return sq.QueryOptions(query_key=KEY, query_fn=origin, **kwargs)  # type: ignore[arg-type]


def living_tasks() -> int:
    return trio.lowlevel.current_statistics().tasks_living


async def test_a_cold_fetch_costs_one_task_and_leaves_no_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    origin = Origin(delay=5.0)
    async with sq.open_query_client() as client, trio.open_nursery() as nursery:
        await wait_all_tasks_blocked()
        baseline = living_tasks()
        got: list[object] = []

        async def call() -> None:
            got.append(await client.fetch_query(options(origin)))

        nursery.start_soon(call)
        await wait_all_tasks_blocked()
        # The caller and the fetch: no task for the key's actor.
        assert living_tasks() == baseline + 2
        assert client.statistics().active_actors == 1  # reserved: the key is busy
        await trio.sleep(10.0)
        assert got == ["v1"]
        assert origin.calls == 1
        stats = client.statistics()
        assert (stats.active_actors, stats.activations, stats.passivations) == (0, 1, 1)
        assert living_tasks() == baseline


async def test_callers_join_it_and_a_cancelled_caller_never_cancels_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    origin = Origin(delay=5.0)
    async with sq.open_query_client() as client, trio.open_nursery() as nursery:
        got: list[object] = []

        async def call() -> None:
            got.append(await client.fetch_query(options(origin)))

        with trio.move_on_after(1.0):  # the first caller gives up
            await client.fetch_query(options(origin))
        nursery.start_soon(call)
        nursery.start_soon(call)
        await trio.sleep(10.0)
        assert got == ["v1", "v1"]
        assert (origin.calls, origin.cancelled, origin.finished) == (1, 0, 1)
        assert client.get_query_data(KEY) == "v1"


async def test_an_observer_arriving_mid_fetch_starts_the_actor_and_joins_the_fetch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    origin = Origin(delay=5.0)
    async with sq.open_query_client() as client, trio.open_nursery() as nursery:
        got: list[object] = []

        async def call() -> None:
            got.append(await client.fetch_query(options(origin)))

        nursery.start_soon(call)
        await trio.sleep(1.0)
        seen: list[object] = []
        observer = client.watch(options(origin))
        unsubscribe = observer.subscribe(lambda state: seen.append(state.data))
        await trio.sleep(10.0)
        assert got == ["v1"]
        assert origin.calls == 1
        assert seen[-1] == "v1"
        assert client.statistics().active_actors == 1  # the observer keeps it
        unsubscribe()
        await wait_all_tasks_blocked()
        assert client.statistics().active_actors == 0


async def test_cancel_queries_reaches_a_fetch_without_an_actor_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    origin = Origin(delay=5.0)
    async with sq.open_query_client() as client, trio.open_nursery() as nursery:
        errors: list[BaseException] = []

        async def call() -> None:
            try:
                await client.fetch_query(options(origin))
            except QueryCancelledError as exc:
                errors.append(exc)

        nursery.start_soon(call)
        await trio.sleep(1.0)
        await client.cancel_queries(KEY)
        await wait_all_tasks_blocked()
        assert len(errors) == 1
        assert (origin.cancelled, origin.finished) == (1, 0)
        await trio.sleep(10.0)
        assert client.statistics().active_actors == 0


async def test_the_client_closing_wakes_the_waiter_of_such_a_fetch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    origin = Origin(delay=5.0)
    outcome: list[BaseException] = []
    client = sq.QueryClient()

    async def call() -> None:
        try:
            await client.fetch_query(options(origin))
        except sq.ClientClosedError as exc:
            outcome.append(exc)

    async with trio.open_nursery() as outside:
        async with client:
            outside.start_soon(call)
            await trio.sleep(1.0)
        await wait_all_tasks_blocked()
        assert len(outcome) == 1
    assert origin.cancelled == 1
    with pytest.raises(sq.ClientClosedError):
        await client.fetch_query(options(origin))


async def test_a_refetch_started_beside_the_claim_joins_it_even_with_an_instant_origin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The fetch lands no sooner than it did from the actor's task: a refetch started just
    before the claim (a @bg loop's first one beside its first call) joins it."""
    calls: list[int] = []

    async def instant(n: int) -> int:  # returns without a checkpoint
        calls.append(n)
        return n

    async with sq.open_query_client() as client, trio.open_nursery() as nursery:
        for n in range(20):  # trio runs a batch in random order: try both orders often
            opts: sq.QueryOptions[int] = sq.QueryOptions(
                query_key=("beside", n), query_fn=functools.partial(instant, n)
            )
            nursery.start_soon(client.watch(opts).refetch)
            assert await client.fetch_query(opts) == n
            await wait_all_tasks_blocked()
        assert calls == list(range(20))
