"""Specification of the client's lifecycle: the nursery it owns, shutdown, supervision."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from stackquery import _query_actor
from stackquery._query_actor import QueryActor
from tests.stackquery.client_origin import Origin

KEY = ("job", 1)
CLOSED = r"^the query client is not open: use it inside `async with`$"


class Crash(Exception):
    """A bug inside the key's actor (not a failing query_fn)."""


def options(origin: Any, **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=KEY, query_fn=origin, **kwargs)


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task of the run, found from the root task down."""
    found: set[trio.lowlevel.Task] = set()
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return found


class TestContextManager:
    async def test_query_client_is_its_own_async_context_manager(self) -> None:
        """QueryClient(config) enters as itself, with its config, and reports new/open/closed."""
        config = sq.QueryClientConfig(stale_time=5.0)
        client = sq.QueryClient(config)
        assert repr(client) == "<QueryClient new queries=0>"
        async with client as entered:
            assert entered is client
            assert client.config is config
            await client.set_query_data(KEY, 1)
            assert repr(client) == "<QueryClient open queries=1>"
        assert repr(client) == "<QueryClient closed queries=1>"

    async def test_open_query_client_defaults(self) -> None:
        """open_query_client() with no config uses the default QueryClientConfig."""
        async with sq.open_query_client() as client:
            assert client.config == sq.QueryClientConfig()
            assert (client.config.stale_time, client.config.gc_time, client.config.retry) == (
                0.0,
                300.0,
                3,
            )

    async def test_client_can_be_entered_only_once(self) -> None:
        """Entering a client a second time, open or closed, raises RuntimeError."""
        client = sq.QueryClient()
        async with client:
            with pytest.raises(RuntimeError, match=r"^a QueryClient can be entered only once$"):
                await client.__aenter__()
        with pytest.raises(RuntimeError, match=r"^a QueryClient can be entered only once$"):
            await client.__aenter__()

    async def test_current_client_is_the_innermost_open_one(self) -> None:
        """current_client() is the innermost open client, and None outside every client."""
        assert sq.current_client() is None
        async with sq.open_query_client() as outer:
            assert sq.current_client() is outer
            async with sq.open_query_client() as inner:
                assert sq.current_client() is inner
            assert sq.current_client() is outer
        assert sq.current_client() is None

    async def test_client_not_entered_refuses_work(self) -> None:
        """A client never entered raises ClientClosedError for a fetch and for its clock."""
        client = sq.QueryClient()
        with pytest.raises(sq.ClientClosedError, match=CLOSED):
            await client.fetch_query(options(Origin()))
        with pytest.raises(sq.ClientClosedError, match=CLOSED):
            client.clock  # noqa: B018


class TestBodyExceptions:
    async def test_an_error_raised_in_the_block_comes_out_unwrapped(self) -> None:
        """The body's own exception leaves the block as raised, not inside an ExceptionGroup."""
        with pytest.raises(KeyError, match=r"^'missing'$"):
            async with sq.open_query_client():
                raise KeyError("missing")

    async def test_a_cancelled_block_still_flushes_its_writes_to_l2(self) -> None:
        """Leaving by cancellation still lands the values fetched inside the block in L2."""
        from backends import MemoryStorage

        store = MemoryStorage()

        async def load() -> int:
            return 7

        with trio.CancelScope() as scope:
            async with sq.open_query_client(sq.QueryClientConfig(storage=store)) as client:
                assert await client.fetch_query(sq.QueryOptions(query_key=KEY, query_fn=load)) == 7
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        raw = await store.get('sq:["job",1]')
        assert raw is not None and b'"d":7' in raw


