"""BlobStore contract: the in-memory fake and the S3 adapter (SeaweedFS locally) behave the same.

Pre-signed URL checks (expiry, tampering) and credential errors need a store that checks signatures, so
they run against the real adapter only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest

from storage.memory.blob import MemoryBlobStore
from storage.memory.hot import ManualClock
from storage.ports import (
    MIN_MULTIPART_PART_SIZE,
    AccessDenied,
    BlobStore,
    EntityTooSmall,
    InvalidPart,
    LifecycleRule,
    NoSuchUpload,
    NotFound,
    Unavailable,
    UploadedPart,
)
from storage.s3.blob import S3BlobStore
from tests.contract.conftest import empty_and_delete_bucket, s3_store

MIB = 1024 * 1024


@dataclass
class BlobBackend:
    kind: str  # "memory" or "s3"
    store: BlobStore
    prefix: str  # unique per test: tests share the run's bucket


@pytest.fixture(params=["memory", "s3"])
def blob_target(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(kind, bucket). Sync on purpose: it pulls the session bucket fixture only for the S3 case."""
    if request.param == "memory":
        return "memory", "recordings"
    return "s3", request.getfixturevalue("s3_test_bucket")


@pytest.fixture
async def blob(blob_target: tuple[str, str]) -> AsyncIterator[BlobBackend]:
    kind, bucket = blob_target
    prefix = f"recordings/calls/test-{uuid.uuid4().hex[:12]}/"
    if kind == "memory":
        memory = MemoryBlobStore(bucket, clock=ManualClock())
        await memory.ensure_bucket()
        yield BlobBackend("memory", memory, prefix)
        return
    async with s3_store(bucket) as store:
        yield BlobBackend("s3", store, prefix)


