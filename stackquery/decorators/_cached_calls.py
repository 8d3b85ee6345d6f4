"""What one ``@cache`` function knows, and everything it does besides a fresh hit.

The key hash of each call shape (the call's positional and keyword
arguments) is computed once and memoized, bounded by :data:`MEMO_SIZE`: a
fresh hit needs nothing else, and the hash is the very string the L1 table
holds the key by (the options it was built with made both), so a memo entry
costs its dict slot and its arguments.  The ``QueryOptions`` of a call are
not kept per call shape: a call that is not a fresh hit takes the ones
built last for its key (:data:`RECENT_SIZE` keys' are kept) when they fit
its arguments, else builds them from the function's template
(``_call_options.py``).  Misses, stale hits, calls with metrics,
``invalidate`` and ``clear`` run here.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import types
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs
import trio

from backends import ops

from .._circuit import CircuitBreaker
from .._client import QueryClient
from .._errors import QueryCancelledError
from .._keys import QueryKey, canonical_key, prefix_hash
from .._options import QueryOptions
from .._state import Snapshot
from ..metrics._collector import MetricsCollector
from ._call_options import OptionsTemplate
from ._guards import record_stale_if_error
from ._key_template import KeyTemplate
from ._origin import key_origin, origin_binder
from ._origin_protection import OriginProtection
from ._run_clients import ClientChoice, ClientResolver

R = TypeVar("R")

_PLAIN = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def plain_parameters(signature: inspect.Signature) -> bool:
    """Whether every parameter is plain (positional or keyword; no ``*args``, ``**kwargs``,
    keyword-only) and none is named like the exact wrapper's locals: then that wrapper is used."""
    return all(
        p.kind in _PLAIN and not p.name.startswith("_sq_") for p in signature.parameters.values()
    )


_AS_IS = frozenset({str, int, bool, type(None)})
"""Types of key parts that are their own canonical form (as exact types, not subclasses)."""

RECENT_SIZE = 64
"""Keys whose options a decorated function keeps once built (the last ones, by key hash)."""

MEMO_SIZE = 2730
"""Distinct argument tuples whose key hash a decorated function remembers: when full, those
whose key left the client's L1 table are dropped, and the oldest if that freed too few.
The most a dict's table of 4,096 slots holds (two thirds of it): one entry more and the
table doubles, to 147 KB for the memo rather than 74 (15 bytes a key at 10,000 keys)."""

_namespaces: dict[str, int] = {}


def namespace_of(func: Callable[..., Any]) -> str:
    """Return a namespace for ``func``'s keys: ``module.qualname``, unique in this process.

    A second function with the same qualified name (a function defined
    inside another and decorated on every call) gets ``#2``, ``#3`` ... so
    two decorated functions never share entries.
    """
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    base = f"{module}.{qualname}"
    count = _namespaces.get(base, 0) + 1
    _namespaces[base] = count
    return base if count == 1 else f"{base}#{count}"


ArgsCheck = Callable[[tuple[Any, ...], dict[str, Any]], bool]
"""Whether a call's arguments may use a memo found for equal arguments."""


ONE_POSITIONAL = 1
"""Memo kind: one positional argument is a 0, 1 or bool (at ``at``, of type ``cls``)."""
ONE_KEYWORD = 2
"""Memo kind: one keyword argument is a 0, 1 or bool (named ``at``, of type ``cls``)."""
SEVERAL = 3
"""Memo kind: several flat arguments are; their types, positional then keyword, in ``types``."""
NESTED = 4
"""Memo kind: one is inside a tuple; only :meth:`TypedMemo.matching` (by ``repr``) tells."""


@attrs.frozen
class TypedMemo:
    """The key hash of a call shape whose arguments hold a 0, 1 or bool.

    ``f(1)`` and ``f(True)`` are equal dict keys but two cache keys, so the
    memo of such arguments is used only by a call whose arguments there have
    the same types.  The wrappers test that inline by ``kind`` (no call, no
    allocation for one such argument: the usual ``page(42, 1)``), and fall
    back to :meth:`key_hash_for` when it fails.  The memo of any other call
    shape is its key hash itself (the string the L1 table holds the key by):
    a memo entry costs its dict slot and nothing more.
    """

    key_hash: str
    kind: int
    """:data:`ONE_POSITIONAL` ... :data:`NESTED`."""
    at: Any = None
    cls: type | None = None
    types: tuple[type, ...] | None = None
    check: ArgsCheck | None = None
    """The full test behind ``kind`` (``None``: any arguments fit)."""
    other: TypedMemo | None = None
    """The memo of equal arguments of other types (``f(True)`` after ``f(1)``)."""

    def key_hash_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """The key hash of this memo or the one chained to it that fits the call's argument
        types, or ``None`` (a miss: ``None`` is in no L1 table)."""
        memo: TypedMemo | None = self
        while memo is not None and memo.check is not None and not memo.check(args, kwargs):
            memo = memo.other
        return memo.key_hash if memo is not None else None


