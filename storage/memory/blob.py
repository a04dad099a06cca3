"""In-memory fake of the blob store, with the S3 rules the edge relies on.

It keeps S3's multipart semantics (5 MiB minimum for every part but the last, checked at completion;
ETag checks; ``NoSuchUpload`` after abort or completion; the multipart ETag ``md5(md5s)-N``), answers
``NotFound`` until ``ensure_bucket`` ran, and bounds what it holds by ``max_total_bytes``. What it cannot
do is check signatures: ``presign_get`` returns a ``memory://`` URL that only records its expiry, so
access-control behaviour is tested against the real adapter.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from storage.ports import (
    MIN_MULTIPART_PART_SIZE,
    BlobStoreError,
    EntityTooSmall,
    InvalidPart,
    LifecycleRule,
    MultipartUploadInfo,
    NoSuchUpload,
    NotFound,
    ObjectInfo,
    UploadedPart,
    check_hot_key,
)
from storage.s3.validation import (
    check_byte_range,
    check_lifecycle_rules,
    check_part_list,
    check_part_number,
    check_presign_expiry,
)


@dataclass(slots=True)
class _StoredObject:
    data: bytes
    etag: str
    content_type: str
    last_modified: float
    metadata: dict[str, str]


@dataclass(slots=True)
class _Upload:
    key: str
    content_type: str
    metadata: dict[str, str]
    initiated: float
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)


class MemoryBlobStore:
    def __init__(
        self,
        bucket: str = "recordings",
        *,
        clock: Callable[[], float] = time.time,
        max_total_bytes: int = 512 * 1024 * 1024,
        max_read_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._bucket = check_hot_key("bucket", bucket)
        self._clock = clock
        self._max_total_bytes = max_total_bytes
        self._max_read_bytes = max_read_bytes
        self._exists = False
        self._objects: dict[str, _StoredObject] = {}
        self._uploads: dict[str, _Upload] = {}
        self._lifecycle: list[LifecycleRule] = []

    @property
    def bucket(self) -> str:
        return self._bucket

    def _require_bucket(self) -> None:
        if not self._exists:
            raise NotFound(f"bucket {self._bucket} does not exist", code="NoSuchBucket")

    def _bytes_held(self) -> int:
        held = sum(len(o.data) for o in self._objects.values())
        return held + sum(len(d) for u in self._uploads.values() for d, _ in u.parts.values())

    def _make_room(self, incoming: int, replacing: int = 0) -> None:
        if self._bytes_held() - replacing + incoming > self._max_total_bytes:
            raise BlobStoreError(f"memory blob store is full ({self._max_total_bytes} bytes)", code="Full")

    async def ensure_bucket(self) -> None:
        self._exists = True

    async def put_object(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        check_hot_key("object key", key)
        self._require_bucket()
        previous = self._objects.get(key)
        self._make_room(len(data), len(previous.data) if previous else 0)
        etag = hashlib.md5(data).hexdigest()
        self._objects[key] = _StoredObject(
            bytes(data), etag, content_type, self._clock(), dict(metadata or {})
        )
        return etag

    def _object(self, key: str) -> _StoredObject:
        check_hot_key("object key", key)
        self._require_bucket()
        stored = self._objects.get(key)
        if stored is None:
            raise NotFound(f"no object {key} in {self._bucket}", code="NoSuchKey", key=key)
        return stored

    async def head_object(self, key: str) -> ObjectInfo:
        stored = self._object(key)
        return ObjectInfo(
            key,
            len(stored.data),
            stored.etag,
            stored.content_type,
            stored.last_modified,
            dict(stored.metadata),
        )

    async def get_object(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        check_byte_range(byte_range)
        data = self._object(key).data
        if byte_range is not None:
            if byte_range[0] >= len(data):
                raise BlobStoreError(f"range {byte_range} is beyond {key}", code="InvalidRange", key=key)
            data = data[byte_range[0] : byte_range[1] + 1]
        if len(data) > self._max_read_bytes:
            raise BlobStoreError(f"{key} exceeds the read limit; read it in byte ranges", code="TooLarge")
        return data

    async def delete_object(self, key: str) -> None:
        check_hot_key("object key", key)
        self._require_bucket()
        self._objects.pop(key, None)

    async def create_multipart_upload(
        self,
        key: str,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        check_hot_key("object key", key)
        self._require_bucket()
        upload_id = uuid.uuid4().hex
        self._uploads[upload_id] = _Upload(key, content_type, dict(metadata or {}), self._clock())
        return upload_id

    def _upload(self, key: str, upload_id: str) -> _Upload:
        check_hot_key("object key", key)
        check_hot_key("upload id", upload_id)
        self._require_bucket()
        upload = self._uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise NoSuchUpload(f"no multipart upload {upload_id} for {key}", code="NoSuchUpload", key=key)
        return upload

    async def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> UploadedPart:
        check_part_number(part_number)
        upload = self._upload(key, upload_id)
        previous = upload.parts.get(part_number)
        self._make_room(len(data), len(previous[0]) if previous else 0)
        etag = hashlib.md5(data).hexdigest()
        upload.parts[part_number] = (bytes(data), etag)
        return UploadedPart(part_number, etag)

    async def complete_multipart_upload(self, key: str, upload_id: str, parts: Sequence[UploadedPart]) -> str:
        check_part_list(parts)
        upload = self._upload(key, upload_id)
        chunks: list[bytes] = []
        digests = b""
        for index, part in enumerate(parts):
            stored = upload.parts.get(part.part_number)
            if stored is None or stored[1] != part.etag:
                raise InvalidPart(
                    f"part {part.part_number} was not uploaded with that ETag", code="InvalidPart"
                )
            if index < len(parts) - 1 and len(stored[0]) < MIN_MULTIPART_PART_SIZE:
                raise EntityTooSmall(
                    f"part {part.part_number} is {len(stored[0])} bytes, non-final parts need "
                    f"{MIN_MULTIPART_PART_SIZE}",
                    code="EntityTooSmall",
                    key=key,
                )
            chunks.append(stored[0])
            digests += bytes.fromhex(stored[1])
        etag = f"{hashlib.md5(digests).hexdigest()}-{len(parts)}"
        del self._uploads[upload_id]
        self._objects[key] = _StoredObject(
            b"".join(chunks), etag, upload.content_type, self._clock(), upload.metadata
        )
        return etag

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        check_hot_key("object key", key)
        check_hot_key("upload id", upload_id)
        self._require_bucket()
        upload = self._uploads.get(upload_id)
        if upload is not None and upload.key == key:
            del self._uploads[upload_id]

    async def list_multipart_uploads(self, prefix: str = "") -> list[MultipartUploadInfo]:
        self._require_bucket()
        return sorted(
            (
                MultipartUploadInfo(u.key, upload_id, u.initiated)
                for upload_id, u in self._uploads.items()
                if u.key.startswith(prefix)
            ),
            key=lambda info: (info.key, info.initiated or 0.0),
        )

    async def presign_get(self, key: str, expires_in_seconds: int) -> str:
        check_hot_key("object key", key)
        check_presign_expiry(expires_in_seconds)
        self._require_bucket()
        expires_at = int(self._clock()) + expires_in_seconds
        return f"memory://{self._bucket}/{quote(key)}?expires_at={expires_at}"

    async def put_lifecycle_rules(self, rules: Sequence[LifecycleRule]) -> None:
        check_lifecycle_rules(rules)
        self._require_bucket()
        self._lifecycle = list(rules)

    async def get_lifecycle_rules(self) -> list[LifecycleRule]:
        self._require_bucket()
        return list(self._lifecycle)
