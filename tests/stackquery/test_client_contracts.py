"""Contracts that held on the happy path but broke under a hostile one.

Each test here failed before its fix: a waiter that was never woken, a bad
callback that crashed a key's actor, a refetch too many, a reset that did
not reach the origin.  Named after the behaviour a user relies on.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from backends import MemoryStorage
from stackquery import _query_actor
from stackquery._query_actor import QueryActor
from tests.stackquery.client_origin import Failure, Origin

KEY = ("report", 7)


class Crash(Exception):
    """A bug inside the actor (not an origin failure)."""


def options(origin: Any, key: tuple[Any, ...] = KEY, **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=key, query_fn=origin, **kwargs)


MUST = r"must be a finite number of seconds >= 0$"


class TestBadRetryDelay:
    @pytest.mark.parametrize(
        ("delay", "message"),
        [
            (
                lambda _n: -1.0,
                r"^retry_delay\(0\) returned -1\.0: must be a finite number of seconds >= 0$",
            ),
            (
                lambda _n: math.nan,
                r"^retry_delay\(0\) returned nan: must be a finite number of seconds >= 0$",
            ),
            (
                lambda _n: None,
                r"^retry_delay\(0\) returned None: must be a finite number of seconds >= 0$",
            ),
            (lambda _n: 1 / 0, r"^retry_delay\(0\) raised ZeroDivisionError: division by zero$"),
        ],
    )
    async def test_a_bad_retry_delay_fails_the_fetch_with_one_origin_call(
        self, autojump_clock: trio.testing.MockClock, delay: Any, message: str
    ) -> None:
        """A retry_delay that raises or returns no valid delay fails that fetch, naming it."""
        origin = Origin(Failure("down"))
        async with sq.open_query_client() as client:
            with pytest.raises(sq.InvalidOptionError, match=message) as caught:
                await client.fetch_query(options(origin, retry=3, retry_delay=delay))
            assert isinstance(caught.value.__context__ or caught.value.__cause__, Exception)
            state = client.get_query_state(KEY)
            assert state is not None and state.status is sq.QueryStatus.ERROR
            assert isinstance(state.error, sq.InvalidOptionError)
            await wait_all_tasks_blocked()
            assert origin.calls == 1
            assert client.statistics().restarts == 0

    async def test_a_bad_retry_delay_in_the_config_fails_the_fetch_too(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The client's retry_delay is checked the same way when a query uses it."""
        origin = Origin(Failure("down"))
        config = sq.QueryClientConfig(retry=2, retry_delay=lambda _n: -5)
        async with sq.open_query_client(config) as client:
            with pytest.raises(sq.InvalidOptionError, match=r"^retry_delay\(0\) returned -5"):
                await client.fetch_query(options(origin))
            assert origin.calls == 1
            assert client.statistics().restarts == 0


class TestRaisingInitialData:
    async def test_an_initial_data_factory_that_raises_at_reset_is_the_callers_error_only(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Six resets whose initial_data raises each raise to their caller; the client lives."""
        calls = 0

        def initial() -> str:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise Crash("no initial data today")
            return "initial"

        origin = Origin(delay=100.0)
        async with sq.open_query_client() as client:
            observer = client.watch(options(origin, initial_data=initial, stale_time=1000.0))
            unsubscribe = observer.subscribe(lambda _s: None)
            await wait_all_tasks_blocked()
            for _ in range(6):
                with pytest.raises(Crash, match=r"^no initial data today$"):
                    await client.reset_queries(KEY)
            await wait_all_tasks_blocked()
            assert client.statistics().restarts == 0
            assert await client.fetch_query(options(Origin("later"), ("other",))) == "later"
            unsubscribe()


class TestCancelAfterInvalidate:
    async def test_cancel_after_invalidate_leaves_no_refetch_behind(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Invalidated during a fetch, then cancelled: the next fetch is not followed by another."""
        origin = Origin(delay=1.0)
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin)).subscribe(lambda _s: None)
            await wait_all_tasks_blocked()  # the observer's fetch is in flight
            assert origin.calls == 1
            await client.invalidate_queries(KEY)
            assert await client.cancel_queries(KEY) == 1
            await wait_all_tasks_blocked()
            await client.invalidate_queries(KEY)  # an unrelated, later refetch
            await trio.sleep(10.0)
            assert origin.calls == 2
            assert origin.finished == 1
            unsubscribe()


