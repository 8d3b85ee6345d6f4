"""The ``QueryOptions`` of a decorated function's calls, built from one validated template.

A ``@cache`` function's calls differ only in their key and their
``query_fn`` (one shared function reading the arguments back from the key,
or one bound to the call's arguments); every other option is the
function's.  Building ``QueryOptions`` the usual way validates all of them
again and inspects the ``query_fn``'s signature: about 17 µs on a quiet
machine.  So the function validates one template per kind of ``query_fn``
when it is decorated, and a call's options are a copy of it with the
call's key, canonical key and hash, ``query_fn`` and ``on_settled`` put in
(about 2 µs, plus the key's canonical form).  Options are built on a call
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


def _make_copier(template: QueryOptions[Any]) -> Callable[..., QueryOptions[Any]]:
    """Build ``copy(query_key, query_fn, key, key_hash, on_settled)``: new options holding
    ``template``'s settings and these per-call fields, every field set by its slot's own
    descriptor in straight-line code (no loop; about half the time of one)."""
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": QueryOptions}
    lines = [
        "def copy(query_key, query_fn, key, key_hash, on_settled):",
        "    options = _new(_cls)",
    ]
    names: list[str] = [field.name for field in attrs.fields(QueryOptions)]
    for i, name in enumerate(names):
        # The slot's descriptor: QueryOptions is frozen, and this is how its own
        # __attrs_post_init__ sets the fields it derives, without its __setattr__.
        namespace[f"_set{i}"] = getattr(QueryOptions, name).__set__
        if name in _PER_CALL:
            value = "None" if name == "defaults_memo" else name
        else:
            namespace[f"_value{i}"] = getattr(template, name)
            value = f"_value{i}"
        lines.append(f"    _set{i}(options, {value})")
    lines.append("    return options")
    exec("\n".join(lines), namespace)
    copy: Callable[..., QueryOptions[Any]] = namespace["copy"]
    return copy


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
    _copy: Callable[..., QueryOptions[Any]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_copy", _make_copier(self.template))

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
        on_settled = None if settled is None else functools.partial(settled, key_hash)
        return self._copy(query_key, query_fn, key, key_hash, on_settled)
