"""What parking costs the cyclic garbage collector: GC-tracked objects per parked task."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable

import trio
import trio.testing


async def tracked_per_parked_task(
    nursery: trio.Nursery, task: Callable[[], Awaitable[object]], count: int
) -> float:
    """Spawn ``count`` tasks of ``task`` in ``nursery``; return the GC-tracked objects each
    added by running until it parked.

    Counted from the tasks spawned but not run yet, so that what trio makes for every task
    (the task, its context, its list of child nurseries) and the task's own coroutine
    are left out: what remains is what parking made.  The tasks are left parked.
    """
    for _ in range(count):
        nursery.start_soon(task)
    gc.collect()
    spawned = len(gc.get_objects())
    await trio.testing.wait_all_tasks_blocked()
    gc.collect()
    return (len(gc.get_objects()) - spawned) / count
