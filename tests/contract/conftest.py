"""Shared fixtures for contract tests: one suite runs against an in-memory fake and the real adapter.

- ``hot_backend`` is parametrised over ``memory`` and ``redis``. It carries the clock the adapter must use
  and ``advance(seconds)``, which moves a ``ManualClock`` for the fake and really waits for Redis (whose
  TTLs run on its own clock) - tests keep those waits well under a few seconds.
- Redis tests run in db 15 (``UC_EDGE_TEST_REDIS_URL`` overrides) under a unique key prefix per test,
  and every key under that prefix is deleted afterwards.
- S3 tests run in a bucket created for the run (``s3_test_bucket``) and deleted with its content after it.
- A real service that does not answer skips its tests with the reason, unless
  ``UC_EDGE_REQUIRE_SERVICES=1`` (CI on the local stack), where it fails them.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from storage.memory.hot import ManualClock
from storage.redis.client import connect
from storage.s3.blob import S3BlobStore

REDIS_TEST_URL = os.environ.get("UC_EDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def service_missing(what: str, error: BaseException) -> None:
    """Skip (or, when services are required, fail) a test whose real service does not answer."""
    message = f"{what} is not reachable ({type(error).__name__}: {error}); start it: bash scripts/services up"
    if os.environ.get("UC_EDGE_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class HotBackend:
    """What a hot-path contract test needs to build the adapter under test and to move time."""

    kind: str  # "memory" or "redis"
    clock: Callable[[], float]
    redis: Redis | None
    prefix: str

    async def advance(self, seconds: float) -> None:
        if isinstance(self.clock, ManualClock):
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    def require_redis(self) -> Redis:
        assert self.redis is not None, "this check only applies to the Redis adapter"
        return self.redis


async def open_redis() -> Redis:
    """A client to the test Redis, or a skip/fail with the reason when it does not answer."""
    client = connect(REDIS_TEST_URL)
    try:
        await client.ping()
    except Exception as error:  # any connection failure means the service is absent
        await client.aclose()
        service_missing(f"Redis at {REDIS_TEST_URL}", error)
    return client


async def delete_prefixed(client: Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
    if keys:
        await client.delete(*keys)


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = await open_redis()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def hot_backend(request: pytest.FixtureRequest) -> AsyncIterator[HotBackend]:
    prefix = f"uc-test-{uuid.uuid4().hex[:12]}:"
    if request.param == "memory":
        yield HotBackend("memory", ManualClock(start=time.time()), None, prefix)
        return
    client = await open_redis()
    try:
        yield HotBackend("redis", time.time, client, prefix)
    finally:
        await delete_prefixed(client, prefix)
        await client.aclose()


# ---- S3 (SeaweedFS locally) ----

S3_TEST_ENDPOINT = os.environ.get("UC_EDGE_TEST_S3_URL", "http://127.0.0.1:8333")
S3_TEST_ACCESS_KEY = os.environ.get("UC_EDGE_TEST_S3_ACCESS_KEY", "devkey")
S3_TEST_SECRET_KEY = os.environ.get("UC_EDGE_TEST_S3_SECRET_KEY", "devsecret")


def s3_store(bucket: str, **overrides: object) -> S3BlobStore:
    settings: dict[str, object] = {
        "endpoint_url": S3_TEST_ENDPOINT,
        "bucket": bucket,
        "access_key": S3_TEST_ACCESS_KEY,
        "secret_key": S3_TEST_SECRET_KEY,
    }
    settings.update(overrides)
    return S3BlobStore(**settings)  # type: ignore[arg-type]


async def empty_and_delete_bucket(store: S3BlobStore) -> None:
    """Leave nothing behind: abort uploads, delete objects, delete the bucket."""
    for upload in await store.list_multipart_uploads():
        await store.abort_multipart_upload(upload.key, upload.upload_id)
    client = store._client
    paginator = client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=store.bucket):
        for item in page.get("Contents", []):
            await store.delete_object(item["Key"])
    await client.delete_bucket(Bucket=store.bucket)


@pytest.fixture(scope="session")
async def s3_test_bucket() -> AsyncIterator[str]:
    """A bucket of its own for this test run (lifecycle rules are bucket-wide), removed at the end."""
    bucket = f"uc-test-{uuid.uuid4().hex[:12]}"
    store = s3_store(bucket, connect_timeout=2.0)
    await store.open()
    try:
        await store.ensure_bucket()
    except Exception as error:  # unreachable or refused: the service is not usable
        await store.close()
        service_missing(f"S3 at {S3_TEST_ENDPOINT}", error)
    try:
        yield bucket
    finally:
        await empty_and_delete_bucket(store)
        await store.close()
