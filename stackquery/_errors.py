"""The stackquery exception hierarchy, grouped by meaning."""

from __future__ import annotations

from backends import StorageError, StorageUnavailableError


class StackqueryError(Exception):
    """Base class of the errors stackquery raises itself."""


class InvalidKeyError(StackqueryError, TypeError):
    """A query key (or a key template's result) is not a valid key.

    Keys are tuples of ``str``, ``int``, ``float`` (finite), ``bool``, ``None``,
    nested tuples of those, and dicts with ``str`` keys of those.
    """


class InvalidOptionError(StackqueryError, ValueError):
    """An option has a value outside what it accepts (a negative time ...)."""


class QueryCancelledError(StackqueryError):
    """The fetch this caller waited on was cancelled.

    Raised to callers of ``fetch_query`` waiting on a fetch that
    ``cancel_queries`` or ``remove_queries`` cancelled.  It is an ordinary
    ``Exception``, not ``trio.Cancelled``: the caller's own scope was not
    cancelled.
    """


class QueryTimeoutError(StackqueryError, TimeoutError):
    """One attempt of ``query_fn`` ran past the query's ``timeout``."""


class ClientClosedError(StackqueryError, RuntimeError):
    """The query client was used outside its ``async with`` block."""


__all__ = [
    "ClientClosedError",
    "InvalidKeyError",
    "InvalidOptionError",
    "QueryCancelledError",
    "QueryTimeoutError",
    "StackqueryError",
    "StorageError",
    "StorageUnavailableError",
]
