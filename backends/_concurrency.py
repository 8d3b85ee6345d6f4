"""Run several awaitables at once and get their results in order, or the first error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

T = TypeVar("T")


async def gather_limited(
    thunks: Sequence[Callable[[], Awaitable[T]]], *, max_concurrency: int
) -> list[T]:
    """Await every thunk, at most ``max_concurrency`` at a time; return results in order.

    Args:
        thunks: zero-argument async callables.
        max_concurrency: how many may run at the same time.

    Returns:
        One result per thunk, in the order of ``thunks``.

    Raises:
        Exception: the first exception a thunk raised, unwrapped (not in an
            ``ExceptionGroup``); the other thunks are cancelled.
    """
    if len(thunks) == 1:
        return [await thunks[0]()]
    results: dict[int, T] = {}
    errors: list[Exception] = []
    limiter = trio.CapacityLimiter(max_concurrency)

    async def run(index: int, thunk: Callable[[], Awaitable[T]]) -> None:
        async with limiter:
            try:
                results[index] = await thunk()
            except Exception as exc:
                # Collected rather than raised so the caller gets the error itself,
                # not an ExceptionGroup it has to unpack.
                errors.append(exc)
                nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for index, thunk in enumerate(thunks):
            nursery.start_soon(run, index, thunk)
    if errors:
        raise errors[0]
    return [results[index] for index in range(len(thunks))]
