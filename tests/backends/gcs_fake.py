"""An in-memory stand-in for the part of google-cloud-storage that GCSStorage calls.

Only ``Client.bucket``, ``Client.close``, ``Bucket.blob``, ``Bucket.get_blob``,
``Bucket.delete_blob``, ``Bucket.list_blobs(prefix=)``, ``Blob.metadata``,
``Blob.generation``, ``Blob.upload_from_string`` and
``Blob.download_as_bytes(if_generation_match=)``, with the real library's
semantics for what GCSStorage relies on: a missing object raises an error whose
``code`` is 404, a generation mismatch one whose ``code`` is 412, and an upload
makes a new generation with exactly the metadata set on the blob.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import attrs


class FakeNotFound(Exception):
    """Like ``google.api_core.exceptions.NotFound``."""

    code = 404


class FakePreconditionFailed(Exception):
    """Like ``google.api_core.exceptions.PreconditionFailed``."""

    code = 412


@attrs.frozen
class _StoredObject:
    data: bytes
    metadata: dict[str, str] | None
    generation: int


class FakeBlob:
    """A handle on one object name, like ``google.cloud.storage.Blob``."""

    def __init__(self, bucket: FakeBucket, name: str) -> None:
        self.bucket = bucket
        self.name = name
        self.metadata: dict[str, str] | None = None
        self.generation: int | None = None

    def upload_from_string(self, data: bytes, content_type: str = "text/plain") -> None:
        assert isinstance(data, bytes)
        self.generation = self.bucket.put(self.name, data, self.metadata)

    def download_as_bytes(self, if_generation_match: int | None = None) -> bytes:
        return self.bucket.download(self.name, if_generation_match)


class FakeBucket:
    """A thread-safe dict of objects, like ``google.cloud.storage.Bucket``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.objects: dict[str, _StoredObject] = {}
        self._lock = threading.Lock()
        self._generations = itertools.count(1)

    def blob(self, name: str) -> FakeBlob:
        return FakeBlob(self, name)

    def get_blob(self, name: str) -> FakeBlob | None:
        with self._lock:
            stored = self.objects.get(name)
        return None if stored is None else self._handle(name, stored)

    def delete_blob(self, name: str) -> None:
        with self._lock:
            if self.objects.pop(name, None) is None:
                raise FakeNotFound(f"no object {name!r}")

    def list_blobs(self, prefix: str | None = None) -> Iterator[FakeBlob]:
        with self._lock:
            listed = sorted(
                (name, stored)
                for name, stored in self.objects.items()
                if name.startswith(prefix or "")
            )
        return iter([self._handle(name, stored) for name, stored in listed])

    def put(self, name: str, data: bytes, metadata: dict[str, str] | None) -> int:
        with self._lock:
            generation = next(self._generations)
            self.objects[name] = _StoredObject(
                data, None if metadata is None else dict(metadata), generation
            )
            return generation

    def download(self, name: str, if_generation_match: int | None) -> bytes:
        with self._lock:
            stored = self.objects.get(name)
        if stored is None:
            raise FakeNotFound(f"no object {name!r}")
        if if_generation_match is not None and stored.generation != if_generation_match:
            raise FakePreconditionFailed(f"{name!r} is at generation {stored.generation}")
        return stored.data

    def _handle(self, name: str, stored: _StoredObject) -> FakeBlob:
        blob = FakeBlob(self, name)
        blob.metadata = None if stored.metadata is None else dict(stored.metadata)
        blob.generation = stored.generation
        return blob


class FakeGCSClient:
    """Like ``google.cloud.storage.Client``: ``bucket()`` makes a handle, no request."""

    def __init__(self) -> None:
        self.buckets: dict[str, FakeBucket] = {}
        self.closed = False

    def bucket(self, name: str) -> FakeBucket:
        return self.buckets.setdefault(name, FakeBucket(name))

    def close(self) -> None:
        self.closed = True
