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
    if metrics is None:
        return functools.partial(func, *args, **kwargs)
    return types.MethodType(origin_binder(func, name=name, metrics=metrics), (args, kwargs))


def origin_binder(
    func: Callable[..., Any],
    *,
    name: str,
    metrics: MetricsCollector | None,
    keywords: bool = True,
) -> Callable[[Any], Any]:
    """Return ``call_with(bound)``, made once per function: ``types.MethodType(call_with,
    bound)`` is a no-argument ``query_fn`` calling ``func`` with a call's arguments.

    ``bound`` is the call's ``(args, kwargs)``, or (``keywords=False``, no
    metrics) its ``args`` tuple alone.  Either is what :func:`origin_call`
    makes, in a third of the memory a key keeps (a bound method holding the
    tuple, where a ``functools.partial`` is three objects), and it tells whose
    arguments it holds (``query_fn.__func__``, ``query_fn.__self__``), so that
    options built for a call can be told apart.  ``call_with`` is async if
    ``func`` is, or with metrics (which runs a sync ``func`` in a worker thread
    itself and records each attempt as :func:`origin_call` says).
    """
    call_with: Callable[[Any], Any]
    if metrics is not None:
        is_async = is_async_callable(func)

        async def call_with(bound: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
            metrics.record_fetch(name)
            start = trio.current_time()
            try:
                if is_async:
                    result = await func(*bound[0], **bound[1])
                else:
                    call = functools.partial(func, *bound[0], **bound[1])
                    result = await trio.to_thread.run_sync(call, abandon_on_cancel=True)
            except Exception as exc:
                metrics.record_error(name, "fetch", type(exc).__name__)
                raise
            finally:
                metrics.record_latency(name, "fetch", trio.current_time() - start)
            return result

    elif is_async_callable(func):
        if keywords:

            async def call_with(bound: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
                return await func(*bound[0], **bound[1])

        else:

            async def call_with(bound: tuple[Any, ...]) -> Any:
                return await func(*bound)

    elif keywords:

        def call_with(bound: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
            return func(*bound[0], **bound[1])

    else:

        def call_with(bound: tuple[Any, ...]) -> Any:
            return func(*bound)

    return call_with


def key_origin(func: Callable[..., Any], indexes: tuple[int, ...]) -> Callable[[Any], Any]:
    """Return ``from_key(ctx)``, a ``query_fn`` taking the :class:`QueryContext`: it calls
    ``func`` with the arguments read back from the query's key, ``ctx.key[i]`` for each
    ``i`` in ``indexes`` (one per parameter, in order), without metrics.

    One object for every call of the function, where :func:`origin_binder`'s
    is one per call: for the calls whose key holds every argument as it was
    given (the key is its own canonical form), so that nothing is lost.
    Async if ``func`` is (else the client runs it in a worker thread).
    """
    from_key: Callable[[Any], Any]
    if is_async_callable(func):

        async def from_key(ctx: Any) -> Any:
            key = ctx.key
            return await func(*[key[i] for i in indexes])

    else:

        def from_key(ctx: Any) -> Any:
            key = ctx.key
            return func(*[key[i] for i in indexes])

    return from_key
