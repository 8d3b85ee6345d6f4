"""S3Storage (on moto) and GCSStorage (on an in-memory fake): what the suite cannot see."""

from __future__ import annotations

import sys
from typing import Any

import boto3
import pytest
from botocore.config import Config

from backends import GCSStorage, S3Storage, StorageError, StorageUnavailableError
from backends._object_store import EXPIRY_METADATA_KEY
from tests.backends.gcs_fake import FakeBucket, FakeGCSClient
from tests.backends.harness import S3_BUCKET, ManualClock


class TestS3:
    async def test_object_name_and_expiry_metadata(self, moto_s3: Any) -> None:
        """An entry is the object prefix+key, its expiry wall time in metadata."""
        clock = ManualClock(now=1000.0)
        store = S3Storage(S3_BUCKET, prefix="app/", client=moto_s3, clock=clock)
        await store.set("user:1", b"v", ttl=60)
        await store.set("forever", b"w")
        stored = moto_s3.get_object(Bucket=S3_BUCKET, Key="app/user:1")
        assert (stored["Body"].read(), stored["Metadata"]) == (
            b"v",
            {EXPIRY_METADATA_KEY: "1060.0"},
        )
        assert moto_s3.get_object(Bucket=S3_BUCKET, Key="app/forever")["Metadata"] == {}

    async def test_prefixes_keep_stores_apart(self, moto_s3: Any) -> None:
        """Two stores with different prefixes in one bucket do not see each other."""
        first = S3Storage(S3_BUCKET, prefix="one/", client=moto_s3)
        second = S3Storage(S3_BUCKET, prefix="two/", client=moto_s3)
        await first.set("k", b"1")
        assert await second.get("k") is None
        assert await second.delete_prefix("") == 0
        assert await first.get("k") == b"1"

    async def test_delete_prefix_in_batches(
        self, moto_s3: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """delete_prefix deletes in DeleteObjects batches and counts every object."""
        monkeypatch.setattr("backends._s3._DELETE_BATCH", 2)
        store = S3Storage(S3_BUCKET, prefix="p/", client=moto_s3)
        await store.set_many({f"k{index}": b"v" for index in range(5)})
        assert await store.delete_prefix("k") == 5
        assert moto_s3.list_objects_v2(Bucket=S3_BUCKET).get("KeyCount") == 0

    async def test_missing_bucket_is_a_storage_error(self, moto_s3: Any) -> None:
        """A bucket that does not exist fails reads with StorageError, cause chained."""
        store = S3Storage("no-such-bucket", client=moto_s3)
        with pytest.raises(StorageError, match=r"^S3Storage\.get failed: ") as caught:
            await store.get("k")
        assert type(caught.value.__cause__).__name__ == "NoSuchBucket"

    async def test_unreachable_endpoint_is_unavailable(self) -> None:
        """A connection refused is StorageUnavailableError."""
        client = boto3.client(
            "s3",
            endpoint_url="http://127.0.0.1:9",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"max_attempts": 1}, connect_timeout=2),
        )
        store = S3Storage("bucket", client=client)
        with pytest.raises(StorageUnavailableError, match=r"^S3Storage\.get could not reach"):
            await store.get("k")

    async def test_passed_client_is_left_open(self, moto_s3: Any) -> None:
        """aclose does not close a client the caller passed in."""
        async with S3Storage(S3_BUCKET, client=moto_s3) as store:
            await store.set("k", b"v")
        assert moto_s3.get_object(Bucket=S3_BUCKET, Key="k")["Body"].read() == b"v"

    def test_missing_boto3_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without boto3 and without a client, the ImportError says what to install."""
        monkeypatch.setitem(sys.modules, "boto3", None)
        with pytest.raises(
            ImportError,
            match=r"^S3Storage needs boto3, which is not installed: "
            r"pip install 'stackquery\[s3\]'$",
        ):
            S3Storage("bucket")

    @pytest.mark.parametrize(
        ("bucket", "error", "message"),
        [
            ("", ValueError, r"^bucket must not be empty$"),
            (3, TypeError, r"^bucket must be str, not int$"),
        ],
    )
    def test_bad_bucket(self, bucket: object, error: type[Exception], message: str) -> None:
        """The bucket must be a non-empty str."""
        with pytest.raises(error, match=message):
            S3Storage(bucket, client=object())  # type: ignore[arg-type]


class ReplacingBucket(FakeBucket):
    """A bucket where another writer replaces an object right after its metadata is read."""

    def get_blob(self, name: str) -> Any:
        blob = super().get_blob(name)
        if blob is not None:
            self.put(name, b"replacement", None)
        return blob


class TestGCS:
    async def test_object_name_and_expiry_metadata(self) -> None:
        """An entry is the blob prefix+key, its expiry wall time in metadata."""
        client = FakeGCSClient()
        store = GCSStorage("bucket", prefix="app/", client=client, clock=ManualClock(now=1000.0))
        await store.set("user:1", b"v", ttl=60)
        await store.set("forever", b"w")
        objects = client.bucket("bucket").objects
        assert sorted(objects) == ["app/forever", "app/user:1"]
        assert objects["app/user:1"].metadata == {EXPIRY_METADATA_KEY: "1060.0"}
        assert objects["app/forever"].metadata is None

    async def test_object_replaced_during_read_is_a_miss(self) -> None:
        """Data from another generation than the metadata read is never returned."""
        client = FakeGCSClient()
        client.buckets["bucket"] = ReplacingBucket("bucket")
        store = GCSStorage("bucket", client=client)
        await store.set("k", b"original", ttl=60)
        assert await store.get("k") is None

    async def test_delete_of_absent_object(self) -> None:
        """Deleting an absent blob is not an error (the 404 is swallowed)."""
        store = GCSStorage("bucket", client=FakeGCSClient())
        await store.delete("never")
        assert await store.get("never") is None

    async def test_other_errors_are_storage_errors(self) -> None:
        """A GCS error other than 404/412 is a StorageError with the cause chained."""

        class Forbidden(Exception):
            code = 403

        class ForbiddenBucket(FakeBucket):
            def get_blob(self, name: str) -> Any:
                raise Forbidden("no access")

        client = FakeGCSClient()
        client.buckets["bucket"] = ForbiddenBucket("bucket")
        store = GCSStorage("bucket", client=client)
        with pytest.raises(StorageError, match=r"^GCSStorage\.get failed: Forbidden") as caught:
            await store.get("k")
        assert isinstance(caught.value.__cause__, Forbidden)

    async def test_own_client_is_closed_passed_client_is_not(self) -> None:
        """aclose leaves a client passed in open."""
        client = FakeGCSClient()
        async with GCSStorage("bucket", client=client):
            pass
        assert client.closed is False

    def test_missing_library_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without google-cloud-storage or a client, the ImportError says what to install."""
        monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
        with pytest.raises(
            ImportError,
            match=r"^GCSStorage needs google\.cloud\.storage, which is not installed: "
            r"pip install 'stackquery\[gcs\]'$",
        ):
            GCSStorage("bucket")