Memo = str | TypedMemo
"""A memo entry: the key hash itself, or a :class:`TypedMemo` (ambiguous arguments)."""


def fitting(found: Memo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The key hash memoized in ``found`` for a call's arguments, if their types fit."""
    if type(found) is str:
        return found
    assert type(found) is TypedMemo
    return found.key_hash_for(args, kwargs)


def arg_types(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[type, ...]:
    """The types :attr:`TypedMemo.types` holds for a call's arguments (an exact-size tuple)."""
    if kwargs:
        return (*map(type, args), *map(type, kwargs.values()))
    return (*map(type, args),)


def _ambiguous(value: object) -> bool:
    """Whether ``value`` holds a number equal to a bool (or a bool), at any depth."""
    if isinstance(value, tuple):
        return any(_ambiguous(v) for v in value)
    return isinstance(value, int | float) and (value == 0 or value == 1)


def _memo(
    key_hash: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    other: TypedMemo | None,
) -> Memo:
    """The memo of ``key_hash`` for a call, with the type test its arguments need, if any."""
    positions = [i for i, v in enumerate(args) if _ambiguous(v)]
    names = [n for n, v in kwargs.items() if _ambiguous(v)]
    if not positions and not names:
        return key_hash  # equal arguments are never ambiguous either: nothing to chain
    if any(isinstance(v, tuple) and _ambiguous(v) for v in (*args, *kwargs.values())):
        exact = repr((args, kwargs))
        return TypedMemo(
            key_hash,
            kind=NESTED,
            check=lambda a, k: repr((a, k)) == exact,
            other=other,
        )
    types = arg_types(args, kwargs)

    def check(a: tuple[Any, ...], k: dict[str, Any]) -> bool:
        return arg_types(a, k) == types

    at: int | str | None = None
    cls: type | None = None
    if len(positions) + len(names) > 1:
        kind = SEVERAL
    elif positions:
        kind, at, cls = ONE_POSITIONAL, positions[0], type(args[positions[0]])
    else:
        kind, at, cls = ONE_KEYWORD, names[0], type(kwargs[names[0]])
    return TypedMemo(
        key_hash,
        kind=kind,
        at=at,
        cls=cls,
        types=types,
        check=check,
        other=other,
    )


@attrs.define(eq=False)
class CachedCalls(Generic[R]):
    """Everything one decorated function knows: its template, times, client choice, memo."""

    func: Callable[..., Any]
    name: str
    template: KeyTemplate
    ttl: float | Callable[[Any], float]
    stale: float
    choice: ClientChoice
    metrics: MetricsCollector | None
    stale_time: float | Callable[[Any], float] = attrs.field(init=False)
    """``ttl``, as the one float (or function) object every query of this function carries:
    the client's fresh-hit test compares stale times by identity."""
    resolve: ClientResolver = attrs.field(init=False)
    static: QueryOptions[Any] | None = attrs.field(init=False, default=None)
    """The options of a function without parameters (one key, no memo)."""
    by_args: dict[Any, Memo] = attrs.field(init=False, factory=dict)
    by_kwargs: dict[Any, Memo] = attrs.field(init=False, factory=dict)
    """Memo of calls with positional and keyword arguments: by ``(args, kwargs items)``."""
    by_keywords: dict[Any, Memo] = attrs.field(init=False, factory=dict)
    """Memo of calls with keyword arguments only: by the items alone (one tuple less)."""
    by_key: dict[Any, Memo] = attrs.field(init=False, factory=dict)
    """Memo of a callable key: by its result (it may differ between equal calls)."""
    refresh_started: dict[str, float] = attrs.field(init=False, factory=dict)
    """With metrics: when each key's pending background refresh was started."""
    stale_if_error: float = 0.0
    """Seconds past ``ttl + stale`` the last value is served when a call fails."""
    circuit: CircuitBreaker | None = None
    """The circuit breaker every call of the function goes through."""
    origin: OriginProtection = attrs.field(factory=OriginProtection)
    """``retry``, ``jitter``, ``cache_if`` and ``error_ttl``, passed on to each query."""

    kept: float | None = attrs.field(init=False)
    """Each query's ``gc_time``: one float object for all (``None`` for a ``ttl`` function)."""
    call_with: Callable[[Any], Any] = attrs.field(init=False)
    """The origin of a call without keyword arguments or metrics, bound to its ``args``."""
    call_with_keywords: Callable[[Any], Any] = attrs.field(init=False)
    """The origin of any other call, bound to its ``(args, kwargs)`` (records with metrics)."""
    positional: OptionsTemplate | None = attrs.field(init=False, default=None)
    """Builds the options of a call without keyword arguments (``None`` with metrics)."""
    keywords: OptionsTemplate = attrs.field(init=False)
    """Builds the options of any other call."""
    positions: tuple[int, ...] | None = attrs.field(init=False, default=None)
    """Where each key part's parameter is in a call passing every parameter by position
    (``None``: a signature that is not all plain parameters, or a callable key)."""
    from_key: Callable[[Any], Any] | None = attrs.field(init=False, default=None)
    """With every parameter in the key and no metrics: the ``query_fn`` of every call
    whose key is its own canonical form, reading the arguments back from the key."""
    by_key_template: OptionsTemplate | None = attrs.field(init=False, default=None)
    """Builds the options whose ``query_fn`` is :attr:`from_key`."""
    single: bool = attrs.field(init=False, default=False)
    """One plain parameter, no callable key: calls by position are memoized by the value
    itself, not a 1-tuple of it (a tuple less per memo entry and per hit)."""
    recent: dict[str, QueryOptions[Any]] = attrs.field(init=False, factory=dict)
    """The options built last, by key hash (:data:`RECENT_SIZE` at most): a run of stale
    hits or misses of a key builds them once."""

    def __attrs_post_init__(self) -> None:
        self.stale_time = self.ttl
        # Stale data is served for `stale` seconds after it went stale: counted from its
        # stale time as computed (ttl(value)) and jittered, which max_stale is; a failed
        # call serves it stale_if_error seconds longer.  The key stays in L1 (and its L2
        # entry lives) at least ttl + stale + stale_if_error; the client keeps it longer
        # when a computed or jittered period asks for it (QueryCache.with_data).
        ttl = self.ttl
        self.kept = None if callable(ttl) else ttl + self.stale + self.stale_if_error
        self.resolve = self.choice.resolver()
        func, name, metrics = self.func, self.name, self.metrics
        self.call_with_keywords = origin_binder(func, name=name, metrics=metrics)
        self.keywords = self._template(types.MethodType(self.call_with_keywords, ((), {})))
        self.call_with = origin_binder(func, name=name, metrics=None, keywords=False)
        if metrics is None:
            self.positional = self._template(types.MethodType(self.call_with, ()))
        template = self.template
        params = list(template.signature.parameters.values())
        if not template.is_callable and all(p.kind in _PLAIN for p in params):
            self.single = len(params) == 1 and plain_parameters(template.signature)
            names = [p.name for p in params]
            self.positions = tuple(names.index(field) for field in template.fields)
            if metrics is None and params and set(names) <= set(template.fields):
                # The key: ("fn", name, [text,] *parts); each parameter's first part.
                offset = len(self.namespace_key) + (template.text is not None)
                indexes = tuple(offset + template.fields.index(n) for n in names)
                self.from_key = key_origin(func, indexes)
                self.by_key_template = self._template(self.from_key)
        if not template.signature.parameters and not template.is_callable:
            self.static = self.build_options((), {}, self.parts((), {}))

    def _template(self, query_fn: Callable[..., Any]) -> OptionsTemplate:
        """The options every call of one kind (``query_fn``'s) shares, validated once."""
        origin = self.origin
        options: QueryOptions[Any] = QueryOptions(
            query_key=self.namespace_key,
            query_fn=query_fn,
            stale_time=self.stale_time,
            gc_time=self.kept,
            stale_if_error=self.stale_if_error,
            circuit=self.circuit,
            retry=origin.retry,
            jitter=origin.jitter,
            error_ttl=origin.error_ttl,
            cache_if=origin.cache_if,
            max_stale=None if self.stale == math.inf else self.stale,
        )
        return OptionsTemplate(options)

    @property
    def namespace_key(self) -> QueryKey:
        return ("fn", self.name)

    # -- options ------------------------------------------------------------

    def build_options(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        parts: tuple[Any, ...],
        key_hash: str | None = None,
    ) -> QueryOptions[Any]:
        """Return new options for a call whose key parts are ``parts``; ``key_hash``, if
        given, is the hash memoized for equal arguments of the same types.

        Raises:
            InvalidKeyError: a part cannot be part of a key.
        """
        query_key = (*self.namespace_key, *parts)
        if key_hash is not None and all(type(part) in _AS_IS for part in parts):
            # Such parts are their own canonical form (canonical_key returns the key
            # itself), and equal ones hash alike: the memo's hash is this key's.
            key = query_key
        else:
            key, key_hash = canonical_key(query_key)
        if not kwargs and self.positional is not None:
            by_key = self.by_key_template
            arity = len(self.template.signature.parameters)
            if by_key is not None and key is query_key and len(args) == arity:
                assert self.from_key is not None
                return by_key.build(query_key, key, key_hash, self.from_key)
            query_fn = types.MethodType(self.call_with, args)
            return self.positional.build(query_key, key, key_hash, query_fn)
        query_fn = types.MethodType(self.call_with_keywords, (args, kwargs))
        settled = self._settled if self.metrics else None
        return self.keywords.build(query_key, key, key_hash, query_fn, settled)

    def parts(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The key parts of a call (:meth:`KeyTemplate.parts`; a call passing every plain
        parameter by position, as the exact wrapper does, without binding the signature).

        Raises:
            TypeError: the arguments do not fit the function's signature.
            Exception: whatever a callable key raises.
        """
        positions = self.positions
        if kwargs or positions is None or len(args) != len(self.template.signature.parameters):
            return self.template.parts(args, kwargs)
        text = self.template.text
        values = [args[i] for i in positions]
        return (*values,) if text is None else (text, *values)

    def _built_for(
        self, options: QueryOptions[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bool:
        """Whether ``options``, of a key these arguments map to, fit the call: its query_fn
        reads the arguments back from the key, or holds arguments equal to these."""
        fn = options.query_fn
        if fn is self.from_key:
            return True
        if fn.__class__ is not types.MethodType:
            return False
        held: Any = fn.__self__
        bound: Any = args
        held_args: tuple[Any, ...] = held
        held_kwargs: dict[str, Any] = {}
        if self.positional is None or kwargs:
            if fn.__func__ is not self.call_with_keywords:
                return False
            bound = (args, kwargs)
            held_args, held_kwargs = held
        elif fn.__func__ is not self.call_with:
            return False
        try:
            # Types too: f(4, 1) and f(4, True) share a key that leaves the 1 out.
            same = held == bound
            return bool(same) and arg_types(held_args, held_kwargs) == arg_types(args, kwargs)
        except Exception:  # an argument whose __eq__ fails: build new options
            return False

    def options_for(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        client: QueryClient | None = None,
    ) -> QueryOptions[Any]:
        """Return the options of a call: the ones built last for its key if they fit it,
        else new ones (its key hash memoized; ``client``'s table says which memos to drop
        when the memo is full).

        Raises:
            TypeError: the arguments do not fit the function.
            InvalidKeyError: an argument cannot be part of a key.
        """
        if self.static is not None:
            if args or kwargs:
                self.template.signature.bind(*args, **kwargs)  # raises the TypeError
            return self.static
        if self.template.is_callable:
            return self._options_by_key(args, kwargs)
        memo, shape = self._memo_of(args, kwargs)
        try:
            found = memo.get(shape)
        except TypeError:  # an unhashable argument (a dict): valid in a key, not memoized
            return self.build_options(args, kwargs, self.parts(args, kwargs))
        recent = self.recent
        if found is not None and (key_hash := fitting(found, args, kwargs)) is not None:
            last = recent.get(key_hash)
            if last is not None and self._built_for(last, args, kwargs):
                return last
            options = self.build_options(args, kwargs, self.parts(args, kwargs), key_hash)
        else:
            options = self.build_options(args, kwargs, self.parts(args, kwargs))
            _remember(memo, shape, options.key_hash, args, kwargs, client)
        if len(recent) >= RECENT_SIZE:
            recent.pop(next(iter(recent)), None)
        recent[options.key_hash] = options
        return options

    def memoized_hash(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """The key hash memoized for a call's arguments, if any (a static key's, always)."""
        if self.static is not None:
            return None if args or kwargs else self.static.key_hash
        if self.template.is_callable:
            return None
        memo, shape = self._memo_of(args, kwargs)
        try:
            found = memo.get(shape)
        except TypeError:
            return None
        return fitting(found, args, kwargs) if found is not None else None

    def _memo_of(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[dict[Any, Memo], Any]:
        """The memo a call's shape is kept in, and the shape (its key there)."""
        if not kwargs:
            return self.by_args, args[0] if self.single and len(args) == 1 else args
        if args:
            return self.by_kwargs, (args, tuple(kwargs.items()))
        return self.by_keywords, tuple(kwargs.items())

    def _options_by_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> QueryOptions[Any]:
        return self.options_for_key(args, kwargs, self.parts(args, kwargs)[0])

    def options_for_key(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], key: Any
    ) -> QueryOptions[Any]:
        """Return new options for a call whose callable key returned ``key``, its hash memoized.

        Built again on every call that is not a fresh hit: the options carry
        the call's arguments, and equal keys may come from different arguments.
        """
        options = self.build_options(args, kwargs, (key,))
        with contextlib.suppress(TypeError):  # unhashable: build_options refused it already
            _remember(self.by_key, key, options.key_hash, (key,), {}, None)
        return options

    def memo_for_key(self, key: Any) -> str | None:
        """Return the key hash memoized for a callable key's result ``key``, if any."""
        try:
            found = self.by_key.get(key)
        except TypeError:
            return None
        if found is None:
            return None
        if type(found) is TypedMemo and found.kind == ONE_POSITIONAL and type(key) is found.cls:
            return found.key_hash
        return fitting(found, (key,), {})

    # -- calls ----------------------------------------------------------------

    async def call(
        self, client: QueryClient | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Everything but a fresh hit found by the wrapper."""
        if client is None:
            options = self.options_for(args, kwargs)  # a bad call raises before a client opens
            client = await self.choice.open()
        else:
            options = self.options_for(args, kwargs, client)
        return await fetch(client, options)

    async def call_with_key(
        self, client: QueryClient | None, args: tuple[Any, ...], kwargs: dict[str, Any], key: Any
    ) -> Any:
        """Everything but a fresh hit, for a callable key that returned ``key``."""
        options = self.options_for_key(args, kwargs, key)
        if client is None:
            client = await self.choice.open()
        return await fetch(client, options)

    async def call_measured(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call with metrics: every outcome recorded."""
        metrics = self.metrics
        assert metrics is not None
        name = self.name
        start = trio.current_time()
        try:
            client = self.resolve()
            if client is None:
                client = await self.choice.open()
            key_hash = self.memoized_hash(args, kwargs)
            if key_hash is not None:
                snap = client.snapshots.get(key_hash)
                if snap is not None and snap.fresh_for is self.stale_time:
                    metrics.record_hit(name)
                    return snap.data
            options = self.options_for(args, kwargs, client)
            snap = client.snapshots.get(options.key_hash)
            if snap is not None and snap.fresh_for is options.stale_time:
                metrics.record_hit(name)
                return snap.data
            self._record_read(client, snap, options)
            value = await fetch(client, options)
            record_stale_if_error(metrics, name, client, options)
            return value
        finally:
            metrics.record_latency(name, "get", trio.current_time() - start)

    def _record_read(
        self, client: QueryClient, snap: Snapshot | None, options: QueryOptions[Any]
    ) -> None:
        metrics = self.metrics
        assert metrics is not None
        if snap is not None and snap.has_data and not client.cache.too_old(snap, options):
            metrics.record_stale_hit(self.name)
            self.refresh_started.setdefault(options.key_hash, trio.current_time())
            return
        metrics.record_miss(self.name)
        if client.is_fetching(options.query_key, exact=True):
            metrics.record_dedup_join(self.name)

    def _settled(self, key_hash: str, _data: Any, error: BaseException | None) -> None:
        started = self.refresh_started.pop(key_hash, None)
        if started is not None and self.metrics is not None:
            duration = trio.current_time() - started
            self.metrics.record_background_refresh(self.name, error is None, duration)

    # -- invalidate / clear ---------------------------------------------------------

    async def invalidate(self, *args: Any, **kwargs: Any) -> None:
        """Remove the entry these arguments map to, from L1 and from the store.

        A call waiting on that entry's fetch in flight starts a new fetch.
        Returns once the store's delete landed, or after the client's
        ``l2_timeout`` (the delete is retried in the background then).

        Raises:
            TypeError: the arguments do not fit the function.
            InvalidKeyError: an argument cannot be part of a key.
        """
        parts = self.parts(args, kwargs)
        query_key, key_hash = canonical_key((*self.namespace_key, *parts))
        client = await self.choice.open()
        await client.remove_queries(query_key, exact=True)
        l2 = client.l2
        if l2 is not None:
            l2.delete_soon(key_hash)
            await _l2_settled(client)
        if self.metrics is not None:
            self.metrics.record_delete(self.name)

    async def clear(self) -> None:
        """Remove every entry of this function (and no other's), from L1 and from the store.

        Raises:
            StorageUnsupportedError: the store has no ``delete_prefix``.
            StorageError: the store failed (L1 is cleared already).
        """
        client = await self.choice.open()
        await client.remove_queries(self.namespace_key)
        self.by_args.clear()
        self.by_kwargs.clear()
        self.by_keywords.clear()
        self.by_key.clear()
        self.recent.clear()
        l2 = client.l2
        if l2 is not None:
            await _l2_settled(client)  # the deletes remove_queries queued go first
            # `,` ends the namespace: ("fn", "m.f") must not match ("fn", "m.f2").
            prefix = l2.key_prefix + prefix_hash(self.namespace_key) + ","
            await ops.delete_prefix(l2.store, prefix)
        if self.metrics is not None:
            self.metrics.record_delete(self.name)


def _remember(
    memo: dict[Any, Memo],
    shape: Any,
    key_hash: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    client: QueryClient | None,
) -> None:
    """Memoize ``key_hash`` for the call shape, keeping the memos of equal arguments of
    other types (``f(True)`` beside ``f(1)``) chained behind it.

    Raises:
        TypeError: ``shape`` is not hashable.
    """
    others = []
    head = memo.get(shape)
    found = head if type(head) is TypedMemo else None
    while found is not None:
        if found.check is not None and not found.check(args, kwargs):
            others.append(found)
        found = found.other
    chain = None
    for other in reversed(others):
        chain = attrs.evolve(other, other=chain)
    if shape not in memo and len(memo) >= MEMO_SIZE:
        _make_room(memo, client)
    memo[shape] = _memo(key_hash, args, kwargs, chain)


def _make_room(memo: dict[Any, Memo], client: QueryClient | None) -> None:
    """Drop the memos of keys no longer in ``client``'s L1 table (removed, collected), then
    the oldest, down to three quarters of :data:`MEMO_SIZE`: a sweep per quarter of new
    call shapes at most."""
    # Copies taken in one C call and pops that tolerate a missing shape: the function may
    # be called from several trio runs' threads at once.
    if client is not None:
        table = client.snapshots
        for shape, found in list(memo.items()):
            if (found if type(found) is str else found.key_hash) not in table:  # type: ignore[union-attr]
                memo.pop(shape, None)
    excess = len(memo) - MEMO_SIZE * 3 // 4
    if excess > 0:
        for shape in list(itertools.islice(memo, excess)):
            memo.pop(shape, None)
    # Filled again: a dict keeps the room of what was popped until an insert finds it full,
    # then grows to fit three times what it holds, so that this memo would settle in a
    # table of twice the slots its entries need.  Refilled from empty it fits them in the
    # table of MEMO_SIZE's docstring: in place, as the wrappers hold this dict.
    kept = list(memo.items())
    memo.clear()
    memo.update(kept)


async def fetch(client: QueryClient, options: QueryOptions[Any]) -> Any:
    """Fetch ``options``' query for a decorated function's caller; fetch again after a removal.

    ``invalidate()`` or ``clear()`` removing the key while this call waits on
    its fetch fails that fetch with ``QueryCancelledError``: the caller wants
    a value fetched after that, so this fetches again, as often as the key is
    removed (each round waits on a fetch that started after a removal, so it
    goes round once per removal, never on its own).  Cancelled, the caller
    stops waiting; the fetch goes on for the others.

    Raises:
        Exception: the fetch's error (``fetch_query``'s), ``ClientClosedError``
            once the client closed.
    """
    while True:
        try:
            return await client.fetch_query(options)
        except QueryCancelledError:
            continue


async def _l2_settled(client: QueryClient) -> None:
    """Wait (up to ``l2_timeout``) until the client's queued L2 writes and deletes landed."""
    l2 = client.l2
    assert l2 is not None
    with trio.move_on_after(client.config.l2_timeout):
        await l2.wait_drained()
