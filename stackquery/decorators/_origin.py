"""The origin call of a decorated function, as a ``query_fn``, with or without metrics.

A sync function runs in a worker thread (the client does that for a
``query_fn`` that is not async); with metrics the call is wrapped in an
async function that records it, so the wrapper runs the thread itself.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

import trio

from .._option_checks import is_async_callable
from ..metrics._collector import MetricsCollector


def origin_call(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    name: str,
    metrics: MetricsCollector | None,
) -> Callable[[], Any]:
    """Return a no-argument ``query_fn`` calling ``func(*args, **kwargs)``.

    Without metrics it is a plain ``functools.partial`` (awaited if ``func``
    is async, else run in a worker thread by the client).  With metrics it
    records each attempt: a fetch, its latency (trio time) under ``"fetch"``,
    and a failed one as an error of operation ``"fetch"``.
    """
    call = functools.partial(func, *args, **kwargs)
    if metrics is None:
        return call
    is_async = is_async_callable(func)

    async def measured() -> Any:
        metrics.record_fetch(name)
        start = trio.current_time()
        try:
            if is_async:
                result = await call()
            else:
                result = await trio.to_thread.run_sync(call, abandon_on_cancel=True)
        except Exception as exc:
            metrics.record_error(name, "fetch", type(exc).__name__)
            raise
        finally:
            metrics.record_latency(name, "fetch", trio.current_time() - start)
        return result

    return measured


def argument_binder(func: Callable[..., Any]) -> Callable[[tuple[Any, ...]], Callable[[], Any]]:
    """Return ``bind(args)``: a no-argument ``query_fn`` calling ``func(*args)``, without metrics.

    What ``origin_call(func, args, {}, metrics=None)`` does, in a third of
    the memory a key keeps: the ``query_fn`` is a bound method of a function
    made once (async if ``func`` is), bound to the ``args`` tuple itself
    (which the memo of calls keeps anyway), where a ``functools.partial``
    is three objects (itself, a copy of the arguments, an empty dict).
    """
    call_with: Callable[..., Any]
    if is_async_callable(func):

        async def call_with(args: tuple[Any, ...]) -> Any:
            return await func(*args)

    else:

        def call_with(args: tuple[Any, ...]) -> Any:
            return func(*args)

    return functools.partial(types.MethodType, call_with)
