"""A byte store on Amazon S3 (or any S3-compatible service) through boto3."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, final

from ._errors import StorageError
from ._extras import import_extra, optional_error_types
from ._object_store import ObjectStore

_DELETE_BATCH = 1000
"""The most keys one DeleteObjects request may name."""

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


@final
class S3Storage(ObjectStore):
    """One S3 object per key, named ``prefix + key``, in ``bucket``.

    Needs ``boto3`` (``pip install 'stackquery[s3]'``), imported only when no
    ``client`` is given.  An object name must be 1 to 1024 bytes of UTF-8, so
    a key that makes a longer (or empty) name fails with ``StorageError``.
    TTLs are object metadata enforced on read, on wall-clock time (see
    ``ObjectStore`` for expiry, threads and cancellation).

    Args:
        bucket: the bucket name; the bucket must exist.
        prefix: text put before every key (e.g. ``"cache/"``).
        client: a boto3 S3 client; default: ``boto3.client("s3")``, made now
            from the environment's configuration and closed by :meth:`aclose`.
            A client passed in is left open.
        clock: wall-clock seconds since the epoch; tests inject their own.
        max_concurrency: the most SDK calls in flight at once.

    Raises:
        ImportError: no ``client`` was given and boto3 is not installed.
        TypeError: ``bucket`` or ``prefix`` is not a ``str``.
        ValueError: ``bucket`` is empty.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_concurrency: int = 16,
    ) -> None:
        super().__init__(
            bucket=bucket,
            prefix=prefix,
            clock=clock,
            max_concurrency=max_concurrency,
            unavailable=optional_error_types(
                "botocore.exceptions",
                "ConnectionError",
                "ConnectionClosedError",
                "ReadTimeoutError",
            ),
        )
        self._owns_client = client is None
        if client is None:
            # Made here, on the caller's thread: boto3's default session is not thread-safe.
            client = import_extra("boto3", extra="s3", backend="S3Storage").client("s3")
        self._client = client
        self._bucket = bucket

    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self._bucket

    def _fetch_sync(self, name: str) -> tuple[bytes, Mapping[str, str]] | None:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=name)
        except Exception as exc:
            if _error_code(exc) in _MISSING_CODES:
                return None
            raise
        body = response["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        metadata: Mapping[str, str] = response.get("Metadata") or {}
        return data, metadata

    def _store_sync(self, name: str, data: bytes, metadata: dict[str, str]) -> None:
        self._client.put_object(Bucket=self._bucket, Key=name, Body=data, Metadata=metadata)

    def _remove_sync(self, name: str) -> None:
        self._client.delete_object(Bucket=self._bucket, Key=name)

    def _remove_prefix_sync(self, prefix: str) -> int:
        names: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
            names.extend(item["Key"] for item in page.get("Contents", ()))
        removed = 0
        for start in range(0, len(names), _DELETE_BATCH):
            batch = names[start : start + _DELETE_BATCH]
            response = self._client.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": name} for name in batch], "Quiet": True},
            )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError(
                    f"S3Storage could not delete {len(errors)} of {len(batch)} objects, "
                    f"first {first.get('Key')!r}: {first.get('Code')} {first.get('Message')}",
                    backend="S3Storage",
                    operation="delete_prefix",
                )
            removed += len(batch)
        return removed

    def _close_sync(self) -> None:
        if self._owns_client:
            self._client.close()


def _error_code(exc: Exception) -> str | None:
    """Return the service's error code of a botocore ``ClientError`` (else ``None``)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return None if code is None else str(code)
