"""A ``@cache`` wrapper with the decorated function's own parameters.

``async def cached(*args, **kwargs)`` costs a dict per call (the keyword
arguments, even when there are none), and a call by keyword must be
memoized by its items.  For a function whose parameters are all plain
(positional or keyword, no ``*args``, ``**kwargs`` or keyword-only), the
wrapper is made with the same parameters and defaults: Python binds the
call, however it was passed, and the memo key is the tuple of every
parameter's value (the value itself for one parameter: no tuple is made
on a hit), so ``get(42)`` and ``get(user_id=42)`` are one dict lookup of
``42``.  Everything else is as in the generic wrapper (see ``_cache.py``):
the same memo, the same type test of a 0, 1 or bool, the same slow path
(given the arguments as positional ones, defaults filled in).

This is the one function stackquery generates: Python binds a call by the
function's own parameter names, and raises its own errors naming the
function, only for a ``def`` compiled with those names.  Plain
alternatives measured (callgrind, instructions per hit of ``f(42)`` /
``f(user_id=42)``, no client open): the ``*args, **kwargs`` wrapper 11,500
/ 5,500 against 2,600 / 2,700 here (and ``inspect.Signature.bind``'s
errors); a generated ``def`` line only, forwarding to a plain hit-test
function, 3,200 by position (+24%: a frame and the closure's cells per
hit).  A function without parameters could have a plain closure, at +85
instructions per hit (+4%, the closure's cells), on the case already at
0.49x advanced-caching's hit (target 0.5x), so it is generated too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from ._cached_calls import ONE_POSITIONAL, CachedCalls, TypedMemo, plain_parameters

_BODY = """
async def {name}({params}):{pack}
    _sq_client = {find_client}
    if _sq_client is not None:
        # Subscripts, not .get(): no method call on a hit; a miss raises KeyError
        # (an unhashable argument TypeError: the slow path says what is wrong).
        try:
            _sq_memo = _sq_by_args[{memo_key}]
            if _sq_memo.__class__ is _sq_typed:
                # None when no memo fits: in no table, so a KeyError too.
                _sq_memo = (
                    _sq_memo.key_hash
                    if _sq_memo.kind == _sq_one_positional
                    and type({at}) is _sq_memo.cls
                    else _sq_memo.key_hash_for({args}, _sq_no_kwargs)
                )
            _sq_snap = {snapshots}[_sq_memo]
            if _sq_snap.fresh_for is _sq_stale_time:
                return _sq_snap.data
        except (KeyError, TypeError):
            pass
    return await _sq_slow(_sq_client, {args}, {{}})
"""


_STATIC_BODY = """
async def {name}():
    _sq_client = {find_client}
    if _sq_client is not None:
        try:
            _sq_snap = {snapshots}[_sq_key_hash]
            if _sq_snap.fresh_for is _sq_stale_time:
                return _sq_snap.data
        except KeyError:
            pass
    return await _sq_slow(_sq_client, (), {{}})
"""


def exact_wrapper(state: CachedCalls[Any]) -> Callable[..., Coroutine[Any, Any, Any]] | None:
    """The wrapper with ``state.func``'s own parameters, or ``None`` if they are not all plain."""
    if not plain_parameters(state.template.signature):
        return None
    params = list(state.template.signature.parameters.values())
    if not params and state.static is None:
        return None  # a callable key: its own wrapper
    namespace: dict[str, Any] = {
        "_sq_by_args": state.by_args,
        "_sq_stale_time": state.stale_time,
        "_sq_slow": state.call,
        "_sq_one_positional": ONE_POSITIONAL,
        "_sq_typed": TypedMemo,
        "_sq_no_kwargs": {},
    }
    source_params = []
    for i, p in enumerate(params):
        if p.default is inspect.Parameter.empty:
            source_params.append(p.name)
        else:
            namespace[f"_sq_default_{i}"] = p.default
            source_params.append(f"{p.name}=_sq_default_{i}")
    if any(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in params):
        last = max(i for i, p in enumerate(params) if p.kind is inspect.Parameter.POSITIONAL_ONLY)
        source_params.insert(last + 1, "/")
    fixed = state.choice.client
    if fixed is not None:
        namespace["_sq_fixed"] = fixed
        namespace["_sq_snapshots"] = fixed.snapshots
        find_client, snapshots = "_sq_fixed", "_sq_snapshots"
    else:
        lookups = state.choice.lookups()
        namespace["_sq_first"] = lookups.first
        namespace["_sq_last"] = lookups.last
        find_client = "_sq_first()\n    if _sq_client is None:\n        _sq_client = _sq_last()"
        snapshots = "_sq_client.snapshots"
    if state.static is not None:
        namespace["_sq_key_hash"] = state.static.key_hash
    # One parameter: the memo is keyed by its value (state.single), no tuple on a hit.
    names = "".join(f"{p.name}, " for p in params)
    args = f"({names})"
    source = (_BODY if state.static is None else _STATIC_BODY).format(
        name=state.func.__name__ if state.func.__name__.isidentifier() else "cached",
        params=", ".join(source_params),
        pack="" if state.single else f"\n    _sq_args = {args}",
        memo_key=params[0].name if state.single else "_sq_args",
        at=params[0].name if state.single else "_sq_args[_sq_memo.at]",
        args=args if state.single else "_sq_args",
        find_client=find_client,
        snapshots=snapshots,
    )
    exec(compile(source, f"<stackquery @cache wrapper of {state.name}>", "exec"), namespace)
    wrapper: Callable[..., Coroutine[Any, Any, Any]] = namespace[
        state.func.__name__ if state.func.__name__.isidentifier() else "cached"
    ]
    return wrapper
