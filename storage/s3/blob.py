"""Blob store on any S3-compatible service (AWS S3, MinIO, SeaweedFS) through aiobotocore.

One ``S3BlobStore`` serves one bucket over one pooled client: open it with ``async with`` (or
``await store.open()`` / ``await store.close()`` from the composition root). Every botocore failure leaves
as a typed ``storage.ports.BlobStoreError`` subclass (``storage/s3/errors.py``). Reads are bounded by
``max_read_bytes``: recordings are large, so a whole-object read of one bigger than that is refused with
a hint to read byte ranges instead of being buffered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from storage.ports import (
    BlobStoreError,
    LifecycleRule,
    MultipartUploadInfo,
    NoSuchUpload,
    ObjectInfo,
    UploadedPart,
    check_hot_key,
)
from storage.s3.errors import translate
from storage.s3.validation import (
    check_byte_range,
    check_lifecycle_rules,
    check_part_list,
    check_part_number,
    check_presign_expiry,
)

NO_LIFECYCLE_CODES = {"NoSuchLifecycleConfiguration", "NoSuchLifecycle"}


def _unquote(etag: str) -> str:
    return etag.strip('"')


class S3BlobStore:
    def __init__(
        self,
        *,
        endpoint_url: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        max_read_bytes: int = 64 * 1024 * 1024,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_pool_connections: int = 32,
    ) -> None:
        check_hot_key("bucket", bucket)
        self._bucket = bucket
        self._endpoint_url = endpoint_url
        self._region = region
        self._credentials = (access_key, secret_key)
        self._max_read_bytes = max_read_bytes
        self._config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=max_pool_connections,
        )
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    @property
    def bucket(self) -> str:
        return self._bucket

    async def open(self) -> S3BlobStore:
        if self._client is None:
            stack = contextlib.AsyncExitStack()
            self._client = await stack.enter_async_context(
                get_session().create_client(
                    "s3",
                    endpoint_url=self._endpoint_url,
                    region_name=self._region,
                    aws_access_key_id=self._credentials[0],
                    aws_secret_access_key=self._credentials[1],
                    config=self._config,
                )
            )
            self._exit_stack = stack
        return self

    async def close(self) -> None:
        if self._exit_stack is not None:
            await self._exit_stack.aclose()
        self._exit_stack = None
        self._client = None

    async def __aenter__(self) -> S3BlobStore:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _call(self, operation: str, key: str = "", **params: Any) -> Any:
        if self._client is None:
            raise BlobStoreError("blob store is not open: use 'async with' or await open()")
        try:
            return await getattr(self._client, operation)(**params)
        except Exception as error:  # every botocore/aiohttp failure leaves as a typed error
            raise translate(error, operation=operation, key=key) from error

    async def ensure_bucket(self) -> None:
        try:
            await self._call("head_bucket", Bucket=self._bucket)
            return
        except BlobStoreError as error:
            if error.code not in {"404", "NoSuchBucket", "NotFound"}:
                raise
        try:
            await self._call("create_bucket", Bucket=self._bucket)
        except BlobStoreError as error:
            if error.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise

    async def put_object(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        check_hot_key("object key", key)
        response = await self._call(
            "put_object",
            key,
            Bucket=self._bucket,
            Key=key,
            Body=bytes(data),
            ContentType=content_type,
            Metadata=dict(metadata or {}),
        )
        return _unquote(response["ETag"])

    async def head_object(self, key: str) -> ObjectInfo:
        check_hot_key("object key", key)
        response = await self._call("head_object", key, Bucket=self._bucket, Key=key)
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=_unquote(response["ETag"]),
            content_type=response.get("ContentType", ""),
            last_modified=response["LastModified"].timestamp(),
            metadata=dict(response.get("Metadata", {})),
        )

    async def get_object(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        check_hot_key("object key", key)
        check_byte_range(byte_range)
        if byte_range is not None and byte_range[1] - byte_range[0] + 1 > self._max_read_bytes:
            raise ValueError(f"byte range {byte_range} is larger than the read limit {self._max_read_bytes}")
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        if byte_range is not None:
            params["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        response = await self._call("get_object", key, **params)
        async with response["Body"] as body:
            if int(response.get("ContentLength", 0)) > self._max_read_bytes:
                raise BlobStoreError(
                    f"get_object {key}: {response['ContentLength']} bytes exceed the read limit "
                    f"{self._max_read_bytes}; read it in byte ranges",
                    code="TooLarge",
                    key=key,
                )
            try:
                data: bytes = await body.read()
            except Exception as error:
                raise translate(error, operation="get_object", key=key) from error
        return data

    async def delete_object(self, key: str) -> None:
        check_hot_key("object key", key)
        await self._call("delete_object", key, Bucket=self._bucket, Key=key)

    async def create_multipart_upload(
        self,
        key: str,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        check_hot_key("object key", key)
        response = await self._call(
            "create_multipart_upload",
            key,
            Bucket=self._bucket,
            Key=key,
            ContentType=content_type,
            Metadata=dict(metadata or {}),
        )
        upload_id: str = response["UploadId"]
        return upload_id

    async def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> UploadedPart:
        check_hot_key("object key", key)
        check_hot_key("upload id", upload_id)
        check_part_number(part_number)
        response = await self._call(
            "upload_part",
            key,
            Bucket=self._bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=part_number,
            Body=bytes(data),
        )
        return UploadedPart(part_number, _unquote(response["ETag"]))

    async def complete_multipart_upload(self, key: str, upload_id: str, parts: Sequence[UploadedPart]) -> str:
        check_hot_key("object key", key)
        check_hot_key("upload id", upload_id)
        check_part_list(parts)
        response = await self._call(
            "complete_multipart_upload",
            key,
            Bucket=self._bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": p.part_number, "ETag": f'"{p.etag}"'} for p in parts]},
        )
        return _unquote(response.get("ETag", ""))

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        check_hot_key("object key", key)
        check_hot_key("upload id", upload_id)
        try:
            await self._call("abort_multipart_upload", key, Bucket=self._bucket, Key=key, UploadId=upload_id)
        except NoSuchUpload:
            # Aborting is idempotent (AWS says NoSuchUpload the second time, SeaweedFS says nothing).
            return

    async def list_multipart_uploads(self, prefix: str = "") -> list[MultipartUploadInfo]:
        uploads: list[MultipartUploadInfo] = []
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        while True:
            response = await self._call("list_multipart_uploads", prefix, **params)
            for upload in response.get("Uploads", []):
                initiated = upload.get("Initiated")
                uploads.append(
                    MultipartUploadInfo(
                        upload["Key"], upload["UploadId"], initiated.timestamp() if initiated else None
                    )
                )
            if not response.get("IsTruncated"):
                return uploads
            params["KeyMarker"] = response.get("NextKeyMarker", "")
            params["UploadIdMarker"] = response.get("NextUploadIdMarker", "")

    async def presign_get(self, key: str, expires_in_seconds: int) -> str:
        check_hot_key("object key", key)
        check_presign_expiry(expires_in_seconds)
        url: str = await self._call(
            "generate_presigned_url",
            key,
            ClientMethod="get_object",
            Params={"Bucket": self._bucket, "Key": key},
            ExpiresIn=expires_in_seconds,
        )
        return url

    async def put_lifecycle_rules(self, rules: Sequence[LifecycleRule]) -> None:
        check_lifecycle_rules(rules)
        if not rules:
            await self._call("delete_bucket_lifecycle", Bucket=self._bucket)
            return
        await self._call(
            "put_bucket_lifecycle_configuration",
            Bucket=self._bucket,
            LifecycleConfiguration={"Rules": [_rule_to_s3(rule) for rule in rules]},
        )

    async def get_lifecycle_rules(self) -> list[LifecycleRule]:
        try:
            response = await self._call("get_bucket_lifecycle_configuration", Bucket=self._bucket)
        except BlobStoreError as error:
            if error.code in NO_LIFECYCLE_CODES:
                return []
            raise
        return [_rule_from_s3(rule) for rule in response.get("Rules", [])]


def _rule_to_s3(rule: LifecycleRule) -> dict[str, Any]:
    s3_rule: dict[str, Any] = {
        "ID": rule.rule_id,
        "Filter": {"Prefix": rule.prefix},
        "Status": "Enabled" if rule.enabled else "Disabled",
    }
    if rule.abort_incomplete_multipart_days is not None:
        s3_rule["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": rule.abort_incomplete_multipart_days
        }
    if rule.expiration_days is not None:
        s3_rule["Expiration"] = {"Days": rule.expiration_days}
    return s3_rule


def _rule_from_s3(s3_rule: Mapping[str, Any]) -> LifecycleRule:
    prefix = s3_rule.get("Filter", {}).get("Prefix", s3_rule.get("Prefix", ""))
    abort = s3_rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation")
    expiration = s3_rule.get("Expiration", {}).get("Days")
    return LifecycleRule(
        rule_id=s3_rule.get("ID", ""),
        prefix=prefix or "",
        abort_incomplete_multipart_days=int(abort) if abort is not None else None,
        expiration_days=int(expiration) if expiration is not None else None,
        enabled=s3_rule.get("Status", "Enabled") == "Enabled",
    )
