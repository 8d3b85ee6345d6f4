"""Specification of the L2 tier's promises to callers: no stranded waiter, no silent loss.

Each class pins one promise the tier made and once broke: a cold read whose
key is removed while it is out still settles its waiters; values given up at
close are counted one by one; a caller's wait for any store, threaded ones
included, ends at ``l2_timeout``, and what a thread answers late is neither
lost nor applied twice.
"""

from __future__ import annotations

import math
import os
import sqlite3
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from backends import MemoryStorage, SQLiteStorage
from stackquery._l2 import L2Cache
from tests.stackquery.client_origin import Origin
from tests.stackquery.l2_store import (
    KEY,
    L2_KEY,
    ControlledStorage,
    config,
    entry_bytes,
    l2_stats,
    l2_warnings,
    options,
)

Outcome = tuple[str, Any]
"""What one caller got: ``("value", data)`` or ``("error", exception type name)``."""

StoreFactory = Callable[[Path], Any]

GATED_STORES: dict[str, StoreFactory] = {
    "memory": lambda _path: MemoryStorage(),
    "sqlite": lambda path: SQLiteStorage(path / "cache.db"),
}


@pytest.fixture(params=list(GATED_STORES.values()), ids=list(GATED_STORES))
def gated_store(request: pytest.FixtureRequest, tmp_path: Path) -> ControlledStorage:
    """A ControlledStorage in front of a MemoryStorage or a SQLiteStorage."""
    factory: StoreFactory = request.param
    return ControlledStorage(factory(tmp_path))


async def outcome_of(client: sq.QueryClient, opts: sq.QueryOptions[Any]) -> Outcome:
    """Fetch ``opts`` and say what came back."""
    try:
        return ("value", await client.fetch_query(opts))
    except Exception as exc:
        return ("error", type(exc).__name__)


