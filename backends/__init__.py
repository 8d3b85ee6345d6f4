"""L2 byte stores for stackquery: the storage protocol and its implementations.

This package knows nothing about queries or actors.  Every store maps ``str``
keys to ``bytes`` values with an optional TTL in seconds; :mod:`backends.ops`
calls any store uniformly, whichever optional operations it has.
"""

from . import _ops as ops
from ._chain import ChainStorage
from ._cluster_slots import CrossSlotError
from ._errors import (
    StorageClosedError,
    StorageError,
    StorageTLSError,
    StorageUnavailableError,
    StorageUnsupportedError,
    map_storage_errors,
)
from ._file import FileStorage
from ._gcs import GCSStorage
from ._instrumented import InstrumentedStorage
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
from ._s3 import S3Storage
from ._sqlite import SQLiteStorage

__all__ = [
    "BatchStorageBackend",
    "ChainStorage",
    "CrossSlotError",
    "FileStorage",
    "GCSStorage",
    "InstrumentedStorage",
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
    "StorageBackend",
    "StorageClosedError",
    "StorageError",
    "StorageMetrics",
    "StorageTLSError",
    "StorageUnavailableError",
    "StorageUnsupportedError",
    "Subscription",
    "TTLStorageBackend",
    "map_storage_errors",
    "ops",
    "redis_client_from_url",
    "scan_names",
]
