"""Calling the user's ``query_fn``: awaited or in a worker thread, under a per-attempt timeout.

And the ``on_success`` / ``on_error`` / ``on_settled`` callbacks after a
fetch, which may raise: that is logged, never the fetch's problem.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

import trio

from ._errors import QueryTimeoutError
from ._options import QueryOptions
from ._query_context import QueryContext

logger = logging.getLogger("stackquery.actor")


async def call_query_fn(
    options: QueryOptions[Any], context: QueryContext[Any] | None = None
) -> Any:
    """One attempt of ``options.query_fn``, bounded by ``options.timeout``.

    A ``query_fn`` that takes a context (``options.takes_context``) is called
    with ``context``; any other with no argument.  A plain function runs in a
    worker thread; cancelled meanwhile, the attempt stops waiting for it at
    once, and a coroutine it then returns is closed, never awaited.

    Raises:
        QueryTimeoutError: the attempt took longer than ``options.timeout``.
        Exception: whatever ``query_fn`` raised.
    """
    if options.timeout is None:
        return await _call(options, context)
    try:
        with trio.fail_after(options.timeout):
            return await _call(options, context)
    except trio.TooSlowError:
        raise QueryTimeoutError(
            f"query {options.query_key!r}: an attempt took longer than {options.timeout}s"
        ) from None


async def _call(options: QueryOptions[Any], context: QueryContext[Any] | None) -> Any:
    args = (context,) if options.takes_context else ()
    if options.is_async:
        return await options.query_fn(*args)
    call = _ThreadCall(options.query_fn, args)
    try:
        # Boxed in a tuple: trio refuses a coroutine returned from a worker thread.
        (result,) = await trio.to_thread.run_sync(call.run, abandon_on_cancel=True)
    except BaseException:
        call.abandon()  # cancelled: trio will drop what the thread returns; it is closed
        raise
    if inspect.isawaitable(result):  # e.g. ``lambda: load(42)`` with an async load
        result = await result
    return result


class _ThreadCall:
    """A sync ``query_fn`` called in a worker thread that the caller may abandon.

    When the fetch is cancelled while the thread runs, trio abandons the
    thread and drops its result; an awaitable it returned (a coroutine:
    ``lambda: load(42)``) would then be dropped unawaited ("coroutine ...
    was never awaited").  So whichever side comes second, the thread
    finishing or the caller abandoning it, closes that awaitable; the lock
    makes exactly one of them see the other.
    """

    __slots__ = ("_abandoned", "_args", "_fn", "_lock", "_result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._fn = fn
        self._args = args
        self._lock = threading.Lock()
        self._abandoned = False
        self._result: Any = None

    def run(self) -> tuple[Any]:
        """Call the function (in the worker thread); raises what it raises."""
        result = self._fn(*self._args)
        with self._lock:
            if not self._abandoned:
                self._result = result
                return (result,)
        _close(result)
        return (None,)

    def abandon(self) -> None:
        """The caller stopped waiting (in trio's thread): close what the thread returned, if
        it returned already; else the thread closes it when it does.  Never raises."""
        with self._lock:
            self._abandoned = True
            result, self._result = self._result, None
        _close(result)


def _close(result: object) -> None:
    """Close an awaitable nobody will await (a coroutine: no warning); log what that raises."""
    close = getattr(result, "close", None) if inspect.isawaitable(result) else None
    if close is not None:
        try:
            close()
        except Exception:
            logger.exception("closing an abandoned awaitable %r raised", result)


def run_callbacks(options: QueryOptions[Any], ok: bool, result: Any) -> None:
    """Call the fetch's ``on_success`` or ``on_error``, then ``on_settled``; log what raises."""
    if options.on_success is None and options.on_error is None and options.on_settled is None:
        return  # most queries have none: build nothing for them
    data, error = (result, None) if ok else (None, result)
    calls: list[tuple[str, Callable[..., object] | None, tuple[Any, ...]]] = [
        ("on_success", options.on_success, (data,))
        if ok
        else ("on_error", options.on_error, (error,)),
        ("on_settled", options.on_settled, (data, error)),
    ]
    for name, callback, args in calls:
        if callback is None:
            continue
        try:
            callback(*args)
        except Exception:
            logger.exception("%s callback of query %r raised", name, options.query_key)


__all__ = ["call_query_fn", "run_callbacks"]


def cacheable(options: QueryOptions[Any], value: Any) -> bool:
    """Whether a fetched ``value`` is cached: ``options.cache_if(value)`` is true (or unset).

    A ``cache_if`` that raises is logged and the value is not cached.
    """
    keep = options.cache_if
    if keep is None:
        return True
    try:
        return bool(keep(value))
    except Exception:
        logger.exception("cache_if of %r raised; the value is not cached", options.query_key)
        return False