class TestShutdown:
    async def test_leaving_cancels_fetches_observers_and_timers_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Exit at t=1 cancels a fetch and a poller, returns at t=1, leaves no task behind."""
        slow, polled = Origin(delay=100.0), Origin(delay=100.0)
        before = all_tasks()
        async with sq.open_query_client() as client:
            await client.prefetch_query(options(slow))
            client.watch(
                sq.QueryOptions(query_key=("poll",), query_fn=polled, refetch_interval=1.0)
            ).subscribe(lambda _s: None)
            await trio.sleep(1.0)
            assert len(all_tasks()) > len(before)
        assert trio.current_time() == 1.0
        assert all_tasks() == before
        assert (slow.calls, slow.cancelled, polled.calls, polled.cancelled) == (1, 1, 1, 1)
        assert client.statistics().active_actors == 0

    async def test_many_keys_leave_no_task_behind(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After work on 50 keys, exit leaves the run's tasks as they were before."""
        before = all_tasks()
        async with sq.open_query_client() as client:
            unsubscribes = []
            for n in range(50):
                opts = sq.QueryOptions(query_key=("k", n), query_fn=Origin(delay=float(n % 3)))
                await client.prefetch_query(opts)
                if n % 2:
                    unsubscribes.append(client.watch(opts).subscribe(lambda _s: None))
            await client.invalidate_queries(("k",))
            await client.remove_queries(("k",), predicate=lambda key, _state: key[1] % 5 == 0)
            await trio.sleep(1.5)
        assert all_tasks() == before

    async def test_the_client_refuses_work_after_close(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After the block, every method that needs the runtime raises ClientClosedError."""
        origin = Origin()
        async with sq.open_query_client() as client:
            pass
        with pytest.raises(sq.ClientClosedError, match=CLOSED):
            await client.fetch_query(options(origin))
        with pytest.raises(sq.ClientClosedError, match=CLOSED):
            await client.prefetch_query(options(origin))
        with pytest.raises(sq.ClientClosedError, match=CLOSED):
            await client.set_query_data(KEY, 1)
        with pytest.raises(sq.ClientClosedError, match=CLOSED):
            await client.invalidate_queries()
        with pytest.raises(sq.ClientClosedError, match=CLOSED):
            client.watch(options(origin))
        assert origin.calls == 0

    async def test_fresh_data_is_still_readable_after_close(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A fresh hit needs no runtime, so it is served after close, as documented."""
        opts = options(Origin(), stale_time=60.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
        assert await client.fetch_query(opts) == "v1"
        assert client.get_query_data(KEY) == "v1"

    async def test_waiter_outside_the_client_gets_an_error_when_it_closes(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A waiter outside the block gets ClientClosedError when the client closes, not a hang."""
        outcome: list[tuple[float, BaseException]] = []

        async def waiter(client: sq.QueryClient) -> None:
            with trio.fail_after(1000.0):
                try:
                    await client.fetch_query(options(Origin(delay=100.0)))
                except sq.ClientClosedError as exc:
                    outcome.append((trio.current_time(), exc))

        async with trio.open_nursery() as outer, sq.open_query_client() as client:
            outer.start_soon(waiter, client)
            await trio.sleep(1.0)
        assert [at for at, _ in outcome] == [1.0]
        with pytest.raises(
            sq.ClientClosedError, match=r"^the query client closed before the fetch finished$"
        ):
            raise outcome[0][1]


class TestSupervision:
    async def test_crashed_actor_is_restarted_and_the_waiter_gets_its_value(
        self,
        autojump_clock: trio.testing.MockClock,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A bug in the actor mid-fetch restarts it; the fetch reruns; the waiter gets a value.

        The bug strikes while the origin is called: in the fetch of a cold key,
        which runs without a task of the actor's own (it is handed to one).
        """
        original = QueryActor._attempts
        crashes: list[object] = []

        async def attempts_then_crash_once(self: QueryActor, fetch: Any) -> Any:
            if crashes:
                return await original(self, fetch)
            crashes.append(fetch)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(original, self, fetch)
                await trio.sleep(1.0)
                raise Crash("bug in the actor")

        monkeypatch.setattr(QueryActor, "_attempts", attempts_then_crash_once)
        origin = Origin(delay=5.0)
        async with sq.open_query_client() as client:
            assert await client.fetch_query(options(origin)) == "v2"
            assert trio.current_time() == 6.0
            await wait_all_tasks_blocked()
            stats = client.statistics()
            assert (stats.restarts, stats.active_actors) == (1, 0)
        assert (origin.started_at, origin.cancelled, origin.finished) == ([0.0, 1.0], 1, 1)
        records = [r for r in caplog.records if r.name == "actors.supervisor"]
        assert len(records) == 1
        assert records[0].getMessage().endswith(" crashed; restarting it")

    async def test_crash_while_handling_a_request_fails_the_request(
        self, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A crash handling invalidate_queries' message raises in its caller, not a hang."""
        original = QueryActor._handle
        crashes: list[object] = []

        def crash_on_first_invalidate(self: QueryActor, message: Any) -> None:
            if isinstance(message, _query_actor.Invalidate) and not crashes:
                crashes.append(message)
                raise Crash("bug in the actor")
            original(self, message)

        monkeypatch.setattr(QueryActor, "_handle", crash_on_first_invalidate)
        origin = Origin()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin)).subscribe(lambda _s: None)
            await wait_all_tasks_blocked()
            with trio.fail_after(10.0), pytest.raises(Crash, match=r"^bug in the actor$"):
                await client.invalidate_queries(KEY)
            assert await client.invalidate_queries(KEY) == 1
            await wait_all_tasks_blocked()
            assert client.statistics().restarts == 1
            assert origin.calls == 2
            unsubscribe()

    async def test_crashes_past_the_restart_intensity_fail_the_client_loudly(
        self, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An actor that always crashes is restarted 5 times, then fails the client's block."""

        def always_crash(self: QueryActor) -> None:
            raise Crash("bug in the actor")

        monkeypatch.setattr(QueryActor, "_start_pending_fetch", always_crash)
        client = sq.QueryClient()
        with pytest.RaisesGroup(
            Crash, flatten_subgroups=True, match=r"^Exceptions from Trio nursery"
        ):
            async with client:
                await client.fetch_query(options(Origin()))
        assert client.statistics().restarts == 5