class TestRemovalDuringAColdRead:
    @pytest.mark.parametrize(
        ("change", "b_gets", "origin_calls"),
        [
            ("remove_queries", ("value", "fetched"), 1),  # the entry was deleted with the key
            ("reset_queries", ("value", "stored"), 0),  # the entry is still there
        ],
    )
    async def test_a_caller_whose_key_is_removed_or_reset_during_its_read_hears_of_it(
        self,
        change: str,
        b_gets: Outcome,
        origin_calls: int,
        autojump_clock: trio.testing.MockClock,
    ) -> None:
        """Changed during A's held L2 read, then asked for by B: A is cancelled, B served."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origin = Origin("fetched")
        outcomes: dict[str, Outcome] = {}

        async def ask(name: str, client: sq.QueryClient) -> None:
            outcomes[name] = await outcome_of(client, options(origin, stale_time=60.0))

        async with trio.open_nursery() as outside:
            async with sq.open_query_client(config(store)) as client:
                await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))
                outside.start_soon(ask, "A", client)
                await wait_all_tasks_blocked()
                assert await getattr(client, change)(KEY) == 1
                outside.start_soon(ask, "B", client)
                await wait_all_tasks_blocked()
                store.read_gate.set()
                await wait_all_tasks_blocked()
            outside.cancel_scope.deadline = trio.current_time() + 60.0
        assert outcomes == {"A": ("error", "QueryCancelledError"), "B": b_gets}
        assert origin.calls == origin_calls

    async def test_a_removed_readers_waiter_hears_at_once_not_when_the_read_lands(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """remove_queries settles the held read's caller before the store answers."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        outcomes: dict[str, Outcome] = {}

        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))

            async def ask() -> None:
                outcomes["A"] = await outcome_of(client, options(Origin(), stale_time=60.0))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                await wait_all_tasks_blocked()
                await client.remove_queries(KEY)
                await wait_all_tasks_blocked()
                assert outcomes == {"A": ("error", "QueryCancelledError")}
                store.read_gate.set()
            assert client.get_query_state(KEY) is None

    async def test_a_storm_of_removals_and_resets_strands_nobody(
        self, gated_store: ControlledStorage
    ) -> None:
        """Ten keys, each removed or reset twice while callers read them: all 30 callers hear.

        On the real clock: the SQLite store reads in worker threads, and nothing
        here depends on time.  Reads and writes are held at gates until every
        caller has asked, so each caller's path is known:

        * A (every key): its read is held, then its key is removed or reset;
        * B, removed keys: the pending delete answers its read (a miss), so the
          origin serves it before the second removal; reset keys: its read is
          held (queued behind A's batch), then the second reset cancels it;
        * C, removed keys: the origin again; reset keys: the stored entry, once
          the reads go through.
        """
        store = gated_store
        store.read_gate = trio.Event()
        store.write_gate = trio.Event()
        keys = [("user", n) for n in range(10)]
        origins = {n: Origin(f"fetched {n}") for n in range(10)}
        outcomes: dict[tuple[str, int], Outcome] = {}
        all_heard = trio.Event()

        async def ask(round_: str, n: int, client: sq.QueryClient) -> None:
            opts = options(origins[n], key=("user", n), stale_time=math.inf)
            outcomes[(round_, n)] = await outcome_of(client, opts)
            if len(outcomes) == 30:
                all_heard.set()

        with trio.fail_after(10.0):
            async with (
                trio.open_nursery() as outside,
                sq.open_query_client(config(store, l2_timeout=30.0)) as client,
            ):
                at = client.clock.wall()
                await store.memory.set_many(
                    {f'sq:["user",{n}]': entry_bytes(f"stored {n}", at=at) for n in range(10)}
                )
                for round_ in ("A", "B"):
                    for n in range(10):
                        outside.start_soon(ask, round_, n, client)
                    await wait_all_tasks_blocked()
                    for key in keys:
                        if key[1] % 2:
                            assert await client.reset_queries(key, exact=True) == 1
                        else:
                            assert await client.remove_queries(key, exact=True) == 1
                    await wait_all_tasks_blocked()
                for n in range(10):
                    outside.start_soon(ask, "C", n, client)
                await wait_all_tasks_blocked()
                store.read_gate.set()
                store.write_gate.set()
                await all_heard.wait()
        cancelled = ("error", "QueryCancelledError")
        expected: dict[tuple[str, int], Outcome] = {}
        for n in range(10):
            expected[("A", n)] = cancelled
            if n % 2 == 0:
                expected[("B", n)] = expected[("C", n)] = ("value", f"fetched {n}")
            else:
                expected[("B", n)], expected[("C", n)] = cancelled, ("value", f"stored {n}")
        assert outcomes == expected
        assert {n: origin.calls for n, origin in origins.items()} == {
            n: 2 if n % 2 == 0 else 0 for n in range(10)
        }


