"""stackquery: an actor-based concurrent cache runtime for trio."""

from typing import TYPE_CHECKING, Any

from actors import RestartIntensity
from backends import MemoryStorage, StorageBackend, StorageTLSError

from . import serializers
from ._circuit import CircuitBreaker, CircuitOpenError, CircuitState, CircuitStatistics
from ._client import ClientStatistics, QueryClient, QueryRecord, current_client, open_query_client
from ._entry import (
    MAX_CLOCK_SKEW,
    CorruptEntryError,
    StoredEntry,
    pack_entry,
    try_unpack_entry,
    unpack_entry,
)
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
from ._mutation import Mutation, MutationOptions, MutationState, MutationStatus
from ._observer import QueryObserver
from ._option_checks import UNSET
from ._options import QueryClientConfig, QueryOptions
from ._query_context import NOT_MODIFIED, NotModifiedWithoutDataError, QueryContext
from ._retry import default_retry_delay
from ._state import FetchStatus, QueryState, QueryStatus
from .decorators._batch import BatchedFunction, BatchStatistics, MissingIdError, cache
from .decorators._bg import BgDecorator, bg
from .decorators._bg_function import BackgroundFunction, BgKeyConflictError
from .decorators._bg_reader import MissingValueError
from .decorators._cache import CachedFunction
from .decorators._key_template import KeyTemplateError
from .fleet._counters import FleetStatistics
from .metrics._collector import InMemoryMetrics, MetricsCollector
from .serializers._core import DeserializationError, SerializationError, Serializer, SignatureError

__all__ = [
    "MAX_CLOCK_SKEW",
    "NOT_MODIFIED",
    "UNSET",
    "BackgroundFunction",
    "BatchStatistics",
    "BatchedFunction",
    "BgDecorator",
    "BgKeyConflictError",
    "CacheEvent",
    "CacheEventType",
    "CachedFunction",
    "ChainStorage",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "CircuitStatistics",
    "ClientClosedError",
    "ClientStatistics",
    "CorruptEntryError",
    "DeserializationError",
    "EventStream",
    "FetchStatus",
    "FileStorage",
    "FleetStatistics",
    "GCSStorage",
    "InMemoryMetrics",
    "InstrumentedStorage",
    "InvalidKeyError",
    "InvalidOptionError",
    "KeyTemplateError",
    "L2Statistics",
    "MemoryStorage",
    "MetricsCollector",
    "MissingIdError",
    "MissingValueError",
    "Mutation",
    "MutationOptions",
    "MutationState",
    "MutationStatus",
    "NotModifiedWithoutDataError",
    "OpenTelemetryMetrics",
    "PrometheusMetrics",
    "QueryCancelledError",
    "QueryClient",
    "QueryClientConfig",
    "QueryContext",
    "QueryKey",
    "QueryObserver",
    "QueryOptions",
    "QueryRecord",
    "QueryState",
    "QueryStatus",
    "QueryTimeoutError",
    "RedisCommandRefusedError",
    "RedisStorage",
    "RestartIntensity",
    "S3Storage",
    "SQLiteStorage",
    "SerializationError",
    "Serializer",
    "SignatureError",
    "StackqueryError",
    "StorageBackend",
    "StorageError",
    "StorageTLSError",
    "StorageUnavailableError",
    "StoredEntry",
    "bg",
    "cache",
    "current_client",
    "default_retry_delay",
    "open_query_client",
    "pack_entry",
    "serializers",
    "try_unpack_entry",
    "unpack_entry",
]

if TYPE_CHECKING:
    from backends import (
        ChainStorage,
        FileStorage,
        GCSStorage,
        InstrumentedStorage,
        RedisCommandRefusedError,
        RedisStorage,
        S3Storage,
        SQLiteStorage,
    )

    from .metrics._export import OpenTelemetryMetrics, PrometheusMetrics

_LAZY = {
    "OpenTelemetryMetrics": ".metrics._export",
    "PrometheusMetrics": ".metrics._export",
}
"""Imported when first named (PEP 562): what a hot start does not need."""

_FROM_BACKENDS = frozenset(
    (
        "ChainStorage",
        "FileStorage",
        "GCSStorage",
        "InstrumentedStorage",
        "RedisCommandRefusedError",
        "RedisStorage",
        "S3Storage",
        "SQLiteStorage",
    )
)
"""Re-exported from ``backends`` when first named (they are imported lazily there)."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _FROM_BACKENDS:
        import backends

        value = getattr(backends, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_FROM_BACKENDS})
