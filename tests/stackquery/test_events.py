"""Specification of ``QueryClient.events()``: what each change emits, bounded buffering, closing."""

from __future__ import annotations

import gc
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from stackquery import CacheEvent, CacheEventType, QueryState, QueryStatus
from tests.stackquery.client_origin import Failure, Origin

A = ("user", 1)
B = ("user", 2)


async def drain(stream: sq.EventStream) -> list[CacheEvent]:
    """Close ``stream`` and return the events it had buffered."""
    await stream.aclose()
    return [event async for event in stream]


async def read(stream: sq.EventStream, count: int) -> list[CacheEvent]:
    """Read ``count`` events from ``stream`` through its async iterator."""
    return [await stream.__anext__() for _ in range(count)]


def summary(events: list[CacheEvent]) -> list[tuple[str, Any, Any, Any]]:
    """(type, key, status, data) of each event; status and data are None once removed."""
    return [
        (
            e.type.value,
            e.key,
            e.state.status.value if e.state is not None else None,
            e.state.data if e.state is not None else None,
        )
        for e in events
    ]


class TestWhatIsEmitted:
    async def test_cold_fetch(self, autojump_clock: trio.testing.MockClock) -> None:
        """A cold fetch: added (pending), fetch_started (fetching), updated (the data)."""
        async with sq.open_query_client() as client:
            stream = client.events()
            await client.fetch_query(sq.QueryOptions(query_key=A, query_fn=Origin(delay=1.0)))
            events = await read(stream, 3)
        assert [(e.type, e.key, e.missed) for e in events] == [
            (CacheEventType.ADDED, A, 0),
            (CacheEventType.FETCH_STARTED, A, 0),
            (CacheEventType.UPDATED, A, 0),
        ]
        assert events[0].state == QueryState()
        assert events[1].state is not None
        assert events[1].state.fetch_status is sq.FetchStatus.FETCHING
        assert events[2].state is not None
        assert (events[2].state.status, events[2].state.data) == (QueryStatus.SUCCESS, "v1")
        assert events[2].state.fetch_status is sq.FetchStatus.IDLE

    async def test_failed_fetch_emits_fetch_failed_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A fetch that fails after retries: one fetch_failed, with the error state."""
        origin = Origin(Failure("down"), delay=1.0)
        async with sq.open_query_client() as client:
            stream = client.events()
            options = sq.QueryOptions(query_key=A, query_fn=origin, retry=2, retry_delay=1.0)
            with pytest.raises(Failure):
                await client.fetch_query(options)
            events = await drain(stream)
        assert summary(events) == [
            ("added", A, "pending", None),
            ("fetch_started", A, "pending", None),
            ("fetch_failed", A, "error", None),
        ]
        assert events[2].state is not None
        assert events[2].state.error is origin.errors[-1]
        assert events[2].state.fetch_failure_count == 3

    async def test_set_invalidate_remove(self) -> None:
        """set_query_data: added, updated; invalidate: updated (invalidated); remove: removed."""
        async with sq.open_query_client() as client:
            stream = client.events()
            await client.set_query_data(A, {"name": "Ada"})
            await client.set_query_data(A, lambda old: {**old, "age": 36})
            await client.invalidate_queries(A)
            await client.remove_queries(A)
            events = await drain(stream)
        assert summary(events) == [
            ("added", A, "pending", None),
            ("updated", A, "success", {"name": "Ada"}),
            ("updated", A, "success", {"name": "Ada", "age": 36}),
            ("updated", A, "success", {"name": "Ada", "age": 36}),
            ("removed", A, None, None),
        ]
        assert [e.state.is_invalidated for e in events[1:4] if e.state is not None] == [
            False,
            False,
            True,
        ]

    async def test_observer_added_and_removed(self, autojump_clock: trio.testing.MockClock) -> None:
        """Subscribing to a cached key emits observer_added; unsubscribing, observer_removed."""
        async with sq.open_query_client() as client:
            await client.set_query_data(A, "cached")
            stream = client.events()
            options = sq.QueryOptions(query_key=A, query_fn=Origin(), stale_time=60.0)
            first = client.watch(options).subscribe(lambda state: None)
            second = client.watch(options).subscribe(lambda state: None)
            first()
            second()
            events = await drain(stream)
        assert summary(events) == [
            ("observer_added", A, "success", "cached"),
            ("observer_added", A, "success", "cached"),
            ("observer_removed", A, "success", "cached"),
            ("observer_removed", A, "success", "cached"),
        ]

    async def test_observer_of_a_cold_key(self, autojump_clock: trio.testing.MockClock) -> None:
        """An observer of a key not cached yet is reported too: every removal has its addition."""
        async with sq.open_query_client() as client:
            stream = client.events()
            options = sq.QueryOptions(query_key=A, query_fn=Origin(delay=1.0))
            unsubscribe = client.watch(options).subscribe(lambda state: None)
            await trio.sleep(2.0)
            unsubscribe()
            events = await drain(stream)
        assert summary(events) == [
            ("observer_added", A, "pending", None),
            ("added", A, "pending", None),
            ("fetch_started", A, "pending", None),
            ("updated", A, "success", "v1"),
            ("observer_removed", A, "success", "v1"),
        ]

    async def test_refetch_of_a_key_with_data(self, autojump_clock: trio.testing.MockClock) -> None:
        """A stale read's refetch: fetch_started with the old data, then updated with the new."""
        async with sq.open_query_client() as client:
            options = sq.QueryOptions(query_key=A, query_fn=Origin(delay=1.0))
            await client.fetch_query(options)
            stream = client.events()
            assert await client.fetch_query(options) == "v1"  # stale: served, refetched
            await trio.sleep(2.0)
            events = await drain(stream)
        assert summary(events) == [
            ("fetch_started", A, "success", "v1"),
            ("updated", A, "success", "v2"),
        ]

    async def test_garbage_collection_emits_removed(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key dropped gc_time after its last use emits removed, at that time."""
        async with sq.open_query_client(sq.QueryClientConfig(gc_time=10.0)) as client:
            await client.set_query_data(A, 1)
            stream = client.events()
            event = await stream.__anext__()
            assert trio.current_time() == 10.0
        assert summary([event]) == [("removed", A, None, None)]

    async def test_every_stream_gets_every_event(self) -> None:
        """Two open streams each receive the same events."""
        async with sq.open_query_client() as client:
            one, two = client.events(), client.events()
            await client.set_query_data(A, 1)
            events_one, events_two = await drain(one), await drain(two)
        assert (
            summary(events_one)
            == summary(events_two)
            == [
                ("added", A, "pending", None),
                ("updated", A, "success", 1),
            ]
        )

    async def test_events_from_before_the_stream_are_not_seen(self) -> None:
        """A stream starts empty: it reports what happens after it was opened."""
        async with sq.open_query_client() as client:
            await client.set_query_data(A, 1)
            stream = client.events()
            await client.set_query_data(B, 2)
            events = await drain(stream)
        assert summary(events) == [("added", B, "pending", None), ("updated", B, "success", 2)]


class TestBuffering:
    async def test_slow_consumer_loses_the_oldest_and_is_told_how_many(self) -> None:
        """Past ``buffer`` unread events the oldest go; the next event read carries ``missed``."""
        async with sq.open_query_client() as client:
            stream = client.events(buffer=2)
            for value in range(3):  # added + 3 updates = 4 events
                await client.set_query_data(A, value)
            await client.set_query_data(B, "b")  # 2 more: 6 in all, 4 dropped
            events = await read(stream, 2)
            await client.set_query_data(A, "later")
            later = await read(stream, 1)
        assert summary(events) == [("added", B, "pending", None), ("updated", B, "success", "b")]
        assert [e.missed for e in events] == [4, 0]
        assert summary(later) == [("updated", A, "success", "later")]
        assert later[0].missed == 0

    async def test_reading_checkpoints_even_with_events_buffered(self) -> None:
        """Reading a buffered event is still a checkpoint (a busy stream cannot starve others)."""
        async with sq.open_query_client() as client:
            stream = client.events()
            await client.set_query_data(A, 1)
            with trio.testing.assert_checkpoints():
                await stream.__anext__()

    @pytest.mark.parametrize("buffer", [0, -1, True, 1.5, "10"])
    async def test_buffer_must_be_a_positive_int(self, buffer: Any) -> None:
        """buffer below 1, a bool or a non-int is an InvalidOptionError naming it."""
        async with sq.open_query_client() as client:
            with pytest.raises(sq.InvalidOptionError, match=r"^buffer must be an int >= 1, got "):
                client.events(buffer=buffer)

    async def test_no_events_on_a_closed_client(self) -> None:
        """events() outside the client's ``async with`` is a ClientClosedError."""
        client = sq.QueryClient()
        with pytest.raises(sq.ClientClosedError):
            client.events()
        async with client:
            pass
        with pytest.raises(sq.ClientClosedError):
            client.events()


class TestEnd:
    async def test_stream_ends_when_the_client_closes(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A consumer blocked on the stream gets the buffered events, then the iteration ends."""
        seen: list[CacheEvent] = []

        async def consume(stream: sq.EventStream) -> None:
            async for event in stream:
                seen.append(event)

        async with trio.open_nursery() as nursery:
            async with sq.open_query_client() as client:
                nursery.start_soon(consume, client.events())
                await wait_all_tasks_blocked()
                await client.set_query_data(A, 1)
            await wait_all_tasks_blocked()
            assert nursery.child_tasks == frozenset()
        assert summary(seen) == [("added", A, "pending", None), ("updated", A, "success", 1)]

    async def test_two_consumers_of_one_stream_both_end(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Two tasks reading one stream share its events and both end when the client closes."""
        seen: list[tuple[str, CacheEvent]] = []

        async def consume(name: str, stream: sq.EventStream) -> None:
            async for event in stream:
                seen.append((name, event))
                await trio.sleep(1.0)

        async with trio.open_nursery() as nursery:
            async with sq.open_query_client() as client:
                stream = client.events()
                nursery.start_soon(consume, "one", stream)
                await wait_all_tasks_blocked()
                nursery.start_soon(consume, "two", stream)
                await wait_all_tasks_blocked()
                await client.set_query_data(A, 1)
                await trio.sleep(5.0)
            await wait_all_tasks_blocked()
            still_reading = len(nursery.child_tasks)
            nursery.cancel_scope.cancel()  # so that the bug fails the test instead of hanging it
        assert still_reading == 0
        assert sorted(e.type.value for _, e in seen) == ["added", "updated"]

    async def test_aclose_ends_the_iteration_after_the_buffered_events(self) -> None:
        """aclose: no more events are buffered; those already buffered are still read."""
        async with sq.open_query_client() as client:
            stream = client.events()
            await client.set_query_data(A, 1)
            await stream.aclose()
            await client.set_query_data(B, 2)
            events = [event async for event in stream]
        assert summary(events) == [("added", A, "pending", None), ("updated", A, "success", 1)]

    async def test_async_with_closes_the_stream(self) -> None:
        """Leaving ``async with stream`` closes it: later changes are not buffered."""
        async with sq.open_query_client() as client:
            async with client.events() as stream:
                await client.set_query_data(A, 1)
            await client.set_query_data(B, 2)
            events = [event async for event in stream]
        assert [e.key for e in events] == [A, A]

    async def test_a_dropped_stream_is_forgotten(self) -> None:
        """A stream nobody references any more stops being fed (no leak, no cost)."""
        async with sq.open_query_client() as client:
            client.events()
            gc.collect()
            assert len(client._events.streams) == 0
