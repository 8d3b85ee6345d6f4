"""Specification of ``CircuitBreaker``: states, probes, cancellation, and its use by queries."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from stackquery import CacheEventType, CircuitState, QueryStatus
from tests.stackquery.client_origin import Failure, Origin

A = ("user", 1)
B = ("user", 2)


async def fail() -> None:
    raise Failure("down")


async def succeed() -> str:
    return "ok"


async def call(breaker: sq.CircuitBreaker, fn: Any) -> Any:
    """``breaker.call(fn)``, its error returned instead of raised."""
    try:
        return await breaker.call(fn)
    except Exception as exc:
        return exc


class TestStates:
    async def test_opens_after_threshold_consecutive_failures(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Two failures, a success (count reset), then three failures in a row open it."""
        breaker = sq.CircuitBreaker(failure_threshold=3, recovery_time=10.0)
        for fn in (fail, fail, succeed, fail, fail):
            await call(breaker, fn)
        assert breaker.state is CircuitState.CLOSED
        assert breaker.statistics().consecutive_failures == 2
        await call(breaker, fail)
        assert breaker.statistics().state is CircuitState.OPEN
        stats = breaker.statistics()
        assert (stats.calls, stats.successes, stats.failures, stats.opened) == (6, 1, 5, 1)
        assert stats.retry_at == trio.current_time() + 10.0

    async def test_open_refuses_without_calling(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """While open, calls raise CircuitOpenError at once and the function is never called."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=10.0, name="upstream")
        await call(breaker, fail)
        origin = Origin("v")
        start = trio.current_time()
        with pytest.raises(sq.CircuitOpenError, match=r"^circuit 'upstream' is open") as info:
            await breaker.call(origin)
        assert (origin.calls, trio.current_time()) == (0, start)
        assert (info.value.circuit, info.value.retry_at) == ("upstream", start + 10.0)
        assert breaker.statistics().refused == 1

    async def test_one_probe_after_recovery_time_closes_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After recovery_time one probe goes through, others are refused meanwhile; it closes."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=10.0)
        await call(breaker, fail)
        await trio.sleep(9.999)
        assert isinstance(await call(breaker, succeed), sq.CircuitOpenError)
        await trio.sleep(0.001)
        probe = Origin("back", delay=1.0)
        results: list[Any] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _append(results, call(breaker, probe)))
            await wait_all_tasks_blocked()
            assert breaker.state is CircuitState.HALF_OPEN
            assert breaker.statistics().probes_in_flight == 1
            refused = await call(breaker, succeed)
            assert isinstance(refused, sq.CircuitOpenError)
            assert refused.retry_at == -math.inf
        assert results == ["back"]
        assert probe.calls == 1
        stats = breaker.statistics()
        assert (stats.state, stats.half_opened, stats.closed, stats.probes_in_flight) == (
            CircuitState.CLOSED,
            1,
            1,
            0,
        )

    async def test_failed_probe_opens_it_for_another_recovery_time(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A probe that fails opens the breaker again, counted from the probe's failure."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=10.0)
        await call(breaker, fail)
        await trio.sleep(10.0)
        await call(breaker, fail)
        assert breaker.state is CircuitState.OPEN
        assert breaker.statistics().retry_at == trio.current_time() + 10.0
        assert breaker.statistics().opened == 2

    async def test_half_open_calls_probes_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """half_open_calls=2: two probes run together, a third is refused; the first decides."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=5.0, half_open_calls=2)
        await call(breaker, fail)
        await trio.sleep(5.0)
        slow, fast = Origin("slow", delay=2.0), Origin("fast", delay=1.0)
        results: list[Any] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _append(results, call(breaker, slow)))
            nursery.start_soon(lambda: _append(results, call(breaker, fast)))
            await wait_all_tasks_blocked()
            assert isinstance(await call(breaker, succeed), sq.CircuitOpenError)
        assert results == ["fast", "slow"]
        assert (breaker.state, breaker.statistics().closed) == (CircuitState.CLOSED, 1)

    async def test_cancelled_probe_frees_its_slot(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A probe cancelled mid-call decides nothing; the next call probes and closes it."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=5.0)
        await call(breaker, fail)
        await trio.sleep(5.0)
        hanging = Origin(delay=math.inf)
        with trio.move_on_after(1.0):
            await breaker.call(hanging)
        assert hanging.cancelled == 1
        stats = breaker.statistics()
        assert (stats.state, stats.probes_in_flight, stats.abandoned) == (
            CircuitState.HALF_OPEN,
            0,
            1,
        )
        assert await breaker.call(succeed) == "ok"
        assert breaker.state is CircuitState.CLOSED

    async def test_outcome_from_before_a_transition_moves_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A call let through while closed that succeeds after the breaker opened leaves it open."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=60.0)
        slow = Origin("late", delay=2.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, breaker, slow)
            await wait_all_tasks_blocked()
            await call(breaker, fail)
        assert breaker.state is CircuitState.OPEN
        stats = breaker.statistics()
        assert (stats.successes, stats.failures, stats.opened, stats.closed) == (1, 1, 1, 0)

    def test_a_new_trio_run_starts_closed(self) -> None:
        """A breaker opened in one trio.run is closed in the next (another clock)."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=1000.0)

        async def open_it() -> None:
            await call(breaker, fail)

        async def use_it() -> Any:
            return await breaker.call(succeed)

        trio.run(open_it)
        assert breaker.state is CircuitState.OPEN
        assert trio.run(use_it) == "ok"
        assert breaker.statistics().calls == 1


async def _append(results: list[Any], awaitable: Any) -> None:
    results.append(await awaitable)


BAD = sq.InvalidOptionError
RECOVERY = r"^recovery_time must be a finite number of seconds > 0, "


class TestValidation:
    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"failure_threshold": 0}, BAD, r"^failure_threshold must be an int >= 1, got 0$"),
            (
                {"failure_threshold": True},
                BAD,
                r"^failure_threshold must be an int >= 1, got True$",
            ),
            ({"half_open_calls": 0}, BAD, r"^half_open_calls must be an int >= 1, got 0$"),
            ({"recovery_time": 0}, BAD, RECOVERY + r"got 0$"),
            ({"recovery_time": math.inf}, BAD, RECOVERY + r"got inf$"),
            ({"recovery_time": "30"}, BAD, RECOVERY + r"got '30'$"),
            ({"name": 3}, TypeError, r"^name must be a str, got int: 3$"),
        ],
    )
    def test_bad_settings(self, kwargs: dict[str, Any], error: type, message: str) -> None:
        """A setting out of range raises at construction, naming the setting."""
        with pytest.raises(error, match=message):
            sq.CircuitBreaker(**kwargs)

    @pytest.mark.parametrize("who", ["QueryOptions", "cache", "bg"])
    def test_circuit_must_be_a_breaker(self, who: str) -> None:
        """circuit= takes a CircuitBreaker or None, wherever it is given."""
        with pytest.raises(TypeError, match=r"circuit must be a stackquery\.CircuitBreaker"):
            if who == "QueryOptions":
                sq.QueryOptions(query_key=A, query_fn=succeed, circuit="upstream")  # type: ignore[arg-type]
            elif who == "cache":
                sq.cache(10, circuit=object())  # type: ignore[arg-type]
            else:
                sq.bg(10, key="k", circuit=5)  # type: ignore[arg-type]


def options(origin: Any, key: Any = A, **kwargs: Any) -> sq.QueryOptions[Any]:
    kwargs.setdefault("retry", 0)
    return sq.QueryOptions(query_key=key, query_fn=origin, **kwargs)


async def outcome(client: sq.QueryClient, opts: sq.QueryOptions[Any]) -> Any:
    """``fetch_query``'s value, or the exception it raised."""
    try:
        return await client.fetch_query(opts)
    except Exception as exc:
        return exc


class TestQueries:
    async def test_failures_count_per_origin_call_and_stop_the_retries(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """retry=5, threshold 2: two failed attempts open it; the next retry is refused and ends."""
        breaker = sq.CircuitBreaker(failure_threshold=2, recovery_time=60.0)
        origin = Origin(Failure("down"))
        async with sq.open_query_client() as client:
            error = await outcome(
                client, options(origin, circuit=breaker, retry=5, retry_delay=1.0)
            )
            assert isinstance(error, sq.CircuitOpenError)
            # Attempts at t=0 and t=1; the retry due at t=2 is refused and ends the fetch.
            assert (origin.calls, trio.current_time()) == (2, 2.0)
            state = client.get_query_state(A)
            assert state is not None
            # The refused retry counts as the fetch's third failed attempt.
            assert (state.status, state.error, state.fetch_failure_count) == (
                QueryStatus.ERROR,
                error,
                3,
            )

    async def test_cold_callers_get_circuit_open_error_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Another key on the open breaker fails at once, with no origin call and no retry."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=60.0)
        down, other = Origin(Failure("down")), Origin("b")
        async with sq.open_query_client() as client:
            await outcome(client, options(down, circuit=breaker))
            start = trio.current_time()
            error = await outcome(client, options(other, B, circuit=breaker, retry=3))
            assert isinstance(error, sq.CircuitOpenError)
            assert (other.calls, trio.current_time()) == (0, start)

    async def test_stale_data_is_served_while_open(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A stale read returns the old data; its refetch is refused without an origin call."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=60.0)
        origin = Origin("v1", Failure("down"), "v3")
        async with sq.open_query_client() as client:
            opts = options(origin, circuit=breaker)
            assert await client.fetch_query(opts) == "v1"
            assert isinstance(
                await outcome(client, options(Origin(Failure("x")), B, circuit=breaker)), Failure
            )
            assert breaker.state is CircuitState.OPEN
            assert await client.fetch_query(opts) == "v1"
            await wait_all_tasks_blocked()
            assert origin.calls == 1
            state = client.get_query_state(A)
            assert state is not None
            assert (state.data, state.status, type(state.error)) == (
                "v1",
                QueryStatus.ERROR,
                sq.CircuitOpenError,
            )

    async def test_probe_after_recovery_closes_and_refreshes(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After recovery_time the next read's refetch is the probe; it succeeds and closes."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=30.0)
        origin = Origin(Failure("down"), "v2")
        async with sq.open_query_client() as client:
            assert isinstance(await outcome(client, options(origin, circuit=breaker)), Failure)
            await trio.sleep(29.0)
            assert isinstance(
                await outcome(client, options(origin, circuit=breaker)), sq.CircuitOpenError
            )
            assert origin.calls == 1
            await trio.sleep(1.0)
            assert await client.fetch_query(options(origin, circuit=breaker)) == "v2"
            assert (origin.calls, breaker.state) == (2, CircuitState.CLOSED)

    async def test_shared_by_two_clients(self, autojump_clock: trio.testing.MockClock) -> None:
        """Failures in one client open the breaker for the other client's queries too."""
        breaker = sq.CircuitBreaker(failure_threshold=2, recovery_time=60.0)
        origin = Origin("never")
        async with sq.open_query_client() as first, sq.open_query_client() as second:
            await outcome(first, options(Origin(Failure("x")), A, circuit=breaker))
            await outcome(second, options(Origin(Failure("x")), B, circuit=breaker))
            error = await outcome(first, options(origin, ("user", 3), circuit=breaker))
            assert isinstance(error, sq.CircuitOpenError)
            assert origin.calls == 0
            assert first.statistics().circuits == second.statistics().circuits
            assert first.statistics().circuits[0].refused == 1

    async def test_visible_in_statistics_snapshot_and_events(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """statistics() lists the breaker, snapshot() each key's breaker state, events its moves."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=10.0, name="users-api")
        origin = Origin(Failure("down"), "v2")
        async with sq.open_query_client() as client:
            assert client.statistics().circuits == ()
            stream = client.events()
            await outcome(client, options(origin, circuit=breaker))
            (record,) = client.snapshot()
            assert record.circuit is CircuitState.OPEN
            await trio.sleep(10.0)
            assert await client.fetch_query(options(origin, circuit=breaker)) == "v2"
            (record,) = client.snapshot()
            assert record.circuit is CircuitState.CLOSED
            (stats,) = client.statistics().circuits
            assert (stats.name, stats.state, stats.opened, stats.half_opened, stats.closed) == (
                "users-api",
                CircuitState.CLOSED,
                1,
                1,
                1,
            )
            await stream.aclose()
            kinds = [
                e.type for e in [e async for e in stream] if e.type.value.startswith("circuit")
            ]
            assert kinds == [
                CacheEventType.CIRCUIT_OPENED,
                CacheEventType.CIRCUIT_HALF_OPENED,
                CacheEventType.CIRCUIT_CLOSED,
            ]

    async def test_decorated_functions_share_a_breaker(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """@cache and @bg functions on one breaker: the @cache failure refuses the @bg call."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=60.0)
        calls = {"user": 0, "flags": 0}

        @sq.cache(10, circuit=breaker)
        async def get_user(user_id: int) -> dict[str, int]:
            calls["user"] += 1
            raise Failure("down")

        @sq.bg(5, key="flags", circuit=breaker)
        async def load_flags() -> dict[str, bool]:
            calls["flags"] += 1
            return {"beta": True}

        async with sq.open_query_client(sq.QueryClientConfig(retry=0)):
            with pytest.raises(Failure):
                await get_user(1)
            with pytest.raises(sq.CircuitOpenError):
                await load_flags()
            assert calls == {"user": 1, "flags": 0}


class TestMetrics:
    async def test_in_memory_metrics_count_transitions_and_refusals(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """metrics= on the breaker counts opened, refused, half_opened, closed under its name."""
        metrics = sq.InMemoryMetrics()
        breaker = sq.CircuitBreaker(
            failure_threshold=1, recovery_time=1.0, name="api", metrics=metrics
        )
        await call(breaker, fail)
        await call(breaker, succeed)
        await trio.sleep(1.0)
        await call(breaker, succeed)
        assert metrics.get_stats()["caches"]["api"]["circuit"] == {
            "opened": 1,
            "refused": 1,
            "half_opened": 1,
            "closed": 1,
        }

    async def test_prometheus_counts_circuit_operations(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The Prometheus exporter counts circuit_<event> operations with the breaker as cache."""
        registry = CollectorRegistry()
        metrics = sq.PrometheusMetrics(registry=registry)
        breaker = sq.CircuitBreaker(
            failure_threshold=1, recovery_time=1.0, name="api", metrics=metrics
        )
        await call(breaker, fail)
        await call(breaker, succeed)
        labels = {"cache": "api", "operation": "circuit_refused"}
        assert registry.get_sample_value("stackquery_cache_operations_total", labels) == 1.0
        labels["operation"] = "circuit_opened"
        assert registry.get_sample_value("stackquery_cache_operations_total", labels) == 1.0


class TestProbeCancellation:
    async def test_cancel_queries_on_a_probe_leaves_the_breaker_usable(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A probe fetch cancelled by cancel_queries frees its slot: the next fetch probes."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=10.0)
        hanging = Origin(delay=math.inf)
        async with sq.open_query_client() as client:
            await outcome(client, options(Origin(Failure("down")), circuit=breaker))
            await trio.sleep(10.0)
            await client.prefetch_query(options(hanging, B, circuit=breaker))
            await wait_all_tasks_blocked()
            assert breaker.statistics().probes_in_flight == 1
            assert await client.cancel_queries(B) == 1
            await wait_all_tasks_blocked()
            stats = breaker.statistics()
            assert (stats.state, stats.probes_in_flight, stats.abandoned, hanging.cancelled) == (
                CircuitState.HALF_OPEN,
                0,
                1,
                1,
            )
            assert await client.fetch_query(options(Origin("back"), circuit=breaker)) == "back"
            assert breaker.state is CircuitState.CLOSED
