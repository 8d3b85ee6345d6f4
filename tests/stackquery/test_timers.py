"""KeyTimers: entries wait in a coarse wheel, yet each fires exactly at its deadline."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from stackquery._timers import RESOLUTION, KeyTimers


class Owner:
    """Keeps each key's deadline that counts, as the L1 table keeps ``timer_at``."""

    def __init__(self) -> None:
        self.deadlines: dict[str, float] = {}
        self.fired: list[tuple[str, float, float]] = []
        self.timers = KeyTimers(self.fire, self.deadlines.get)

    def push(self, deadline: float, key: str) -> None:
        self.timers.push(deadline, key)
        self.deadlines[key] = deadline

    def fire(self, key: str, deadline: float) -> None:
        if self.deadlines.get(key) == deadline:
            del self.deadlines[key]
            self.fired.append((key, deadline, trio.current_time()))


async def test_each_entry_fires_at_its_own_deadline_never_early_never_late(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Deadlines within one bucket, across buckets and already past fire in order, on time."""
    owner = Owner()
    timers = owner.timers
    start = trio.current_time()
    deadlines = {"a": 0.25, "b": 0.75, "c": 3 * RESOLUTION + 0.5, "d": 10.0, "past": -5.0}
    for key, offset in deadlines.items():
        owner.push(start + offset, key)
    assert len(timers) == 5
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await trio.sleep(4.0)
        owner.push(start + 4.5, "late-push")  # into a bucket the wheel already moved
        owner.push(start + 7.2, "e")
        await trio.sleep(20.0)
        nursery.cancel_scope.cancel()
    assert [key for key, *_ in owner.fired] == ["past", "a", "b", "c", "late-push", "e", "d"]
    for key, deadline, at in owner.fired:
        assert at == max(deadline, start), key
    assert len(timers) == 0


async def _push_many_to_a_waiting_task(
    offsets: dict[str, float], pending: int, first: float | None = None
) -> tuple[float, list[tuple[str, float, float]]]:
    """Push ``offsets`` (seconds from now, by key) together to a waiting timer task, check
    that ``pending`` entries wait, and return the start and what fired.  The task waits
    with nothing due, or (``first``) for an entry ``"first"`` due that many seconds from
    now, pushed before it started (so nothing waits for the timers to be nonempty)."""
    owner = Owner()
    timers = owner.timers
    start = trio.current_time()
    if first is not None:
        owner.push(start + first, "first")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await trio.sleep(2.0)  # the timer task waits, with nothing due or for "first"
        keys = list(offsets)
        deadlines = [start + offset for offset in offsets.values()]
        timers.push_many(deadlines, keys)
        owner.deadlines.update(zip(keys, deadlines, strict=True))
        assert len(timers) == pending
        await trio.sleep(20.0)
        assert len(timers) == 0
        nursery.cancel_scope.cancel()
    return start, owner.fired


async def test_push_many_fires_each_entry_as_push_would_and_wakes_a_waiting_timer_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Entries pushed together, in runs of one bucket, across buckets, into a bucket already
    moved and never (``inf``), fire in order at their deadlines, the waiting task woken."""
    offsets = {"a": 3.5, "b": 3.25, "c": 9.0, "d": 3.75, "moved": 2.5, "never": math.inf}
    start, fired = await _push_many_to_a_waiting_task(offsets, pending=5)
    assert fired == [
        ("moved", start + 2.5, start + 2.5),
        ("b", start + 3.25, start + 3.25),
        ("a", start + 3.5, start + 3.5),
        ("d", start + 3.75, start + 3.75),
        ("c", start + 9.0, start + 9.0),
    ]


async def test_push_many_of_one_bucket_fires_each_entry_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Entries pushed together into one bucket (keys landed together, added at once) fire in
    order, each at its deadline, the waiting timer task woken; a key without a deadline is
    refused, and nothing is pushed."""
    start, fired = await _push_many_to_a_waiting_task({"a": 5.5, "b": 5.25, "c": 5.75}, pending=3)
    assert fired == [
        ("b", start + 5.25, start + 5.25),
        ("a", start + 5.5, start + 5.5),
        ("c", start + 5.75, start + 5.75),
    ]
    timers = Owner().timers
    with pytest.raises(ValueError, match=r"^push_many: as many deadlines as keys are needed$"):
        timers.push_many([start + 5.5, start + 5.25], ["a", "b", "c"])
    assert len(timers) == 0


async def test_push_many_of_one_entry_fires_it_as_push_would(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One entry pushed alone through push_many (a lone read's landing) fires at its deadline;
    one deadline for two keys is refused, and nothing is pushed."""
    start, fired = await _push_many_to_a_waiting_task({"a": 5.5}, pending=1)
    assert fired == [("a", start + 5.5, start + 5.5)]
    timers = Owner().timers
    with pytest.raises(ValueError, match=r"^push_many: as many deadlines as keys are needed$"):
        timers.push_many([start + 5.5], ["a", "b"])
    assert len(timers) == 0


async def test_push_many_of_one_bucket_to_a_task_waiting_for_an_earlier_entry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Entries pushed together into one bucket while the timer task already waits for an
    entry due before them (nothing waits for the timers to be nonempty) fire in order."""
    start, fired = await _push_many_to_a_waiting_task({"a": 5.5, "b": 5.25}, pending=3, first=2.5)
    assert fired == [
        ("first", start + 2.5, start + 2.5),
        ("b", start + 5.25, start + 5.25),
        ("a", start + 5.5, start + 5.5),
    ]


async def test_a_superseded_entry_never_fires_and_the_new_deadline_does(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A key moved to a later bucket, and one moved within its bucket, fire once, when due."""
    owner = Owner()
    start = trio.current_time()
    owner.push(start + 2.5, "later")
    owner.push(start + 6.5, "later")  # supersedes the entry in bucket 2
    owner.push(start + 3.75, "within")
    owner.push(start + 3.25, "within")  # same bucket, earlier
    async with trio.open_nursery() as nursery:
        nursery.start_soon(owner.timers.run)
        await trio.sleep(10.0)
        nursery.cancel_scope.cancel()
    assert owner.fired == [
        ("within", start + 3.25, start + 3.25),
        ("later", start + 6.5, start + 6.5),
    ]
    assert len(owner.timers) == 0


async def test_compact_drops_entries_in_the_wheel_and_in_the_heap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Entries whose key's deadline no longer counts go at once, in the wheel and in the heap."""
    owner = Owner()
    timers = owner.timers
    start = trio.current_time()
    for n in range(10):
        owner.push(start + n * 0.6, f"k{n}")
    for n in range(10):
        if n not in (1, 7):
            del owner.deadlines[f"k{n}"]
    timers.compact()
    assert len(timers) == 2
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await trio.sleep(10.0)
        nursery.cancel_scope.cancel()
    assert [key for key, *_ in owner.fired] == ["k1", "k7"]
