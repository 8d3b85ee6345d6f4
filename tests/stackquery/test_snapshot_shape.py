"""Specification of the snapshot's shared part: keys alike share one interned Shape."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

import stackquery as sq
from stackquery import _state


async def load() -> int:
    return 7


async def fail() -> int:
    raise ValueError("down")


class TestShape:
    async def test_keys_fetched_alike_share_one_shape(self) -> None:
        """100 keys fetched with the same options hold the same Shape object."""
        stale_time = 600.0
        async with sq.open_query_client() as client:
            for n in range(100):
                options = sq.QueryOptions(query_key=("s", n), query_fn=load, stale_time=stale_time)
                assert await client.fetch_query(options) == 7
            shapes = {id(snap.shape) for snap in client.snapshots.values()}
            assert len(shapes) == 1
            snap = client.snapshots[sq.QueryOptions(query_key=("s", 0), query_fn=load).key_hash]
            assert snap.stale_time is stale_time
            assert (snap.status, snap.fetch_status, snap.fetch_count, snap.failure) == (
                _state.QueryStatus.SUCCESS,
                _state.FetchStatus.IDLE,
                1,
                None,
            )

    def test_an_equal_stale_time_of_another_identity_gets_its_own_shape(self) -> None:
        """stale_time counts by identity (the fresh hit compares it with `is`)."""
        first, second = float("600"), float("600")
        assert first == second and first is not second
        args = (_state.QueryStatus.SUCCESS, _state.FetchStatus.IDLE, False, None)
        one = _state.shape(*args, first, 300.0, 1)
        assert _state.shape(*args, first, 300.0, 1) is one
        other = _state.shape(*args, second, 300.0, 1)
        assert other is not one and other.stale_time is second

    def test_a_failure_is_never_shared(self) -> None:
        """A shape with a failure is a new object each time (it holds that key's error)."""
        failure = _state.Failure(error=ValueError("x"), fetch_failure_count=1, error_count=1)
        args = (_state.QueryStatus.ERROR, _state.FetchStatus.IDLE, False, failure, None, 300.0, 1)
        assert _state.shape(*args) is not _state.shape(*args)

    def test_a_transition_changes_the_shape_only_when_one_of_its_fields_changes(self) -> None:
        """A use keeps the shape; a fetch starting takes another."""
        snap = _state.empty_snapshot("[1]", stale_time=None, gc_time=10.0, now=0.0)
        moved = _state.used(snap, now=5.0)
        assert moved.shape is snap.shape and moved.collect_at == 15.0
        fetching = _state.fetching(snap, now=1.0)
        assert fetching.shape is not snap.shape
        assert (fetching.fetch_status, fetching.fetch_count, fetching.gc_time) == (
            _state.FetchStatus.FETCHING,
            1,
            10.0,
        )
        assert fetching.collect_at == 11.0

    async def test_a_failed_key_reports_its_error_through_the_shape(self) -> None:
        """The error, its count and the failed attempts are read through the key's shape."""
        options = sq.QueryOptions(query_key=("f",), query_fn=fail, retry=0)
        async with sq.open_query_client() as client:
            with pytest.raises(ValueError, match="down"):
                await client.fetch_query(options)
            state = client.get_query_state(("f",))
            assert state is not None
            assert (state.status, type(state.error), state.fetch_failure_count) == (
                _state.QueryStatus.ERROR,
                ValueError,
                1,
            )
            assert client.snapshots[options.key_hash].error_count == 1


class TestSharedTimes:
    async def test_a_key_whose_gc_time_is_its_fresh_period_keeps_one_object_for_both(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """stale_at, collect_at and the timer's deadline are kept as one object, shared by
        the keys landed alike (@cache's case): no float of the key's own."""
        async with sq.open_query_client() as client:
            await trio.sleep(1.5)
            kept = []
            for n in range(2):
                options = sq.QueryOptions(
                    query_key=("t", n), query_fn=load, stale_time=60.0, gc_time=60.0
                )
                await client.fetch_query(options)
                snap = client.snapshots[options.key_hash]
                assert (snap.stale_at, snap.collect_at, snap.timer_at) == (61.5, 61.5, 61.5)
                assert snap.data_updated_at == client.clock.wall(1.5)
                kept.append((snap.stale_kept, snap.collect_kept, snap.timer_kept))
            assert len({id(deadline) for deadlines in kept for deadline in deadlines}) == 1

    async def test_keys_landed_alike_share_their_stale_and_gc_deadlines(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """stale_time 600, gc_time 300: each key keeps the two deadlines as objects shared by
        all, the timer at the gc one; each still goes stale and leaves on time."""
        async with sq.open_query_client() as client:
            keys = [
                sq.QueryOptions(query_key=("u", n), query_fn=load, stale_time=600.0)
                for n in range(3)
            ]
            for options in keys:
                await client.fetch_query(options)
            snaps = [client.snapshots[options.key_hash] for options in keys]
            kept = {(id(s.stale_kept), id(s.collect_kept), id(s.timer_kept)) for s in snaps}
            assert len(kept) == 1
            stale, collect, timer = snaps[0].stale_kept, snaps[0].collect_kept, snaps[0].timer_kept
            assert timer is collect and stale is not collect
            assert (snaps[0].stale_at, snaps[0].collect_at) == (600.0, 300.0)
            await trio.sleep(299.5)
            assert len(client.snapshots) == 3
            await trio.sleep(1.0)
            assert len(client.snapshots) == 0

    async def test_a_refetch_while_the_timer_counts_from_the_old_data_times_the_new(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Fetched at 0 (stale and gc 10), fetched again at 4: fresh until 14, gone at 14."""
        async with sq.open_query_client() as client:
            options = sq.QueryOptions(
                query_key=("r",), query_fn=load, stale_time=10.0, gc_time=10.0
            )
            await client.fetch_query(options)
            await trio.sleep(4.0)
            await client.invalidate_queries(("r",))
            await client.fetch_query(options)  # stale: served, and refetched at once
            await trio.testing.wait_all_tasks_blocked()
            snap = client.snapshots[options.key_hash]
            assert (snap.stale_at, snap.timer_at, snap.fresh) == (14.0, 10.0, True)
            await trio.sleep(9.5)
            assert client.snapshots[options.key_hash].fresh
            await trio.sleep(0.5)
            await trio.testing.wait_all_tasks_blocked()  # the timer, due at this instant too
            assert options.key_hash not in client.snapshots

    async def test_a_jittered_key_keeps_its_own_stale_time_exactly(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With jitter the period is the key's own: kept as a trio time, fetch time + period."""
        config = sq.QueryClientConfig(jitter=0.5, seed=3)
        async with sq.open_query_client(config) as client:
            await trio.sleep(0.1)
            options = sq.QueryOptions(query_key=("j",), query_fn=load, stale_time=10.0)
            await client.fetch_query(options)
            snap = client.snapshots[options.key_hash]
            stale = snap.stale_kept
            assert type(stale) is float and stale == snap.stale_at
            assert 5.1 <= snap.stale_at <= 15.1 and snap.stale_at != 10.1

    def test_unequal_times_are_kept_apart(self) -> None:
        """A gc time other than the fresh period gives collect_at its own value."""
        snap = _state.fetching(
            _state.empty_snapshot("[1]", stale_time=5.0, gc_time=10.0, now=0.0), now=0.0
        )
        landed = _state.with_data(
            snap,
            7,
            updated_at_wall=1000.0,
            updated_at=1.0,
            stale_time=5.0,
            resolved_stale_time=5.0,
            now=1.0,
            idle=True,
        )
        assert (landed.stale_at, landed.collect_at, landed.fetch_count) == (6.0, 11.0, 1)
        assert (landed.status, landed.fetch_status, landed.fresh_for) == (
            _state.QueryStatus.SUCCESS,
            _state.FetchStatus.IDLE,
            5.0,
        )

    def test_with_data_takes_a_new_gc_time(self) -> None:
        """A landing with a gc_time of its own puts it in the shape and counts collect_at by it."""
        snap = _state.empty_snapshot("[1]", stale_time=None, gc_time=10.0, now=0.0)
        landed = _state.with_data(
            snap,
            7,
            updated_at_wall=1000.0,
            updated_at=2.0,
            stale_time=None,
            resolved_stale_time=0.0,
            now=2.0,
            gc_time=30.0,
        )
        assert (landed.gc_time, landed.collect_at, landed.fresh) == (30.0, 32.0, False)


class TestBuiltSlotBySlot:
    """The batch transitions build snapshots slot by slot, without the class's __init__."""

    def test_an_empty_key_of_a_batch_is_the_snapshot_the_class_would_make(self) -> None:
        """empty_of_shape sets every field, as the class's constructor would."""
        empty = _state.empty_shape(60.0, 300.0, fetching=True)
        options = object()
        built = _state.empty_of_shape("[1]", empty, 10.0, options)
        made = _state.Snapshot("[1]", shape=empty, collect_kept=310.0, options=options)
        assert attrs.asdict(built, recurse=False) == attrs.asdict(made, recurse=False)

    def test_a_landed_key_of_a_batch_is_the_snapshot_with_data_would_make(self) -> None:
        """landed_fresh, from a key made fetching, is with_data of it (idle), field by field."""
        stale_time = 60.0
        fetching = _state.empty_shape(stale_time, 300.0, fetching=True)
        snap = _state.empty_of_shape("[1]", fetching, 10.0, "options")
        snap.hit = 11.0
        landed = _state.landed_fresh(
            snap, _state.landed_shape(fetching), "data", 1_000.0, 75.0, 320.0, 75.0
        )
        expected = _state.with_data(
            snap,
            "data",
            updated_at_wall=1_000.0,
            updated_at=15.0,
            stale_time=stale_time,
            resolved_stale_time=60.0,
            now=20.0,
            idle=True,
        )
        expected.timer_kept = 75.0  # what the table writes when it arms the key's timer
        assert attrs.asdict(landed, recurse=False) == attrs.asdict(expected, recurse=False)
