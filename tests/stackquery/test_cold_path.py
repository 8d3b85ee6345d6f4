"""A cold key's first fetch runs in one task, not its own: the key's actor starts no task for it.

The actor is only reserved in the registry (the key counts as busy, callers
join its fetch); it starts its own task when something needs it (an
observer, a message such as ``invalidate_queries``), and leaves the registry
when the fetch ends and nothing else is left.  The fetch runs in a lane when
one is free (a task of the client that runs one fetch at a time in its own
body, so that the fetch needs neither a task nor a cancel scope of its own),
else in a task of the client's nursery; an idle lane ends after ``LANE_IDLE``
seconds.
"""

from __future__ import annotations

import contextvars
import functools

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from stackquery import QueryCancelledError
from stackquery._fetch_lanes import LANE_IDLE
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


@pytest.mark.parametrize("in_lane", [False, True], ids=["own-task", "in-a-lane"])
async def test_the_client_closing_wakes_the_waiter_of_such_a_fetch(
    autojump_clock: trio.testing.MockClock, in_lane: bool
) -> None:
    """In a task of its own (the first cold fetch) or in a lane (one that follows)."""
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
            if in_lane:
                await client.fetch_query(sq.QueryOptions(query_key=("lane", 0), query_fn=Origin()))
                await wait_all_tasks_blocked()
                assert lanes() == 1
            outside.start_soon(call)
            await trio.sleep(1.0)
            assert origin.calls == 1
        await wait_all_tasks_blocked()
        assert len(outcome) == 1
    assert (origin.cancelled, origin.finished) == (1, 0)
    assert lanes() == 0
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


async def test_a_prefetch_landing_is_joined_in_its_batch_and_not_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With nobody waiting on the fetch, a refetch beside its claim still joins it, and the
    key's actor leaves the registry once that batch is over: the next refetch calls again."""
    calls: list[int] = []

    async def instant() -> int:  # returns without a checkpoint
        calls.append(1)
        return len(calls)

    async with sq.open_query_client() as client, trio.open_nursery() as nursery:
        for n in range(20):  # trio runs a batch in random order: try both orders often
            opts: sq.QueryOptions[int] = sq.QueryOptions(
                query_key=("prefetched", n), query_fn=instant
            )
            observer = client.watch(opts)
            nursery.start_soon(observer.refetch)
            await client.prefetch_query(opts)
            await wait_all_tasks_blocked()
            assert len(calls) == 2 * n + 1
            assert client.statistics().active_actors == 0
            assert (await observer.refetch()).data == 2 * n + 2
            assert client.get_query_data(opts.query_key) == 2 * n + 2


class _Batches(trio.abc.Instrument):
    """Counts the scheduling batches of trio's run loop (one I/O wait before each)."""

    def __init__(self) -> None:
        self.count = 0

    def before_io_wait(self, timeout: float) -> None:
        self.count += 1


