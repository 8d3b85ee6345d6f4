"""Specification of retries, backoff, per-attempt timeouts and fetch callbacks."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from stackquery import FetchStatus, QueryState, QueryStatus
from tests.stackquery.client_origin import Failure, Origin

KEY = ("report", 7)


def options(origin: Any, **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=KEY, query_fn=origin, **kwargs)


class TestDefaultRetryDelay:
    @pytest.mark.parametrize(
        ("attempt", "low", "high"),
        [
            (0, 0.5, 1.0),
            (1, 1.0, 2.0),
            (2, 2.0, 4.0),
            (4, 8.0, 16.0),
            (5, 15.0, 30.0),
            (9, 15.0, 30.0),
        ],
    )
    def test_delay_is_capped_exponential_scaled_into_half_to_full(
        self, monkeypatch: pytest.MonkeyPatch, attempt: int, low: float, high: float
    ) -> None:
        """Retry n waits min(2**n, 30) scaled by a factor from 0.5 up to (float rounding of) 1."""
        monkeypatch.setattr(random, "random", lambda: 0.0)
        assert sq.default_retry_delay(attempt) == low
        monkeypatch.setattr(random, "random", lambda: 0.5)
        assert sq.default_retry_delay(attempt) == (low + high) / 2
        # random() < 1, but 0.5 + random() / 2 rounds to 1.0 at its very top.
        monkeypatch.setattr(random, "random", lambda: 1.0 - 2**-53)
        assert sq.default_retry_delay(attempt) == high

    def test_delay_has_jitter_within_its_range(self) -> None:
        """Drawn many times, retry 3's delay spreads over [4, 8) and never leaves it."""
        draws = [sq.default_retry_delay(3) for _ in range(2000)]
        assert all(4.0 <= d <= 8.0 for d in draws)
        assert min(draws) < 4.5
        assert max(draws) > 7.5

    async def test_default_backoff_schedules_attempts_exponentially(
        self, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the default delay (jitter pinned low) attempts start at t=0, 0.5, 1.5 and 3.5."""
        monkeypatch.setattr(random, "random", lambda: 0.0)
        origin = Origin(Failure("down"))
        async with sq.open_query_client() as client:
            with pytest.raises(Failure, match=r"^down$"):
                await client.fetch_query(options(origin))
            assert origin.started_at == [0.0, 0.5, 1.5, 3.5]
            assert trio.current_time() == 3.5


class TestRetry:
    async def test_client_retry_count_applies_when_the_query_gives_none(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """QueryClientConfig(retry=2) makes three attempts, one retry_delay apart."""
        origin = Origin(Failure("down"))
        async with sq.open_query_client(sq.QueryClientConfig(retry=2, retry_delay=1.0)) as client:
            with pytest.raises(Failure):
                await client.fetch_query(options(origin))
            assert origin.started_at == [0.0, 1.0, 2.0]

    async def test_retry_zero_fails_at_once(self, autojump_clock: trio.testing.MockClock) -> None:
        """retry=0 makes one attempt and raises its error at once."""
        origin = Origin(Failure("down"))
        async with sq.open_query_client() as client:
            with pytest.raises(Failure):
                await client.fetch_query(options(origin, retry=0))
            assert (origin.calls, trio.current_time()) == (1, 0.0)

    async def test_retry_delay_function_gets_zero_based_retry_numbers(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A retry_delay function is asked for retries 0, 1, 2 and waited exactly."""
        asked: list[int] = []

        def delay(attempt: int) -> float:
            asked.append(attempt)
            return 10.0 * (attempt + 1)

        origin = Origin(Failure("down"))
        async with sq.open_query_client() as client:
            with pytest.raises(Failure):
                await client.fetch_query(options(origin, retry=3, retry_delay=delay))
        assert asked == [0, 1, 2]
        assert origin.started_at == [0.0, 10.0, 30.0, 60.0]

    async def test_success_after_failures_clears_the_failure_count(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Two failed attempts then a success: the value, and the failure count back to 0."""
        origin = Origin(Failure("a"), Failure("b"), "third time")
        async with sq.open_query_client() as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.fetch_query, options(origin, retry=3, retry_delay=1.0))
                await trio.sleep(1.5)
                state = client.get_query_state(KEY)
                assert state == QueryState(fetch_status=FetchStatus.FETCHING, fetch_failure_count=2)
            assert client.get_query_state(KEY) == QueryState(
                status=QueryStatus.SUCCESS,
                data="third time",
                data_updated_at=client.clock.wall(2.0),
                is_stale=True,
            )
            assert origin.calls == 3

    async def test_final_failure_is_the_state(self, autojump_clock: trio.testing.MockClock) -> None:
        """After the last retry the state holds the last error, its time, every attempt."""
        origin = Origin(Failure("down"))
        async with sq.open_query_client() as client:
            with pytest.raises(Failure) as info:
                await client.fetch_query(options(origin, retry=2, retry_delay=1.0))
            assert info.value is origin.errors[-1]
            assert client.get_query_state(KEY) == QueryState(
                status=QueryStatus.ERROR,
                error=origin.errors[-1],
                error_updated_at=client.clock.wall(2.0),
                fetch_failure_count=3,
            )


class TestTimeout:
    async def test_attempt_past_its_timeout_raises_query_timeout_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An attempt past its timeout is cancelled; the caller gets QueryTimeoutError then."""
        origin = Origin(delay=5.0)
        async with sq.open_query_client() as client:
            with pytest.raises(
                sq.QueryTimeoutError,
                match=r"^query \('report', 7\): an attempt took longer than 2\.0s$",
            ) as info:
                await client.fetch_query(options(origin, retry=0, timeout=2.0))
            assert isinstance(info.value, TimeoutError)
            assert isinstance(info.value, sq.StackqueryError)
            assert trio.current_time() == 2.0
            assert (origin.calls, origin.cancelled) == (1, 1)

    async def test_timeout_is_per_attempt_and_retried(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Each attempt gets its own timeout: attempts at t=0, 3 and 6 each time out 2 s later."""
        origin = Origin(delay=5.0)
        async with sq.open_query_client() as client:
            with pytest.raises(sq.QueryTimeoutError):
                await client.fetch_query(options(origin, retry=2, retry_delay=1.0, timeout=2.0))
            assert origin.started_at == [0.0, 3.0, 6.0]
            assert trio.current_time() == 8.0
            assert origin.cancelled == 3

    async def test_fetch_may_take_longer_than_one_timeout_in_total(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A failed 1.5 s attempt, 1 s backoff and a 1.5 s success fit a 2 s timeout."""
        origin = Origin(Failure("flaky"), "ok", delay=1.5)
        async with sq.open_query_client() as client:
            assert (
                await client.fetch_query(options(origin, retry=1, retry_delay=1.0, timeout=2.0))
                == "ok"
            )
            assert trio.current_time() == 4.0

    async def test_attempt_within_its_timeout_succeeds(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An attempt that finishes before its timeout is not affected by it."""
        origin = Origin(delay=1.999)
        async with sq.open_query_client() as client:
            assert await client.fetch_query(options(origin, retry=0, timeout=2.0)) == "v1"


class TestCallbacks:
    async def test_on_success_and_on_settled_are_called_once_per_fetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Success after a retry calls on_success(data) and on_settled(data, None) once."""
        calls: list[tuple[Any, ...]] = []
        origin = Origin(Failure("flaky"), "ok")
        opts = options(
            origin,
            retry=1,
            retry_delay=1.0,
            on_success=lambda data: calls.append(("success", data)),
            on_error=lambda error: calls.append(("error", error)),
            on_settled=lambda data, error: calls.append(("settled", data, error)),
        )
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
        assert calls == [("success", "ok"), ("settled", "ok", None)]

    async def test_on_error_and_on_settled_get_the_final_error_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Failure after retries calls on_error(error) and on_settled(None, error) once."""
        calls: list[tuple[Any, ...]] = []
        origin = Origin(Failure("down"))
        opts = options(
            origin,
            retry=2,
            retry_delay=1.0,
            on_success=lambda data: calls.append(("success", data)),
            on_error=lambda error: calls.append(("error", error)),
            on_settled=lambda data, error: calls.append(("settled", data, error)),
        )
        async with sq.open_query_client() as client:
            with pytest.raises(Failure):
                await client.fetch_query(opts)
        assert calls == [("error", origin.errors[-1]), ("settled", None, origin.errors[-1])]

    async def test_raising_callbacks_are_logged_and_change_nothing(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Regression: raising on_success/on_settled are logged; data cached, one call."""

        def explode(*_args: Any) -> None:
            raise RuntimeError("callback bug")

        origin = Origin()
        opts = options(origin, stale_time=60.0, on_success=explode, on_settled=explode)
        async with sq.open_query_client() as client:
            with caplog.at_level(logging.ERROR):
                assert await client.fetch_query(opts) == "v1"
                await wait_all_tasks_blocked()
            assert await client.fetch_query(opts) == "v1"
            assert client.get_query_state(KEY).status is QueryStatus.SUCCESS  # type: ignore[union-attr]
            assert client.statistics().restarts == 0
        assert origin.calls == 1
        messages = [r.getMessage() for r in caplog.records if r.name == "stackquery.actor"]
        assert messages == [
            "on_success callback of query ('report', 7) raised",
            "on_settled callback of query ('report', 7) raised",
        ]

    async def test_raising_on_error_is_logged_and_the_caller_gets_the_origin_error(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A raising on_error is logged; the caller still gets the origin's error."""

        def explode(_error: BaseException) -> None:
            raise RuntimeError("callback bug")

        origin = Origin(Failure("down"))
        async with sq.open_query_client() as client:
            with pytest.raises(Failure, match=r"^down$"):
                await client.fetch_query(options(origin, retry=0, on_error=explode))
            await wait_all_tasks_blocked()
        assert origin.calls == 1
        assert [r.getMessage() for r in caplog.records if r.name == "stackquery.actor"] == [
            "on_error callback of query ('report', 7) raised"
        ]
