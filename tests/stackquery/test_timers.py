"""KeyTimers: entries wait in a coarse wheel, yet each fires exactly at its deadline."""

from __future__ import annotations

import trio
import trio.testing

from stackquery._timers import RESOLUTION, KeyTimers


async def test_each_entry_fires_at_its_own_deadline_never_early_never_late(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Deadlines within one bucket, across buckets and already past fire in order, on time."""
    fired: list[tuple[str, float, float]] = []
    timers = KeyTimers(lambda key, deadline: fired.append((key, deadline, trio.current_time())))
    start = trio.current_time()
    deadlines = {"a": 0.25, "b": 0.75, "c": 3 * RESOLUTION + 0.5, "d": 10.0, "past": -5.0}
    for key, offset in deadlines.items():
        timers.push(start + offset, key)
    assert len(timers) == 5
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await trio.sleep(4.0)
        timers.push(start + 4.5, "late-push")  # into a bucket the wheel already moved
        timers.push(start + 7.2, "e")
        await trio.sleep(20.0)
        nursery.cancel_scope.cancel()
    assert [key for key, *_ in fired] == ["past", "a", "b", "c", "late-push", "e", "d"]
    for key, deadline, at in fired:
        assert at == max(deadline, start), key
    assert len(timers) == 0


async def test_compact_drops_entries_in_the_wheel_and_in_the_heap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[str] = []
    timers = KeyTimers(lambda key, _deadline: fired.append(key))
    start = trio.current_time()
    for n in range(10):
        timers.push(start + n * 0.6, f"k{n}")
    timers.compact(lambda _deadline, key: key in {"k1", "k7"})
    assert len(timers) == 2
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await trio.sleep(10.0)
        nursery.cancel_scope.cancel()
    assert fired == ["k1", "k7"]