async def test_a_cold_key_with_an_instant_origin_costs_its_caller_two_batches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The claim's batch, then the lane's, in which the origin returns and the fetch lands:
    the caller resumes in the next one (the fetch's landing joined until then)."""

    async def instant(n: int) -> int:  # returns without a checkpoint
        return n

    def opts(n: int) -> sq.QueryOptions[int]:
        return sq.QueryOptions(query_key=("two", n), query_fn=functools.partial(instant, n))

    async with sq.open_query_client() as client:
        await client.fetch_query(opts(0))
        await wait_all_tasks_blocked()  # a lane is parked now
        batches = _Batches()
        trio.lowlevel.add_instrument(batches)
        try:
            for n in range(1, 4):
                assert await client.fetch_query(opts(n)) == n
        finally:
            trio.lowlevel.remove_instrument(batches)
        assert batches.count == 3 * 2
        assert client.statistics().active_actors == 0


def task_names() -> list[str]:
    """The names of every living task, from the root down."""
    names: list[str] = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        names.append(task.name)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return names


def lanes() -> int:
    return task_names().count("stackquery-fetch-lane")


async def test_cold_keys_one_after_another_share_a_lane_that_ends_when_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sq.open_query_client() as client:
        await wait_all_tasks_blocked()
        baseline = living_tasks()
        for n in range(5):
            origin = Origin(delay=0.0)
            opts = sq.QueryOptions(query_key=("one-after-another", n), query_fn=origin)
            assert await client.fetch_query(opts) == "v1"
            await wait_all_tasks_blocked()
            # The first fetch found no lane and started one for the next ones.
            assert lanes() == 1
        await trio.sleep(3 * LANE_IDLE)  # idle through a whole period of its own
        assert lanes() == 0
        assert living_tasks() == baseline


async def test_cancel_queries_cancels_a_fetch_in_a_lane_and_no_other(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sq.open_query_client() as client, trio.open_nursery() as nursery:
        first = Origin(delay=0.0)
        await client.fetch_query(sq.QueryOptions(query_key=("lane", 0), query_fn=first))
        await wait_all_tasks_blocked()
        assert lanes() == 1
        in_lane, beside = Origin(delay=5.0), Origin(delay=5.0)
        outcomes: dict[str, object] = {}

        async def call(name: str, origin: Origin) -> None:
            opts = sq.QueryOptions(query_key=("lane", name), query_fn=origin)
            try:
                outcomes[name] = await client.fetch_query(opts)
            except QueryCancelledError as exc:
                outcomes[name] = exc

        nursery.start_soon(call, "in-lane", in_lane)
        await wait_all_tasks_blocked()
        nursery.start_soon(call, "beside", beside)  # no free lane: a scope of its own
        await trio.sleep(1.0)
        await client.cancel_queries(("lane", "in-lane"))
        await trio.sleep(10.0)
        assert isinstance(outcomes["in-lane"], QueryCancelledError)
        assert (in_lane.calls, in_lane.cancelled, in_lane.finished) == (1, 1, 0)
        assert outcomes["beside"] == "v1"
        assert (beside.calls, beside.cancelled, beside.finished) == (1, 0, 1)
        assert client.get_query_state(("lane", "in-lane")).status is sq.QueryStatus.PENDING  # type: ignore[union-attr]
        # The lane ended with its fetch; the key fetches again, in a lane or not.
        assert (
            await client.fetch_query(
                sq.QueryOptions(query_key=("lane", "in-lane"), query_fn=in_lane)
            )
            == "v2"
        )


REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")


async def test_the_origin_sees_the_context_of_the_caller_that_started_its_fetch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[str] = []

    async def origin() -> str:
        seen.append(REQUEST.get())
        return "v"

    async with sq.open_query_client() as client:
        for n in range(3):  # the first without a lane, the others in one
            REQUEST.set(f"request-{n}")
            opts = sq.QueryOptions(query_key=("context", n), query_fn=origin)
            await client.fetch_query(opts)
            await wait_all_tasks_blocked()
    assert seen == ["request-0", "request-1", "request-2"]


async def test_a_fetch_in_a_lane_runs_in_the_lane_s_task_and_no_task_is_spawned_for_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A fetch handed to a free lane costs no task of its own: the lane's task runs it."""
    async with sq.open_query_client() as client, trio.open_nursery() as nursery:
        await client.fetch_query(sq.QueryOptions(query_key=("lane", 0), query_fn=Origin()))
        await wait_all_tasks_blocked()
        assert lanes() == 1
        baseline = living_tasks()
        origin = Origin(delay=5.0)
        got: list[object] = []

        async def call() -> None:
            got.append(await client.fetch_query(options(origin)))

        nursery.start_soon(call)
        await trio.sleep(1.0)
        assert living_tasks() == baseline + 1  # the caller alone
        assert origin.calls == 1
        await trio.sleep(10.0)
        assert got == ["v1"]


async def test_a_lane_busy_with_a_long_fetch_outlives_the_idle_periods_it_spans(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Only a lane that ran no fetch for a whole period ends, never one running a fetch."""
    async with sq.open_query_client() as client:
        await client.fetch_query(sq.QueryOptions(query_key=("lane", 0), query_fn=Origin()))
        await wait_all_tasks_blocked()
        assert lanes() == 1
        origin = Origin(delay=4.5 * LANE_IDLE)
        assert await client.fetch_query(options(origin)) == "v1"
        assert (origin.calls, origin.cancelled, origin.finished) == (1, 0, 1)
        await wait_all_tasks_blocked()
        assert lanes() == 1  # the same lane, still there
        await trio.sleep(3 * LANE_IDLE)
        assert lanes() == 0
