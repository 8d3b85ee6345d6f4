"""Specification of ``QueryClient.snapshot()``: one record per key in L1, for introspection."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from stackquery import FetchStatus, QueryRecord, QueryStatus
from tests.stackquery.client_origin import Failure, Origin

A = ("user", 1)
B = ("user", 2)


def by_key(records: list[QueryRecord]) -> dict[object, QueryRecord]:
    return {record.key: record for record in records}


class TestSnapshot:
    async def test_empty(self) -> None:
        """A new client has no records."""
        async with sq.open_query_client() as client:
            assert client.snapshot() == []

    async def test_fetched_key_is_passivated_and_ages(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After a fetch: success, idle, the data's age in seconds, one fetch, no task running."""
        async with sq.open_query_client() as client:
            options = sq.QueryOptions(query_key=A, query_fn=Origin(delay=1.0), stale_time=10.0)
            await client.fetch_query(options)
            await trio.sleep(4.0)
            fresh = client.snapshot()
            await trio.sleep(8.0)
            stale = client.snapshot()
        assert fresh == [
            QueryRecord(
                key=A,
                status=QueryStatus.SUCCESS,
                fetch_status=FetchStatus.IDLE,
                data_age=4.0,
                is_stale=False,
                observers=0,
                fetch_count=1,
                error_count=0,
                active=False,
            )
        ]
        assert (stale[0].data_age, stale[0].is_stale) == (12.0, True)

    async def test_fetch_in_flight_is_active(self, autojump_clock: trio.testing.MockClock) -> None:
        """While its fetch runs a cold key is pending, fetching, without data, and active."""
        async with sq.open_query_client() as client:
            await client.prefetch_query(sq.QueryOptions(query_key=A, query_fn=Origin(delay=5.0)))
            await trio.sleep(1.0)
            record = client.snapshot()[0]
        assert (
            record.status,
            record.fetch_status,
            record.data_age,
            record.fetch_count,
            record.active,
        ) == (QueryStatus.PENDING, FetchStatus.FETCHING, None, 1, True)

    async def test_observers_are_counted(self, autojump_clock: trio.testing.MockClock) -> None:
        """Each subscribed observer counts; with none left the key passivates."""
        async with sq.open_query_client() as client:
            options = sq.QueryOptions(query_key=A, query_fn=Origin(), stale_time=math.inf)
            first = client.watch(options).subscribe(lambda state: None)
            second = client.watch(options).subscribe(lambda state: None)
            await wait_all_tasks_blocked()
            both = client.snapshot()[0]
            first()
            one = client.snapshot()[0]
            second()
            await wait_all_tasks_blocked()
            none = client.snapshot()[0]
        assert [(r.observers, r.active) for r in (both, one, none)] == [
            (2, True),
            (1, True),
            (0, False),
        ]
        assert both.fetch_count == 1

    async def test_failures_and_refetches_are_counted(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """fetch_count counts fetches (not attempts); error_count counts fetches that failed."""
        origin = Origin(Failure("a"), Failure("b"), "ok", Failure("c"))
        async with sq.open_query_client(sq.QueryClientConfig(retry=0)) as client:
            options = sq.QueryOptions(query_key=A, query_fn=origin)
            for _ in range(2):
                with pytest.raises(Failure):
                    await client.fetch_query(options)
            failed = client.snapshot()[0]
            assert await client.fetch_query(options) == "ok"
            await client.fetch_query(options)  # stale: served, refetched (and fails)
            await wait_all_tasks_blocked()
            last = client.snapshot()[0]
        assert (failed.status, failed.data_age, failed.fetch_count, failed.error_count) == (
            QueryStatus.ERROR,
            None,
            2,
            2,
        )
        assert (last.status, last.fetch_count, last.error_count) == (QueryStatus.ERROR, 4, 3)
        assert last.data_age == 0.0  # the data of the third fetch is still held

    async def test_set_data_is_not_a_fetch(self, autojump_clock: trio.testing.MockClock) -> None:
        """A key set with set_query_data has data, no fetch, and its age counts from the set."""
        async with sq.open_query_client() as client:
            await client.set_query_data(A, "set")
            await trio.sleep(3.0)
            await client.set_query_data(B, "set")
            records = by_key(client.snapshot())
        assert {k: (r.status, r.data_age, r.fetch_count) for k, r in records.items()} == {
            A: (QueryStatus.SUCCESS, 3.0, 0),
            B: (QueryStatus.SUCCESS, 0.0, 0),
        }

    async def test_invalidated_key_is_stale(self) -> None:
        """An invalidated key is reported stale."""
        async with sq.open_query_client(sq.QueryClientConfig(stale_time=math.inf)) as client:
            await client.set_query_data(A, 1)
            before = client.snapshot()[0].is_stale
            await client.invalidate_queries(A)
            after = client.snapshot()[0].is_stale
        assert (before, after) == (False, True)

    async def test_removed_and_collected_keys_are_gone(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Removed keys, and keys collected gc_time after their last use, have no record."""
        async with sq.open_query_client(sq.QueryClientConfig(gc_time=10.0)) as client:
            await client.set_query_data(A, 1)
            await client.set_query_data(B, 2)
            await client.remove_queries(A)
            assert [r.key for r in client.snapshot()] == [B]
            await trio.sleep(11.0)
            assert client.snapshot() == []

    async def test_snapshot_is_synchronous(self) -> None:
        """snapshot() does not checkpoint."""
        async with sq.open_query_client() as client:
            await client.set_query_data(A, 1)
            with trio.testing.assert_no_checkpoints():
                client.snapshot()
