"""The ``QueryOptions`` of a decorated function's calls, built from one validated template.

A ``@cache`` function's calls differ only in their key and their
``query_fn`` (one shared function reading the arguments back from the key,
or one bound to the call's arguments); every other option is the
function's.  Building ``QueryOptions`` the usual way validates all of them
again and inspects the ``query_fn``'s signature: about 17 µs on a quiet
machine.  So the function validates one template per kind of ``query_fn``
when it is decorated, and a call's options are a copy of it with the
call's key, canonical key and hash, ``query_fn`` and ``on_settled`` put in
(about 2 µs, plus the key's canonical form): a loop setting each slot,
with no validation and no ``__attrs_post_init__``.  Options are built on a call
that is not a fresh hit only (the memo of calls keeps key hashes, not
options), so this is part of what a miss costs.
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


def _setter(name: str) -> Callable[[QueryOptions[Any], Any], None]:
    # The slot's descriptor: QueryOptions is frozen, and this is how its own
    # __attrs_post_init__ sets the fields it derives, without its __setattr__.
    setter: Callable[[QueryOptions[Any], Any], None] = getattr(QueryOptions, name).__set__
    return setter


_SET_QUERY_KEY, _SET_QUERY_FN, _SET_KEY, _SET_KEY_HASH, _SET_ON_SETTLED, _SET_DEFAULTS_MEMO = (
    _setter(name) for name in _PER_CALL
)


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
    _settings: tuple[tuple[Callable[[QueryOptions[Any], Any], None], object], ...] = attrs.field(
        init=False
    )
    """Each field the calls take from the template: its slot's setter and the value."""

    def __attrs_post_init__(self) -> None:
        settings = tuple(
            (_setter(field.name), getattr(self.template, field.name))
            for field in attrs.fields(QueryOptions)
            if field.name not in _PER_CALL
        )
        object.__setattr__(self, "_settings", settings)

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
        # A loop of slot setters: about 10% more than the same sets written out, and a
        # tenth of validating new options (attrs.evolve).
        for set_field, value in self._settings:
            set_field(options, value)
        _SET_QUERY_KEY(options, query_key)
        _SET_QUERY_FN(options, query_fn)
        _SET_KEY(options, key)
        _SET_KEY_HASH(options, key_hash)
        _SET_ON_SETTLED(options, None if settled is None else functools.partial(settled, key_hash))
        _SET_DEFAULTS_MEMO(options, None)
        return options
