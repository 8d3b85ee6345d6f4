"""L2 byte stores for stackquery: the storage protocol and its implementations.

This package knows nothing about queries or actors.  Every store maps ``str``
keys to ``bytes`` values with an optional TTL in seconds; :mod:`backends.ops`
calls any store uniformly, whichever optional operations it has.
"""

from typing import TYPE_CHECKING, Any

from . import _ops as ops
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

if TYPE_CHECKING:
    from ._chain import ChainStorage
    from ._cluster_slots import CrossSlotError
    from ._file import FileStorage
    from ._gcs import GCSStorage
    from ._instrumented import InstrumentedStorage
    from ._redis import RedisStorage
    from ._redis_address import RedisAddress
    from ._redis_client import (
        RedisClient,
        RedisClientStatistics,
        RedisCommandRefusedError,
        RedisReplyError,
    )
    from ._redis_cluster import (
        RedisClusterClient,
        RedisClusterStatistics,
        redis_client_from_url,
        scan_names,
    )
    from ._redis_sentinel import SentinelAddress
    from ._redis_subscription import Subscription
    from ._redis_tracking import Invalidation, SubscriptionEvents, TrackingRefusedError
    from ._s3 import S3Storage
    from ._sqlite import SQLiteStorage

_LAZY = {
    "ChainStorage": "._chain",
    "FileStorage": "._file",
    "GCSStorage": "._gcs",
    "InstrumentedStorage": "._instrumented",
    "S3Storage": "._s3",
    "SQLiteStorage": "._sqlite",
    "CrossSlotError": "._cluster_slots",
    "RedisStorage": "._redis",
    "RedisAddress": "._redis_address",
    "RedisClient": "._redis_client",
    "RedisClientStatistics": "._redis_client",
    "RedisCommandRefusedError": "._redis_client",
    "RedisReplyError": "._redis_client",
    "Subscription": "._redis_subscription",
    "RedisClusterClient": "._redis_cluster",
    "RedisClusterStatistics": "._redis_cluster",
    "redis_client_from_url": "._redis_cluster",
    "scan_names": "._redis_cluster",
    "SentinelAddress": "._redis_sentinel",
    "Invalidation": "._redis_tracking",
    "SubscriptionEvents": "._redis_tracking",
    "TrackingRefusedError": "._redis_tracking",
}
"""Names imported when first named, not with the package: ``import stackquery`` need
not pay for sqlite3, the file format, the object stores, nor the Redis client, its
protocol parser and hiredis (PEP 562)."""


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
