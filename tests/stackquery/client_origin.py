"""A scripted origin for the QueryClient specification tests.

``Origin`` is a ``query_fn`` (an object whose ``__call__`` is async, so the
client awaits it) that counts its calls exactly, returns its scripted results
in turn, takes ``delay`` seconds of trio time per call, and records when each
call started and whether it was cancelled.
"""

from __future__ import annotations

import traceback
from typing import Any

import trio


class Failure(Exception):
    """An origin failure (state, not a crash)."""


class Origin:
    """A query function that returns (or raises) its scripted results in turn.

    With no results it returns ``"v1"``, ``"v2"`` ... one per call.  With
    results, call ``n`` gets result ``n`` and every call past the end gets the
    last one; an exception instance in the script is raised (a fresh copy of
    it, so each call raises its own object).
    """

    def __init__(self, *results: Any, delay: float = 0.0) -> None:
        self.results = list(results)
        self.delay = delay
        self.calls = 0
        self.finished = 0
        self.cancelled = 0
        self.started_at: list[float] = []
        self.errors: list[BaseException] = []

    async def __call__(self) -> Any:
        self.calls += 1
        number = self.calls
        self.started_at.append(trio.current_time())
        try:
            await trio.sleep(self.delay)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        self.finished += 1
        if not self.results:
            return f"v{number}"
        result = self.results[min(number, len(self.results)) - 1]
        if isinstance(result, BaseException):
            error = type(result)(*result.args)
            self.errors.append(error)
            raise error
        return result


def frames(error: BaseException) -> list[str]:
    """The function names in ``error``'s traceback, outermost first."""
    return [entry.name for entry in traceback.extract_tb(error.__traceback__)]


def assert_one_traceback(seen: list[list[str]], error: BaseException, outermost: str) -> None:
    """Every traceback in ``seen`` (see :func:`frames`) is one and the same, from the
    caller's ``outermost`` frame down to the origin's, at most 8 frames; and ``error``
    (which every caller raised) has it too: none grew by the others' frames."""
    assert seen[0][0] == outermost
    assert seen[0][-1] == "__call__"  # Origin.__call__, where the error was raised
    assert len(seen[0]) <= 8
    assert all(names == seen[0] for names in seen)
    assert frames(error) == seen[0]
