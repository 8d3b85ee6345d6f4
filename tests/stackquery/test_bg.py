"""Specification of ``@bg``, ``bg.write`` and ``bg.read`` within one process."""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from backends import MemoryStorage
from stackquery._entry import unpack_entry
from stackquery._keys import canonical_key
from stackquery.serializers import json as json_serializer

NO_RETRY = sq.QueryClientConfig(retry=0)


class Source:
    """An origin returning its scripted outcomes in turn (then ``n<call>``), 1 s per call."""

    def __init__(self, *outcomes: Any, delay: float = 1.0) -> None:
        self.outcomes = list(outcomes)
        self.delay = delay
        self.started_at: list[float] = []

    @property
    def calls(self) -> int:
        return len(self.started_at)

    async def __call__(self) -> Any:
        self.started_at.append(trio.current_time())
        await trio.sleep(self.delay)
        if not self.outcomes:
            return f"n{self.calls}"
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class TestRefreshLoop:
    async def test_first_call_waits_then_calls_are_instant(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The first call waits for the first load; later calls return the latest value at once."""
        source = Source()

        @sq.bg(10, key="flags")
        async def flags() -> Any:
            return await source()

        async with sq.open_query_client(NO_RETRY):
            assert await flags() == "n1"
            assert trio.current_time() == 1.0
            with trio.testing.assert_no_checkpoints():
                for _ in range(5):
                    assert await flags() == "n1"
            await trio.sleep(10.5)  # the second refresh started at 10.0
            assert await flags() == "n2"
            await trio.sleep(20.0)
            assert await flags() == "n4"
            assert source.started_at == [0.0, 10.0, 20.0, 30.0]

    async def test_loop_stops_with_the_client(self, autojump_clock: trio.testing.MockClock) -> None:
        """The refresh loop runs in the client's nursery: closing the client ends it."""
        source = Source()

        @sq.bg(10, key="flags")
        async def flags() -> Any:
            return await source()

        async with sq.open_query_client(NO_RETRY):
            await flags()
            await trio.sleep(25.0)
        assert source.calls == 3
        await trio.sleep(100.0)
        assert source.calls == 3

    async def test_failed_refresh_keeps_the_value_and_the_loop(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A failing refresh keeps the last value, calls on_error, and the loop goes on."""
        errors: list[BaseException] = []
        source = Source("a", RuntimeError("down"), RuntimeError("down"), "b")

        @sq.bg(10, key="rates", on_error=errors.append)
        async def rates() -> Any:
            return await source()

        async with sq.open_query_client(NO_RETRY):
            assert await rates() == "a"
            await trio.sleep(25.0)
            assert await rates() == "a"
            assert [str(e) for e in errors] == ["down", "down"]
            await trio.sleep(10.0)
            assert await rates() == "b"
            assert source.started_at == [0.0, 10.0, 20.0, 30.0]

    async def test_failed_refresh_is_retried_with_backoff(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A failing refresh is retried per the client's retry and retry_delay before on_error."""
        errors: list[BaseException] = []
        source = Source("a", RuntimeError("x"), RuntimeError("y"), "b", delay=0.0)

        @sq.bg(100, key="rates", on_error=errors.append)
        async def rates() -> Any:
            return await source()

        config = sq.QueryClientConfig(retry=2, retry_delay=lambda attempt: 2.0**attempt)
        async with sq.open_query_client(config):
            assert await rates() == "a"
            await trio.sleep(110.0)
            assert await rates() == "b"
            assert source.started_at == [0.0, 100.0, 101.0, 103.0]
            assert errors == []

    async def test_on_error_that_raises_is_logged(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An on_error that raises is logged; the loop goes on."""

        def bad_handler(error: BaseException) -> None:
            raise KeyError("handler")

        source = Source("a", RuntimeError("down"), "b")

        @sq.bg(10, key="k", on_error=bad_handler)
        async def load() -> Any:
            return await source()

        with caplog.at_level(logging.ERROR):
            async with sq.open_query_client(NO_RETRY):
                await load()
                await trio.sleep(25.0)
                assert await load() == "b"
        assert [r.getMessage() for r in caplog.records if "on_error" in r.getMessage()] == [
            "on_error callback of query ('bg', 'k') raised"
        ]

    async def test_first_load_error_is_raised_to_the_first_caller(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With no value to serve, the first call raises the first load's error."""
        source = Source(RuntimeError("no value"))

        @sq.bg(10, key="k")
        async def load() -> Any:
            return await source()

        async with sq.open_query_client(NO_RETRY):
            with pytest.raises(RuntimeError, match=r"^no value$"):
                await load()
            await trio.sleep(10.5)
            assert await load() == "n2"

    async def test_ttl_bounds_how_old_a_served_value_may_be(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Past ttl since its fetch, the last value is not served: the caller waits."""
        source = Source("a", RuntimeError("down"), RuntimeError("down"), RuntimeError("down"))

        @sq.bg(10, key="k", ttl=15)
        async def load() -> Any:
            return await source()

        async with sq.open_query_client(NO_RETRY):
            assert await load() == "a"  # fetched at 1.0: served until 16.0
            await trio.sleep(13.0)
            assert await load() == "a"
            await trio.sleep(3.0)
            with pytest.raises(RuntimeError, match=r"^down$"):
                await load()

    async def test_run_immediately_false_waits_one_interval(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With run_immediately=False, start() loads nothing; the first refresh comes later."""
        source = Source()

        @sq.bg(10, key="k", run_immediately=False)
        async def load() -> Any:
            return await source()

        async with sq.open_query_client(NO_RETRY):
            await load.start()
            await trio.sleep(5.0)
            assert source.calls == 0
            await trio.sleep(6.0)
            assert source.started_at == [10.0]
            assert await load() == "n1"

    async def test_start_loads_without_a_call(self, autojump_clock: trio.testing.MockClock) -> None:
        """start() begins the loop at once; a call afterwards finds the value loaded."""
        source = Source()

        @sq.bg(10, key="k")
        async def load() -> Any:
            return await source()

        async with sq.open_query_client(NO_RETRY):
            await load.start()
            await trio.sleep(2.0)
            with trio.testing.assert_no_checkpoints():
                assert await load() == "n1"
            assert source.calls == 1

    async def test_sync_function_runs_in_a_worker_thread(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A plain def is refreshed in a worker thread."""
        threads: list[threading.Thread] = []

        @sq.bg(10, key="k")
        def load() -> int:
            threads.append(threading.current_thread())
            return len(threads)

        async with sq.open_query_client(NO_RETRY):
            assert await load() == 1
        assert threading.main_thread() not in threads
        assert load.__name__ == "load"


class TestRegistration:
    async def test_same_key_twice_in_one_client_is_an_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A second function with a key already refreshed in the client is refused."""

        @sq.bg(10, key="shared")
        async def first() -> int:
            return 1

        @sq.bg(10, key="shared")
        async def second() -> int:
            return 2

        async with sq.open_query_client():
            assert await first() == 1
            with pytest.raises(
                sq.BgKeyConflictError,
                match=r"^bg key 'shared' is already refreshed in this client by '.*first'$",
            ):
                await second()
        async with sq.open_query_client():
            assert await second() == 2

    async def test_one_loop_per_client(self, autojump_clock: trio.testing.MockClock) -> None:
        """Calls and start() in one client share one loop: one origin call per interval."""
        source = Source()

        @sq.bg(10, key="k")
        async def load() -> Any:
            return await source()

        async with sq.open_query_client(NO_RETRY):
            await load.start()
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(load)
            await load.start()
            await trio.sleep(5.0)
            assert source.calls == 1

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"interval": 0, "key": "k"}, r"^bg\(\): interval must be > 0 seconds, got 0$"),
            ({"interval": math.nan, "key": "k"}, r"^bg\(\): interval must be > 0 seconds"),
            ({"interval": 1, "key": ""}, r"^bg\(\): key must not be empty$"),
            ({"interval": 1, "key": "k", "ttl": -1}, r"^bg\(\): ttl must be None or >= 0"),
        ],
    )
    def test_bad_option_is_refused(self, kwargs: dict[str, Any], message: str) -> None:
        """A bad interval, key or ttl is an InvalidOptionError when decorating."""
        with pytest.raises(sq.InvalidOptionError, match=message):
            sq.bg(**kwargs)

    def test_function_with_arguments_is_refused(self) -> None:
        """A function that needs arguments cannot be refreshed in the background."""
        with pytest.raises(TypeError, match=r"requires user_id$"):

            @sq.bg(10, key="k")  # type: ignore[arg-type]
            async def load(user_id: int) -> None: ...

    def test_write_and_read_need_a_store(self) -> None:
        """bg.write and bg.read without a store are refused."""
        with pytest.raises(sq.InvalidOptionError, match=r"^bg.write\(\): store is required$"):
            sq.bg.write(10, key="k", store=None)
        with pytest.raises(sq.InvalidOptionError, match=r"^bg.read\(\): store is required$"):
            sq.bg.read("k", interval=10, store=None)


class TestMetrics:
    async def test_refreshes_hits_and_errors_are_recorded(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Each refresh is recorded ok or failed; calls as hits, stale hits or misses."""
        metrics = sq.InMemoryMetrics()
        source = Source("a", RuntimeError("down"), "b")

        @sq.bg(10, key="k", metrics=metrics)
        async def load() -> Any:
            return await source()

        async with sq.open_query_client(NO_RETRY):
            assert await load() == "a"  # miss
            assert await load() == "a"  # hit
            await trio.sleep(12.0)
            assert await load() == "a"  # stale hit: the refresh at 10.0 failed
            await trio.sleep(10.0)
            assert await load() == "b"  # hit
        stats = metrics.get_stats()["caches"]["bg:k"]
        assert stats["misses"] == 1
        assert stats["hits"] == 2
        assert stats["stale_hits"] == 1
        assert stats["fetches"] == 3
        assert stats["errors_by_type"] == {"fetch": {"RuntimeError": 1}}
        assert stats["background_refreshes"] == {"ok": 2, "failed": 1}


class TestSharedStore:
    async def test_writer_writes_each_refresh_to_the_store(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """bg.write puts every refreshed value in the store under the bg key."""
        store = MemoryStorage()
        source = Source()

        @sq.bg.write(10, key="rates", store=store)
        async def rates() -> Any:
            return await source()

        entry_key = "sq:" + canonical_key(("bg", "rates"))[1]
        assert await rates() == "n1"
        await trio.sleep(5.0)
        raw = await store.get(entry_key)
        assert raw is not None and unpack_entry(raw, json_serializer).value == "n1"
        await trio.sleep(10.0)
        raw = await store.get(entry_key)
        assert raw is not None and unpack_entry(raw, json_serializer).value == "n2"

    async def test_reader_serves_a_local_copy_and_polls(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """bg.read reads the writer's value, serves it locally, and picks up new ones by polling."""
        store = MemoryStorage()
        source = Source()

        @sq.bg.write(10, key="rates", store=store)
        async def rates() -> Any:
            return await source()

        reader = sq.bg.read("rates", interval=3, store=store)
        assert await rates() == "n1"
        await trio.sleep(0.5)
        assert await reader() == "n1"
        before = store.statistics()
        with trio.testing.assert_no_checkpoints():
            for _ in range(100):
                assert await reader() == "n1"
        assert store.statistics() == before
        await trio.sleep(14.0)  # the writer refreshed at 10.0; the reader polls every 3 s
        assert await reader() == "n2"
        assert store.statistics().sets == 2

    async def test_reader_without_a_value_raises_missing_value(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A reader's first call fails with MissingValueError when nothing was written."""
        reader = sq.bg.read("nobody", interval=5, store=MemoryStorage())
        async with sq.open_query_client(NO_RETRY):
            with pytest.raises(
                sq.MissingValueError, match=r"^the store holds no value for bg key 'nobody'$"
            ):
                await reader()

    async def test_reader_keeps_its_copy_when_the_entry_goes(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A poll that finds nothing keeps the local copy (a failed refresh)."""
        store = MemoryStorage()
        errors: list[BaseException] = []
        entry_key = "sq:" + canonical_key(("bg", "k"))[1]
        await store.set(
            entry_key, sq.pack_entry("v", data_updated_at=1.0, serializer=json_serializer)
        )
        reader = sq.bg.read("k", interval=5, store=store, on_error=errors.append)
        async with sq.open_query_client(NO_RETRY):
            assert await reader() == "v"
            await store.delete(entry_key)
            await trio.sleep(6.0)
            await wait_all_tasks_blocked()
            assert await reader() == "v"
            assert [type(e) for e in errors] == [sq.MissingValueError]
