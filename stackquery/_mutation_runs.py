"""MutationRuns: the client's mutations in flight, and one queue per mutation scope.

Mutations that share a ``scope`` run one at a time, in the order their
``mutate`` calls were made.  Each scope is a :class:`trio.StrictFIFOLock`,
whose documented guarantee is that tasks acquire it in the order they asked
for it; ``mutate`` asks for it before its first checkpoint, so "the order
they asked" is the order of the calls.  A scope's lock lives only while a
mutation holds it or waits for it: a program that uses a scope per account
keeps no lock per account it ever touched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio


@attrs.define(eq=False)
class _Scope:
    """One scope's queue: its lock and how many mutations hold it or wait for it."""

    lock: trio.StrictFIFOLock = attrs.field(factory=trio.StrictFIFOLock)
    users: int = 0


class MutationRuns:
    """Counts the client's mutations in flight and serializes those that share a scope."""

    def __init__(self) -> None:
        self.running = 0
        """``mutate`` calls that have not returned yet (those waiting for their scope too)."""
        self._scopes: dict[str, _Scope] = {}

    @property
    def scopes(self) -> int:
        """Scopes with a mutation running or waiting."""
        return len(self._scopes)

    @asynccontextmanager
    async def run(self, scope: str | None) -> AsyncIterator[None]:
        """Count one mutation for the block's duration; with a ``scope``, run it in its turn.

        The turn is taken when the block is entered, before any checkpoint.
        Cancelled while waiting, the mutation leaves the queue and the next
        one keeps its place; cancelled while running, it frees the scope for
        the next one.
        """
        self.running += 1
        try:
            if scope is None:
                yield
                return
            queue = self._scopes.get(scope)
            if queue is None:
                queue = self._scopes[scope] = _Scope()
            queue.users += 1
            try:
                async with queue.lock:
                    yield
            finally:
                queue.users -= 1
                if not queue.users:
                    del self._scopes[scope]
        finally:
            self.running -= 1


__all__ = ["MutationRuns"]