def recording_chunks(total: int, seed: int = 7) -> Iterator[bytes]:
    """Deterministic pseudo-media in 64 KiB chunks, as a recorder would produce it."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    sent = 0
    while sent < total:
        chunk = block[: min(len(block), total - sent)]
        sent += len(chunk)
        yield chunk


async def stream_multipart(store: BlobStore, key: str, total: int, part_size: int) -> tuple[str, bytes]:
    """Upload ``total`` bytes as the recorder does: buffer to ``part_size``, send a part, go on."""
    upload_id = await store.create_multipart_upload(
        key, content_type="audio/ogg", metadata={"call-id": "c-1"}
    )
    parts: list[UploadedPart] = []
    buffer = bytearray()
    everything = bytearray()
    for chunk in recording_chunks(total):
        buffer += chunk
        everything += chunk
        if len(buffer) >= part_size:
            parts.append(await store.upload_part(key, upload_id, len(parts) + 1, bytes(buffer[:part_size])))
            del buffer[:part_size]
    if buffer:
        parts.append(await store.upload_part(key, upload_id, len(parts) + 1, bytes(buffer)))
    return await store.complete_multipart_upload(key, upload_id, parts), bytes(everything)


async def test_put_head_get_delete(blob: BlobBackend) -> None:
    store, key = blob.store, blob.prefix + "notes.json"
    etag = await store.put_object(key, b'{"ok": true}', content_type="application/json", metadata={"a": "1"})

    info = await store.head_object(key)
    assert (info.key, info.size, info.etag) == (key, 12, etag)
    assert info.etag == hashlib.md5(b'{"ok": true}').hexdigest()
    assert info.content_type == "application/json" and info.metadata == {"a": "1"}
    assert info.last_modified > 0
    assert await store.get_object(key) == b'{"ok": true}'
    assert await store.get_object(key, (1, 4)) == b'"ok"'

    await store.delete_object(key)
    with pytest.raises(NotFound):
        await store.head_object(key)
    with pytest.raises(NotFound):
        await store.get_object(key)
    await store.delete_object(key)  # deleting what is gone is not an error (S3 semantics)


async def test_streaming_multipart_with_5_mib_parts(blob: BlobBackend) -> None:
    store, key = blob.store, blob.prefix + "audio.opus"
    total = 2 * MIN_MULTIPART_PART_SIZE + MIB + 123  # two full parts and a short final one

    etag, sent = await stream_multipart(store, key, total, MIN_MULTIPART_PART_SIZE)

    assert etag.endswith("-3")
    info = await store.head_object(key)
    assert info.size == total and info.content_type == "audio/ogg" and info.metadata == {"call-id": "c-1"}
    boundary = MIN_MULTIPART_PART_SIZE
    assert await store.get_object(key, (boundary - 10, boundary + 9)) == sent[boundary - 10 : boundary + 10]
    assert hashlib.sha256(await store.get_object(key)).digest() == hashlib.sha256(sent).digest()
    assert await store.list_multipart_uploads(blob.prefix) == []


async def test_a_short_non_final_part_is_entity_too_small(blob: BlobBackend) -> None:
    store, key = blob.store, blob.prefix + "audio.opus"
    upload_id = await store.create_multipart_upload(key)
    parts = [await store.upload_part(key, upload_id, n, b"x" * 1024) for n in (1, 2)]

    with pytest.raises(EntityTooSmall) as raised:
        await store.complete_multipart_upload(key, upload_id, parts)

    assert raised.value.code == "EntityTooSmall"
    # The upload survives a failed completion; it must be aborted (or lifecycle-expired).
    assert [u.upload_id for u in await store.list_multipart_uploads(blob.prefix)] == [upload_id]
    await store.abort_multipart_upload(key, upload_id)


async def test_after_abort_the_upload_is_gone(blob: BlobBackend) -> None:
    store, key = blob.store, blob.prefix + "video.webm"
    upload_id = await store.create_multipart_upload(key)
    part = await store.upload_part(key, upload_id, 1, b"frame")

    await store.abort_multipart_upload(key, upload_id)

    with pytest.raises(NoSuchUpload):
        await store.upload_part(key, upload_id, 2, b"frame")
    with pytest.raises(NoSuchUpload):
        await store.complete_multipart_upload(key, upload_id, [part])
    await store.abort_multipart_upload(key, upload_id)  # idempotent
    assert await store.list_multipart_uploads(blob.prefix) == []
    with pytest.raises(NotFound):
        await store.head_object(key)


async def test_completing_with_a_wrong_part_is_invalid_part(blob: BlobBackend) -> None:
    store, key = blob.store, blob.prefix + "audio.opus"
    upload_id = await store.create_multipart_upload(key)
    part = await store.upload_part(key, upload_id, 1, b"abc")
    try:
        with pytest.raises(InvalidPart):
            await store.complete_multipart_upload(key, upload_id, [UploadedPart(1, "0" * 32)])
        with pytest.raises(InvalidPart, match="ascending"):
            await store.complete_multipart_upload(key, upload_id, [part, part])
        with pytest.raises(InvalidPart, match="at least one"):
            await store.complete_multipart_upload(key, upload_id, [])
    finally:
        await store.abort_multipart_upload(key, upload_id)


async def test_list_uploads_by_prefix(blob: BlobBackend) -> None:
    store = blob.store
    first = await store.create_multipart_upload(blob.prefix + "a/audio.opus")
    second = await store.create_multipart_upload(blob.prefix + "a/video.webm")
    other = await store.create_multipart_upload(blob.prefix + "b/audio.opus")
    try:
        listed = await store.list_multipart_uploads(blob.prefix + "a/")
        assert sorted((u.key, u.upload_id) for u in listed) == sorted(
            [(blob.prefix + "a/audio.opus", first), (blob.prefix + "a/video.webm", second)]
        )
        assert all(u.initiated is not None and u.initiated > 0 for u in listed)
        assert {u.upload_id for u in await store.list_multipart_uploads(blob.prefix)} == {
            first,
            second,
            other,
        }
    finally:
        for key, upload_id in [("a/audio.opus", first), ("a/video.webm", second), ("b/audio.opus", other)]:
            await store.abort_multipart_upload(blob.prefix + key, upload_id)


async def test_lifecycle_rules_round_trip(blob: BlobBackend) -> None:
    store = blob.store
    rules = [
        LifecycleRule("abort-stale-recording-uploads", "recordings/", abort_incomplete_multipart_days=2),
        LifecycleRule("expire-transcripts", "transcripts/", expiration_days=30),
    ]
    await store.put_lifecycle_rules(rules)
    assert sorted(await store.get_lifecycle_rules(), key=lambda r: r.rule_id) == rules

    replacement = [LifecycleRule("abort-stale-uploads", "", abort_incomplete_multipart_days=7)]
    await store.put_lifecycle_rules(replacement)
    assert await store.get_lifecycle_rules() == replacement

    with pytest.raises(ValueError, match="no action"):
        await store.put_lifecycle_rules([LifecycleRule("nothing")])
    with pytest.raises(ValueError, match="days must be"):
        await store.put_lifecycle_rules([LifecycleRule("zero", abort_incomplete_multipart_days=0)])
    assert await store.get_lifecycle_rules() == replacement


async def test_bad_arguments_are_refused(blob: BlobBackend) -> None:
    store, key = blob.store, blob.prefix + "x"
    with pytest.raises(ValueError, match="object key"):
        await store.put_object("", b"")
    with pytest.raises(ValueError, match="part number"):
        await store.upload_part(key, "some-upload", 0, b"")
    with pytest.raises(ValueError, match="part number"):
        await store.upload_part(key, "some-upload", 10001, b"")
    with pytest.raises(ValueError, match="expiry"):
        await store.presign_get(key, 0)
    with pytest.raises(ValueError, match="expiry"):
        await store.presign_get(key, 8 * 24 * 3600)
    with pytest.raises(ValueError, match="byte range"):
        await store.get_object(key, (5, 1))


async def test_a_missing_bucket_is_not_found_until_ensured(blob: BlobBackend) -> None:
    """Reads from a bucket that does not exist fail with NotFound; ``ensure_bucket`` is idempotent.

    Only reads are part of the contract: SeaweedFS creates a bucket on the first PUT (AWS refuses it).
    """
    name = f"uc-test-{uuid.uuid4().hex[:12]}"
    fresh: BlobStore
    async with contextlib.AsyncExitStack() as stack:
        if blob.kind == "memory":
            fresh = MemoryBlobStore(name)
        else:
            fresh = await stack.enter_async_context(s3_store(name))
        with pytest.raises(NotFound):
            await fresh.head_object("k")
        with pytest.raises(NotFound):
            await fresh.get_object("k")
        await fresh.ensure_bucket()
        try:
            await fresh.ensure_bucket()
            await fresh.put_object("k", b"v")
            assert await fresh.get_object("k") == b"v"
        finally:
            if isinstance(fresh, S3BlobStore):
                await empty_and_delete_bucket(fresh)


# ---- real adapter only: signatures and credentials ----


def require_s3(blob: BlobBackend, reason: str) -> None:
    if blob.kind != "s3":
        pytest.skip(f"the in-memory fake cannot check this: {reason}")


def tamper_query(url: str, name: str, new_value: str) -> str:
    parts = urlsplit(url)
    query = [(k, new_value if k == name else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.read()


async def test_presigned_get_is_honoured_until_it_expires(blob: BlobBackend) -> None:
    require_s3(blob, "pre-signed URLs are signed by the store and verified by it")
    key = blob.prefix + "audio.opus"
    await blob.store.put_object(key, b"opus frames", content_type="audio/ogg")
    url = await blob.store.presign_get(key, expires_in_seconds=2)

    assert await fetch(url) == (200, b"opus frames")

    await asyncio.sleep(3.2)
    status, body = await fetch(url)
    assert status == 403, body
    assert b"AccessDenied" in body


async def test_tampered_presigned_urls_are_rejected(blob: BlobBackend) -> None:
    require_s3(blob, "pre-signed URLs are signed by the store and verified by it")
    key = blob.prefix + "audio.opus"
    await blob.store.put_object(key, b"secret", content_type="audio/ogg")
    await blob.store.put_object(blob.prefix + "other.opus", b"other", content_type="audio/ogg")
    url = await blob.store.presign_get(key, expires_in_seconds=300)
    signature = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]

    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    tampered = [
        tamper_query(url, "X-Amz-Signature", flipped),
        tamper_query(url, "X-Amz-Expires", "3600"),  # longer life without a new signature
        url.replace("/audio.opus?", "/other.opus?"),  # another object with the same signature
    ]
    for bad_url in tampered:
        status, body = await fetch(bad_url)
        assert status == 403, (bad_url, body)
    assert await fetch(url) == (200, b"secret")


async def test_wrong_credentials_are_access_denied(blob: BlobBackend) -> None:
    require_s3(blob, "the fake has no credentials")
    async with s3_store(blob.store.bucket, secret_key="not-the-secret") as impostor:
        with pytest.raises(AccessDenied):
            await impostor.put_object(blob.prefix + "x", b"x")


@pytest.mark.skipif(os.environ.get("UC_EDGE_SKIP_SLOW") == "1", reason="waits for connection refusal")
async def test_an_unreachable_store_is_unavailable(blob: BlobBackend) -> None:
    require_s3(blob, "the fake is always reachable")
    async with s3_store(
        "recordings", endpoint_url="http://127.0.0.1:9", connect_timeout=0.5, read_timeout=0.5
    ) as unreachable:
        with pytest.raises(Unavailable):
            await unreachable.head_object("anything")