class TestResetWithL2:
    async def test_reset_of_an_observed_key_asks_the_origin_not_l2(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Reset means the origin is asked again, even while L2 holds the value from before."""
        origin = Origin("before", "after")
        config = sq.QueryClientConfig(storage=MemoryStorage())
        async with sq.open_query_client(config) as client:
            seen: list[Any] = []
            observer = client.watch(options(origin, stale_time=1000.0))
            unsubscribe = observer.subscribe(lambda s: seen.append(s.data))
            await trio.sleep(1.0)  # fetched, and written to L2
            assert client.get_query_data(KEY) == "before"
            await client.reset_queries(KEY)
            await trio.sleep(1.0)
            assert origin.calls == 2
            assert client.get_query_data(KEY) == "after"
            assert seen[-1] == "after"
            unsubscribe()


class TestWaitersWokenAtTheEnd:
    async def test_a_caller_outside_the_client_is_woken_when_an_actor_escalates(
        self, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past the restart intensity the client fails; the crashed key's waiter outside wakes."""
        original = QueryActor._handle

        def crash_on_invalidate(self: QueryActor, message: Any) -> None:
            if isinstance(message, _query_actor.Invalidate):
                raise Crash("bug in the actor")
            original(self, message)

        monkeypatch.setattr(QueryActor, "_handle", crash_on_invalidate)
        outcome: list[str] = []
        config = sq.QueryClientConfig(restart_intensity=sq.RestartIntensity(max_restarts=0))
        async with trio.open_nursery() as outside:
            with pytest.RaisesGroup(Crash, flatten_subgroups=True):
                async with sq.open_query_client(config) as client:

                    async def caller() -> None:
                        try:
                            await client.fetch_query(options(Origin(delay=100.0)))
                        except sq.ClientClosedError:
                            outcome.append("closed")

                    outside.start_soon(caller)
                    await wait_all_tasks_blocked()
                    with contextlib.suppress(Crash):  # the asker gets the crash too
                        await client.invalidate_queries(KEY)
                    await trio.sleep_forever()
            with trio.fail_after(1.0):
                await wait_all_tasks_blocked()
        assert outcome == ["closed"]

    async def test_updates_consumed_outside_the_client_end_when_it_closes(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An ``updates()`` stream read from outside the client ends when the client closes."""
        seen: list[Any] = []
        ended = trio.Event()
        async with trio.open_nursery() as outside:
            async with sq.open_query_client() as client:
                observer = client.watch(options(Origin("v")))

                async def consume() -> None:
                    async with observer.updates() as states:
                        async for state in states:
                            seen.append(state.data)
                    ended.set()

                outside.start_soon(consume)
                await trio.sleep(1.0)
            with trio.fail_after(1.0):
                await ended.wait()
        assert seen[-1] == "v"


_UNDER_ASYNCIO = """
import asyncio, sys
import stackquery as sq

async def origin():
    return 1

async def open_one():
    async with sq.open_query_client():
        pass

async def fetch_one():
    await sq.QueryClient().fetch_query(sq.QueryOptions(query_key=("k",), query_fn=origin))

for main in (open_one, fetch_one):
    try:
        asyncio.run(main())
    except RuntimeError as exc:
        print(type(exc).__name__, exc)
"""


class TestOutsideTrio:
    def test_used_under_asyncio_the_client_says_stackquery_runs_under_trio(self) -> None:
        """Opened or used from asyncio, the client raises one clear error, not an internal one.

        In a fresh interpreter: a test that used trio-asyncio before leaves asyncio patched.
        """
        done = subprocess.run(
            [sys.executable, "-c", _UNDER_ASYNCIO],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
            check=True,
        )
        message = (
            "RuntimeError stackquery runs under trio: use the client inside trio.run "
            "(from asyncio code, through trio-asyncio)"
        )
        assert done.stdout.splitlines() == [message, message]


class TestMaxQueries:
    async def test_max_queries_holds_when_every_key_was_hit_since_the_last_eviction(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """max_queries=4 bounds L1 even when each cached key was read by a fresh hit."""
        config = sq.QueryClientConfig(max_queries=4, stale_time=1000.0)
        async with sq.open_query_client(config) as client:
            for n in range(200):
                await client.fetch_query(options(Origin(n), ("k", n)))
                for record in client.snapshot():
                    await client.fetch_query(options(Origin(), record.key))  # a fresh hit
                assert client.statistics().queries <= 4
            assert client.statistics().queries == 4

    async def test_evicted_keys_do_not_keep_their_timer_entries(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """5,000 keys through max_queries=100: the timer heap stays near the bound, not 5,000."""
        config = sq.QueryClientConfig(max_queries=100, stale_time=60.0)
        async with sq.open_query_client(config) as client:
            for n in range(5000):
                await client.fetch_query(options(Origin(n), ("k", n)))
                assert client.statistics().timers <= 2 * 100 + 256 + 1
            assert client.statistics().queries == 100


class TestBgTtl:
    async def test_bg_ttl_is_a_hard_bound_while_a_refresh_hangs(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With ttl=15, a value fetched at 1.0 is not served after 16.0 while its refresh hangs."""
        calls = 0

        async def origin() -> str:
            nonlocal calls
            calls += 1
            if calls > 1:
                await trio.sleep_forever()
            await trio.sleep(1.0)
            return "a"

        @sq.bg(10, key="hangs", ttl=15)
        async def load() -> Any:
            return await origin()

        async with sq.open_query_client(sq.QueryClientConfig(retry=0)):
            assert await load() == "a"
            await trio.sleep(13.0)  # 14.0: the refresh started at 11.0 hangs
            assert await load() == "a"
            await trio.sleep(2.5)  # 16.5
            with trio.move_on_after(5.0) as waiting:
                await load()
            assert waiting.cancelled_caught
            assert calls == 2

    async def test_bg_ttl_zero_serves_no_cached_value(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With ttl=0 each call waits for a fresh load: the value of a second ago is not served."""
        values = iter(["a", "b", "c"])

        async def origin() -> str:
            await trio.sleep(1.0)
            return next(values)

        @sq.bg(10, key="zero", ttl=0)
        async def load() -> Any:
            return await origin()

        async with sq.open_query_client(sq.QueryClientConfig(retry=0)):
            assert await load() == "a"
            assert await load() == "b"
            assert trio.current_time() == 2.0


class TestFetchQueryInput:
    async def test_fetch_query_given_something_else_than_options_says_what_it_got(self) -> None:
        """fetch_query({...}) is a TypeError naming the type, not an AttributeError."""
        async with sq.open_query_client() as client:
            with pytest.raises(TypeError, match=r"^options must be a QueryOptions, got dict$"):
                await client.fetch_query({"query_key": KEY})  # type: ignore[arg-type]


class TestFoundByTheModel:
    async def test_data_set_while_a_fetch_runs_goes_stale_on_time(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Data set while the key's fetch is in flight is stale once its stale time has passed."""
        origin = Origin(delay=100.0)
        async with sq.open_query_client(sq.QueryClientConfig(stale_time=10.0)) as client:
            await client.prefetch_query(options(origin))
            await client.set_query_data(KEY, "set")
            await trio.sleep(11.0)
            state = client.get_query_state(KEY)
            assert state is not None
            assert (state.data, state.fetch_status, state.is_stale) == (
                "set",
                sq.FetchStatus.FETCHING,
                True,
            )

    async def test_reset_uncaches_an_unobserved_key_being_fetched(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """reset_queries drops an unobserved key whose fetch is in flight, as an idle one."""
        outcomes: list[Any] = []
        async with sq.open_query_client() as client, trio.open_nursery() as nursery:

            async def caller() -> None:
                try:
                    outcomes.append(await client.fetch_query(options(Origin(delay=100.0))))
                except sq.QueryCancelledError as exc:
                    outcomes.append(exc)

            nursery.start_soon(caller)
            await wait_all_tasks_blocked()
            assert await client.reset_queries(KEY) == 1
            await wait_all_tasks_blocked()
            assert [type(outcome) for outcome in outcomes] == [sq.QueryCancelledError]
            assert client.get_query_state(KEY) is None