class TestValuesLostAtClose:
    async def test_every_value_queued_or_in_flight_at_close_is_counted_and_logged_once(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Four values in the batch being stored and two queued when shutdown_timeout ends: six."""
        store = ControlledStorage()
        store.write_delay = 10.0
        settings = config(store, shutdown_timeout=1.0, l2_timeout=30.0)
        async with sq.open_query_client(settings) as client:
            await client.set_query_data(("first",), "a")
            await wait_all_tasks_blocked()  # the writer took it alone and stores it for 10 s
            for n in range(4):  # queued while "first" is stored, then stored as one batch
                await client.set_query_data(("user", n), n)
            await trio.sleep(10.5)
            assert (l2_stats(client).writes, l2_stats(client).pending_writes) == (1, 0)
            for n in range(4, 6):
                await client.set_query_data(("user", n), n)
            assert l2_stats(client).pending_writes == 2
        assert trio.current_time() == 11.5
        stats = l2_stats(client)
        assert (stats.writes, stats.dropped_writes) == (1, 6)
        assert l2_warnings(caplog) == [
            f"6 L2 writes dropped at close: {store!r} did not take them "
            "within shutdown_timeout (1 s)"
        ]

    async def test_a_value_landing_as_the_client_closes_is_stored_or_counted_dropped(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A fetch whose origin returns as the block is left may land after the writer stopped.

        Its caller (outside the block) gets the value; L2 must then hold it, or
        the write be counted dropped: never neither.
        """
        landed = 0
        for _ in range(16):  # the landing falls on either side of the writer's end
            store, got, release = MemoryStorage(), [], trio.Event()

            async def origin(release: trio.Event = release) -> str:
                await release.wait()
                return "v"

            async with trio.open_nursery() as outer:
                go = trio.Event()

                async def let_go(go: trio.Event = go, release: trio.Event = release) -> None:
                    await go.wait()
                    release.set()  # the origin returns as the block is left

                outer.start_soon(let_go)
                async with sq.open_query_client(config(store)) as client:

                    async def call(client: sq.QueryClient = client, got: list[str] = got) -> None:
                        try:
                            got.append(await client.fetch_query(sq.QueryOptions(("k",), origin)))
                        except sq.ClientClosedError:
                            got.append("closed")  # the fetch had not landed: the contract

                    outer.start_soon(call)
                    await trio.sleep(1)
                    go.set()
            stats = l2_stats(client)
            stored = await store.get("sq:" + sq.QueryOptions(("k",), origin).key_hash)
            if got == ["v"]:
                assert (stored is not None, stats.dropped_writes) in {(True, 0), (False, 1)}
                landed += 1
            else:
                assert (got, stored, stats.dropped_writes) == (["closed"], None, 0)
        assert landed > 0  # the caller got the value in some rounds

    async def test_a_close_with_nothing_pending_logs_nothing(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Every write landed before close: none dropped, no warning."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store, shutdown_timeout=1.0)) as client:
            await client.set_query_data(KEY, "a")
        assert (l2_stats(client).writes, l2_stats(client).dropped_writes) == (1, 0)
        assert l2_warnings(caplog) == []

    async def test_a_write_queued_as_the_writer_drains_is_waited_for_by_flush(self) -> None:
        """A write queued while flush() is being woken by the drained writer: flush waits for it.

        The writer sets its "drained" event when it runs out of writes; a
        write queued before flush() runs again replaces that event with a
        new one, unset.  flush() woke on the old one and returned ``True``
        with the write still queued: the close then stopped the writer and
        the value was in L1 only, counted neither written nor dropped.

        Two tasks wait for "drained" too, one parked before flush() and one
        after, and each queues a write as it wakes.  trio runs the tasks it
        wakes together in their order or reversed, so one of them runs
        before flush() every time; with hypothesis loaded it shuffles them,
        and flush() comes first one time in three: twenty rounds.
        """
        results: list[tuple[bool, int]] = []
        for _ in range(20):
            results.append(await flush_as_writes_keep_coming())
        assert results == [(True, 0)] * 20


async def flush_as_writes_keep_coming() -> tuple[bool, int]:
    """flush() while two tasks queue a write as soon as the writer drains; what it returned,
    and how many writes were pending then."""
    store = ControlledStorage()
    store.write_gate = trio.Event()
    l2 = L2Cache(store, sq.serializers.json, "sq:", timeout=30.0)
    flushed: list[tuple[bool, int]] = []

    async def write_once_drained(key_hash: str) -> None:
        await l2.wait_drained()
        l2.write_soon(key_hash, key_hash, data_updated_at=2.0, ttl=None)

    async def flush() -> None:
        landed = await l2.flush(60.0)
        flushed.append((landed, l2.statistics().pending_writes))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(l2.run_writer)
        l2.write_soon("first", "first", data_updated_at=1.0, ttl=None)
        await wait_all_tasks_blocked()  # the writer holds "first" at the gate
        for task in (partial(write_once_drained, "before"), flush):
            nursery.start_soon(task)
            await wait_all_tasks_blocked()  # parked on "drained", in this order
        nursery.start_soon(write_once_drained, "after")
        await wait_all_tasks_blocked()
        store.write_gate.set()
        while not flushed:
            await wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    return flushed[0]


class ThreadBlockedStorage:
    """A store whose reads and writes run in worker threads that wait for the test's word.

    ``get_many`` waits in its thread for ``reads_released``, ``set_many`` for
    ``writes_released`` (a ``threading.Event`` each: cancellation cannot stop
    them), then reads or writes a dict in that thread, as SQLiteStorage and
    FileStorage do.  ``read_returned`` / ``write_returned`` are set in trio once
    a thread call has returned.
    """

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}
        self.reads_released = threading.Event()
        self.writes_released = threading.Event()
        self.read_returned = trio.Event()
        self.write_returned = trio.Event()
        self.thread_reads = 0
        self.thread_writes = 0

    def release_all(self) -> None:
        """Let every thread call go (a test that fails must not leave threads waiting)."""
        self.reads_released.set()
        self.writes_released.set()

    def _read(self, keys: list[str]) -> list[bytes | None]:
        assert self.reads_released.wait(30.0)
        self.thread_reads += 1
        return [self.entries.get(key) for key in keys]

    def _write(self, items: dict[str, bytes]) -> None:
        assert self.writes_released.wait(30.0)
        self.thread_writes += 1
        self.entries.update(items)

    async def get(self, key: str) -> bytes | None:
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        values = await trio.to_thread.run_sync(self._read, list(keys))
        self.read_returned.set()
        return values

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self.set_many({key: value}, ttl)

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        await trio.to_thread.run_sync(self._write, dict(items))
        self.write_returned.set()

    async def delete(self, key: str) -> None:
        await trio.to_thread.run_sync(self.entries.pop, key, None)


def counts(client: sq.QueryClient) -> tuple[int, int, int, int, int]:
    """(hits, misses, errors, writes, dropped_writes) of the client's L2."""
    s = l2_stats(client)
    return (s.hits, s.misses, s.errors, s.writes, s.dropped_writes)


class TestValuesLostAtCloseInAThread:
    async def test_a_write_given_up_at_close_that_lands_later_is_counted_dropped_only(
        self, mock_clock: trio.testing.MockClock
    ) -> None:
        """A write still in its thread when shutdown_timeout runs out: dropped 1, written 0."""
        store = ThreadBlockedStorage()

        async def run_out_then_release() -> None:
            await wait_all_tasks_blocked()  # the client waits in its flush
            mock_clock.jump(1.0)
            await wait_all_tasks_blocked()  # given up: the writer waits for its thread
            store.writes_released.set()

        async with trio.open_nursery() as helpers:
            settings = config(store, shutdown_timeout=1.0, l2_timeout=30.0)
            async with sq.open_query_client(settings) as client:
                try:
                    await client.set_query_data(KEY, "set")
                    await wait_all_tasks_blocked()
                    helpers.start_soon(run_out_then_release)
                except BaseException:
                    store.release_all()
                    raise
        assert trio.current_time() == 1.0
        assert counts(client) == (0, 0, 0, 0, 1)
        assert store.thread_writes == 1


class TestL2TimeoutBoundsEveryStore:
    """On a MockClock that moves only when the test jumps it: a thread takes no trio time.

    So a caller served by the time the clock reaches ``l2_timeout`` while the
    thread is still blocked was served at ``l2_timeout``, not when the thread
    let go.
    """

    async def test_a_locked_sqlite_database_holds_a_cold_caller_only_l2_timeout(
        self, mock_clock: trio.testing.MockClock, tmp_path: Path
    ) -> None:
        """BEGIN EXCLUSIVE in another connection: the caller gets the origin's value at 0.5 s."""
        path = tmp_path / "cache.db"
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute(
            "CREATE TABLE stackquery_entries "
            "(key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL, expires_at REAL)"
        )
        locker.execute(
            "INSERT INTO stackquery_entries VALUES (?, ?, NULL)",
            (L2_KEY, entry_bytes("stored", at=time.time() + 3.0)),
        )
        locker.execute("BEGIN EXCLUSIVE")
        results: list[Any] = []
        async with (
            SQLiteStorage(path, timeout=5.0) as store,
            sq.open_query_client(config(store, l2_timeout=0.5)) as client,
            trio.open_nursery() as nursery,
        ):
            try:

                async def fetch() -> None:
                    results.append(await client.fetch_query(options(Origin("fetched"))))

                nursery.start_soon(fetch)
                await wait_all_tasks_blocked()
                assert results == []
                mock_clock.jump(0.5)
                await wait_all_tasks_blocked()
                # Served while the database is still locked and the read's thread waits.
                assert (results, trio.current_time()) == (["fetched"], 0.5)
                assert counts(client) == (0, 1, 1, 0, 0)
            finally:
                locker.execute("ROLLBACK")
        # Leaving waited for the late read (its answer dropped) and the write behind it.
        locker.close()
        assert client.get_query_data(KEY) == "fetched"
        assert counts(client) == (0, 1, 1, 1, 0)
        stored = sqlite3.connect(path).execute(
            "SELECT value FROM stackquery_entries WHERE key = ?", (L2_KEY,)
        )
        assert sq.unpack_entry(stored.fetchone()[0], sq.serializers.json).value == "fetched"

    async def test_a_read_blocked_in_its_thread_is_a_miss_at_l2_timeout_and_dropped_later(
        self, mock_clock: trio.testing.MockClock
    ) -> None:
        """A read's thread blocks on an Event: the caller is served at 0.5 s, the answer dropped."""
        store = ThreadBlockedStorage()
        store.writes_released.set()
        results: list[Any] = []
        async with (
            sq.open_query_client(config(store, l2_timeout=0.5)) as client,
            trio.open_nursery() as nursery,
        ):
            try:
                # Newer than the origin's value (within MAX_CLOCK_SKEW): applied, the late
                # answer would replace it.
                store.entries[L2_KEY] = entry_bytes("stored", at=client.clock.wall() + 3.0)

                async def fetch() -> None:
                    results.append(await client.fetch_query(options(Origin("fetched"))))

                nursery.start_soon(fetch)
                await wait_all_tasks_blocked()
                mock_clock.jump(0.5)
                await wait_all_tasks_blocked()
                assert (results, trio.current_time()) == (["fetched"], 0.5)
                assert counts(client)[:3] == (0, 1, 1)
                store.reads_released.set()
                await store.read_returned.wait()
                await wait_all_tasks_blocked()
                assert client.get_query_data(KEY) == "fetched"
                assert counts(client)[:3] == (0, 1, 1)
            finally:
                store.release_all()
        assert store.thread_reads == 1

    async def test_a_write_blocked_in_its_thread_counts_one_error_and_lands_once(
        self, mock_clock: trio.testing.MockClock
    ) -> None:
        """A write past l2_timeout is one error; once its thread lands it, one write, not redone."""
        store = ThreadBlockedStorage()
        async with sq.open_query_client(config(store, l2_timeout=0.5)) as client:
            try:
                await client.set_query_data(KEY, "set")
                await wait_all_tasks_blocked()
                mock_clock.jump(0.5)
                await wait_all_tasks_blocked()
                assert counts(client) == (0, 0, 1, 0, 0)
                mock_clock.jump(10.0)  # no retry while the first write may still land
                await wait_all_tasks_blocked()
                store.writes_released.set()
                await store.write_returned.wait()
                await wait_all_tasks_blocked()
                assert counts(client) == (0, 0, 1, 1, 0)
            finally:
                store.release_all()
        assert store.thread_writes == 1
        assert sq.unpack_entry(store.entries[L2_KEY], sq.serializers.json).value == "set"


NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class TestNonFiniteFloatsThroughJson:
    """JSON has no nan or ±inf: the json serializer refuses them rather than write ``null``."""

    @pytest.mark.parametrize("bad", NON_FINITE.values(), ids=NON_FINITE)
    @pytest.mark.parametrize(
        "wrap",
        [
            lambda x: x,
            lambda x: [1.5, None, x],
            lambda x: {"a": None, "b": {"c": (1, x)}},
        ],
        ids=["bare", "in a list", "nested in a dict"],
    )
    def test_the_json_serializer_refuses_a_non_finite_float(
        self, bad: float, wrap: Callable[[float], Any]
    ) -> None:
        """dumps and pack_entry raise SerializationError naming the float, wherever it sits."""
        value = wrap(bad)
        message = (
            rf"^json cannot encode {type(value).__qualname__} value: float {bad!r} has no "
            r"JSON form \(it would be read back as None\)$"
        )
        with pytest.raises(sq.SerializationError, match=message) as info:
            sq.serializers.json.dumps(value)
        assert (info.value.serializer, info.value.value_type) == (
            "json",
            type(value).__qualname__,
        )
        with pytest.raises(sq.SerializationError, match=message):
            sq.pack_entry(value, data_updated_at=1.0, serializer=sq.serializers.json)

    def test_none_and_the_text_null_still_round_trip(self) -> None:
        """Only a non-finite float is refused: None, "null" and finite floats go through."""
        value = {"n": None, "s": "null", "f": [0.0, -1e308, 5e-324], "null": 1}
        assert sq.serializers.json.loads(sq.serializers.json.dumps(value)) == value
        raw = sq.pack_entry(value, data_updated_at=1.0, serializer=sq.serializers.json)
        assert sq.unpack_entry(raw, sq.serializers.json).value == value

    async def test_a_non_finite_value_stays_in_l1_and_a_restarted_client_refetches(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Served from L1 as fetched, counted, never written: a fresh client never reads None."""
        memory = MemoryStorage()
        first, second = Origin({"ratio": math.nan}), Origin({"ratio": math.inf})
        async with sq.open_query_client(config(memory)) as client:
            value = await client.fetch_query(options(first, stale_time=60.0))
            assert math.isnan(value["ratio"])
            assert math.isnan(client.get_query_data(KEY)["ratio"])
        stats = l2_stats(client)
        assert (stats.serialize_errors, stats.writes) == (1, 0)
        assert await memory.get(L2_KEY) is None
        async with sq.open_query_client(config(memory)) as restarted:
            assert await restarted.fetch_query(options(second, stale_time=60.0)) == {
                "ratio": math.inf
            }
        assert (first.calls, second.calls) == (1, 1)
        assert l2_stats(restarted).serialize_errors == 1


REPO_ROOT = Path(__file__).resolve().parents[2]
README_MARK = (
    "<!-- storage_ttl snippet: run by tests/stackquery/test_l2_contracts.py -->\n```python\n"
)


def storage_ttl_snippet(source: str) -> str:
    """The runnable storage_ttl example, as the README or QueryClientConfig's docstring has it."""
    if source == "README":
        text = (REPO_ROOT / "README.md").read_text()
        return text.split(README_MARK, 1)[1].split("```", 1)[0]
    doc = sq.QueryClientConfig.__doc__
    assert doc is not None
    block = doc.split("::\n\n", 1)[1].split("\n\n    Raises", 1)[0]
    return textwrap.dedent(block) + "\n"


class TestStorageTtlIsDocumented:
    def test_the_readme_and_the_docstring_show_the_same_example(self) -> None:
        """One example, word for word, where ``storage=`` is introduced in both places."""
        assert storage_ttl_snippet("README") == storage_ttl_snippet("QueryClientConfig")

    @pytest.mark.slow
    @pytest.mark.parametrize("source", ["README", "QueryClientConfig"])
    async def test_the_storage_ttl_example_runs_and_shows_both_lifetimes(
        self, source: str, tmp_path: Path
    ) -> None:
        """Run as a newcomer would: gc_time's 300 s in SQLite by default, no expiry with None."""
        with trio.fail_after(60.0):
            done = await trio.run_process(
                [sys.executable, "-c", storage_ttl_snippet(source)],
                cwd=tmp_path,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            )
        assert (done.returncode, done.stderr.decode()) == (0, "")
        assert done.stdout.decode() == "300\nNone\n"
