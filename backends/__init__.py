"""L2 byte stores for stackquery: the storage protocol and its implementations.

This package knows nothing about queries or actors.  Every store maps ``str``
keys to ``bytes`` values with an optional TTL in seconds; :mod:`backends.ops`
calls any store uniformly, whichever optional operations it has.
"""

from typing import TYPE_CHECKING, Any

from . import _ops as ops
from ._cluster_slots import CrossSlotError
from ._errors import (
    StorageClosedError,
    StorageError,
    StorageTLSError,
    StorageUnavailableError,
    StorageUnsupportedError,
    map_storage_errors,
)
from ._memory import MemoryStorage, MemoryStorageStatistics
from ._metrics_protocol import StorageMetrics
from ._protocol import BatchStorageBackend, StorageBackend, TTLStorageBackend
from ._redis import RedisStorage
from ._redis_address import RedisAddress
from ._redis_client import (
    RedisClient,
    RedisClientStatistics,
    RedisCommandRefusedError,
    RedisReplyError,
    Subscription,
)
from ._redis_cluster import (
    RedisClusterClient,
    RedisClusterStatistics,
    redis_client_from_url,
    scan_names,
)
from ._redis_sentinel import SentinelAddress
from ._redis_tracking import Invalidation, SubscriptionEvents, TrackingRefusedError

if TYPE_CHECKING:
    from ._chain import ChainStorage
    from ._file import FileStorage
    from ._gcs import GCSStorage
    from ._instrumented import InstrumentedStorage
    from ._s3 import S3Storage
    from ._sqlite import SQLiteStorage

_LAZY = {
    "ChainStorage": "._chain",
    "FileStorage": "._file",
    "GCSStorage": "._gcs",
    "InstrumentedStorage": "._instrumented",
    "S3Storage": "._s3",
    "SQLiteStorage": "._sqlite",
}
"""Stores imported when first named, not with the package: ``import stackquery`` need
not pay for sqlite3, the file format, the object stores (PEP 562)."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "BatchStorageBackend",
    "ChainStorage",
    "CrossSlotError",
    "FileStorage",
    "GCSStorage",
    "InstrumentedStorage",
    "Invalidation",
    "MemoryStorage",
    "MemoryStorageStatistics",
    "RedisAddress",
    "RedisClient",
    "RedisClientStatistics",
    "RedisClusterClient",
    "RedisClusterStatistics",
    "RedisCommandRefusedError",
    "RedisReplyError",
    "RedisStorage",
    "S3Storage",
    "SQLiteStorage",
    "SentinelAddress",
    "StorageBackend",
    "StorageClosedError",
    "StorageError",
    "StorageMetrics",
    "StorageTLSError",
    "StorageUnavailableError",
    "StorageUnsupportedError",
    "Subscription",
    "SubscriptionEvents",
    "TTLStorageBackend",
    "TrackingRefusedError",
    "map_storage_errors",
    "ops",
    "redis_client_from_url",
    "scan_names",
]
