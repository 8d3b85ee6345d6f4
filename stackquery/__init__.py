"""stackquery: an actor-based concurrent cache runtime for trio."""

from ._client import ClientStatistics, QueryClient, QueryRecord, current_client, open_query_client
from ._errors import (
    ClientClosedError,
    InvalidKeyError,
    InvalidOptionError,
    QueryCancelledError,
    QueryTimeoutError,
    StackqueryError,
    StorageError,
    StorageUnavailableError,
)
from ._events import CacheEvent, CacheEventType, EventStream
from ._keys import QueryKey
from ._l2 import L2Statistics
from ._observer import QueryObserver
from ._options import UNSET, QueryClientConfig, QueryOptions, default_retry_delay
from ._state import FetchStatus, QueryState, QueryStatus

__all__ = [
    "UNSET",
    "CacheEvent",
    "CacheEventType",
    "ClientClosedError",
    "ClientStatistics",
    "EventStream",
    "FetchStatus",
    "InvalidKeyError",
    "InvalidOptionError",
    "L2Statistics",
    "QueryCancelledError",
    "QueryClient",
    "QueryClientConfig",
    "QueryKey",
    "QueryObserver",
    "QueryOptions",
    "QueryRecord",
    "QueryState",
    "QueryStatus",
    "QueryTimeoutError",
    "StackqueryError",
    "StorageError",
    "StorageUnavailableError",
    "current_client",
    "default_retry_delay",
    "open_query_client",
]
