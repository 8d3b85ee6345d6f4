"""QueryContext and NOT_MODIFIED: what a ``query_fn`` may be told, and what it may answer.

A ``query_fn`` that takes one parameter gets a :class:`QueryContext`: its
key, its ``meta``, the data the key holds and when that was fetched, and the
attempt number.  It may answer :data:`NOT_MODIFIED` (an HTTP 304 to an
``If-None-Match``): the key keeps its data, which counts as fetched now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Generic, TypeVar, final

import attrs

from ._errors import StackqueryError
from ._keys import QueryKey

T = TypeVar("T")


@final
class _NotModified:
    """The type of :data:`NOT_MODIFIED` (one instance)."""

    _instance: _NotModified | None = None

    def __new__(cls) -> _NotModified:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_MODIFIED"

    def __reduce__(self) -> str:
        return "NOT_MODIFIED"


NOT_MODIFIED: Final = _NotModified()
"""Returned by a ``query_fn``: the key's data is still current (keep it, fresh as of now)."""


class NotModifiedWithoutDataError(StackqueryError, LookupError):
    """A ``query_fn`` returned ``NOT_MODIFIED`` for a key that holds no data to keep."""


@attrs.frozen
class QueryContext(Generic[T]):
    """What a ``query_fn`` with one parameter is called with, once per attempt."""

    key: QueryKey
    """The query's canonical key."""
    meta: Mapping[str, Any]
    """The query's ``QueryOptions.meta`` (free-form; empty unless given)."""
    previous_data: T | None
    """The data the key holds when the attempt starts (``None`` without data: see
    :attr:`has_previous_data`)."""
    data_updated_at: float | None
    """Wall time (client clock) ``previous_data`` was fetched or set; ``None``: no data."""
    attempt: int
    """1 for the fetch's first call of ``query_fn``, 2 for its first retry ..."""

    @property
    def has_previous_data(self) -> bool:
        """Whether the key holds data (``previous_data`` may be ``None`` as a value)."""
        return self.data_updated_at is not None


def not_modified_error(key: QueryKey) -> NotModifiedWithoutDataError:
    """The error of a fetch whose ``query_fn`` answered NOT_MODIFIED with no data to keep."""
    return NotModifiedWithoutDataError(
        f"query {key!r}: query_fn returned NOT_MODIFIED but the key holds no data to keep; "
        "return NOT_MODIFIED only when ctx.has_previous_data"
    )


__all__ = [
    "NOT_MODIFIED",
    "NotModifiedWithoutDataError",
    "QueryContext",
    "not_modified_error",
]
