"""A byte store on Google Cloud Storage through google-cloud-storage."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, final

from ._extras import import_extra, optional_error_types
from ._object_store import ObjectStore

_NOT_FOUND = 404
_PRECONDITION_FAILED = 412


@final
class GCSStorage(ObjectStore):
    """One GCS object per key, named ``prefix + key``, in ``bucket``.

    Needs ``google-cloud-storage`` (``pip install 'stackquery[gcs]'``),
    imported only when no ``client`` is given.  A read fetches the object's
    metadata, then its data pinned to that generation, so the data and the
    expiry always belong together; an object replaced or deleted between the
    two is a miss.  TTLs are object metadata enforced on read, on wall-clock
    time (see ``ObjectStore`` for expiry, threads and cancellation).

    Args:
        bucket: the bucket name; the bucket must exist.
        prefix: text put before every key (e.g. ``"cache/"``).
        client: a ``google.cloud.storage.Client``; default: one made now from
            the environment's credentials and closed by :meth:`aclose`.  A
            client passed in is left open.
        clock: wall-clock seconds since the epoch; tests inject their own.
        max_concurrency: the most SDK calls in flight at once.

    Raises:
        ImportError: no ``client`` was given and google-cloud-storage is not installed.
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
            unavailable=(
                *optional_error_types("requests.exceptions", "ConnectionError", "Timeout"),
                *optional_error_types("google.api_core.exceptions", "ServiceUnavailable"),
            ),
        )
        self._owns_client = client is None
        if client is None:
            storage = import_extra("google.cloud.storage", extra="gcs", backend="GCSStorage")
            client = storage.Client()
        self._client = client
        self._bucket = client.bucket(bucket)
        self._bucket_name = bucket

    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self._bucket_name

    def _fetch_sync(self, name: str) -> tuple[bytes, Mapping[str, str]] | None:
        blob = self._bucket.get_blob(name)
        if blob is None:
            return None
        try:
            data: bytes = blob.download_as_bytes(if_generation_match=blob.generation)
        except Exception as exc:
            if _status_code(exc) in (_NOT_FOUND, _PRECONDITION_FAILED):
                return None
            raise
        metadata: Mapping[str, str] = blob.metadata or {}
        return data, metadata

    def _store_sync(self, name: str, data: bytes, metadata: dict[str, str]) -> None:
        # A fresh blob handle has no properties, and an upload makes a new generation
        # with exactly the metadata set here: none is inherited from the old object.
        blob = self._bucket.blob(name)
        if metadata:
            blob.metadata = metadata
        blob.upload_from_string(data, content_type="application/octet-stream")

    def _remove_sync(self, name: str) -> None:
        try:
            self._bucket.delete_blob(name)
        except Exception as exc:
            if _status_code(exc) != _NOT_FOUND:
                raise

    def _remove_prefix_sync(self, prefix: str) -> int:
        removed = 0
        for blob in list(self._bucket.list_blobs(prefix=prefix)):
            try:
                self._bucket.delete_blob(blob.name)
            except Exception as exc:
                if _status_code(exc) != _NOT_FOUND:
                    raise
                continue
            removed += 1
        return removed

    def _close_sync(self) -> None:
        if self._owns_client:
            self._client.close()


def _status_code(exc: Exception) -> int | None:
    """Return the HTTP status of a ``google.api_core`` error (else ``None``)."""
    code = getattr(exc, "code", None)
    return int(code) if isinstance(code, int) else None
