"""The ``QueryOptions`` of a decorated function's calls, built from one validated template.

A ``@cache`` function's calls differ only in their key and in the
arguments their ``query_fn`` is bound to; every other option is the
function's.  Building ``QueryOptions`` the usual way validates all of them
again and inspects the ``query_fn``'s signature: about 17 µs.  So the
function validates one template when it is decorated, and a call's options
are a copy of it with the call's key, canonical key and hash, ``query_fn``
and ``on_settled`` put in: about a quarter of that.  Options are built on
a call that is not a fresh hit only (the memo of calls keeps key hashes, not
options), so this is what a miss costs on top of the client's work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, final

import attrs

from .._keys import QueryKey
from .._options import QueryOptions

_PER_CALL = ("query_key", "query_fn", "key", "key_hash", "on_settled", "defaults_memo")
"""The fields a call's options do not take from the template (``defaults_memo``, the
client's memo of the options with query defaults, starts empty as in any new options)."""

Setter = Callable[[Any, Any], None]


def _setter(name: str) -> Setter:
    # The slot's own descriptor: QueryOptions is frozen, and this is how its
    # __attrs_post_init__ sets the fields it derives, without its __setattr__.
    setter: Setter = getattr(QueryOptions, name).__set__
    return setter


@final
@attrs.frozen
class OptionsTemplate:
    """Makes the options of a decorated function's calls from ``template``.

    Every ``query_fn`` given to :meth:`build` must be of the template's kind
    (a bound method of the same function): ``is_async`` and ``takes_context``,
    derived from it, are taken from the template.
    """

    template: QueryOptions[Any]
    """Validated options with every setting of the function (its key: the namespace)."""
    _shared: tuple[tuple[Setter, Any], ...] = attrs.field(init=False)
    _per_call: tuple[Setter, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        names = [field.name for field in attrs.fields(QueryOptions)]
        shared = tuple(
            (_setter(name), getattr(self.template, name)) for name in names if name not in _PER_CALL
        )
        object.__setattr__(self, "_shared", shared)
        object.__setattr__(self, "_per_call", tuple(_setter(name) for name in _PER_CALL))

    def build(
        self,
        query_key: QueryKey,
        key: QueryKey,
        key_hash: str,
        query_fn: Callable[..., Any],
        settled: Callable[[str, Any, BaseException | None], object] | None = None,
    ) -> QueryOptions[Any]:
        """Return the template's options with ``query_key`` (whose ``canonical_key`` is
        ``key, key_hash``) and ``query_fn``; ``on_settled`` is ``settled`` given the key
        hash first (``None``: none)."""
        options: QueryOptions[Any] = object.__new__(QueryOptions)
        for set_field, value in self._shared:
            set_field(options, value)
        set_query_key, set_query_fn, set_key, set_key_hash, set_on_settled, set_memo = (
            self._per_call
        )
        set_query_key(options, query_key)
        set_query_fn(options, query_fn)
        set_key(options, key)
        set_key_hash(options, key_hash)
        set_on_settled(options, None if settled is None else functools.partial(settled, key_hash))
        set_memo(options, None)
        return options
